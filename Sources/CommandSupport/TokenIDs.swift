import Foundation

/// Token ids as text, the way `gpt tokenizer` reads and writes them: decimal, separated by
/// single spaces, written through one byte buffer (a `String` per id costs more than encoding).
public enum TokenIDText {
    /// "15496 11 995" for [15496, 11, 995], with a final newline. Ids written in parts take
    /// `leadingSpace` on each part after the first and `newline` on the last.
    public static func format(_ ids: [Int], leadingSpace: Bool = false, newline: Bool = true) -> [UInt8] {
        // At most 20 digits and a sign or separator per id, written straight into the bytes,
        // two digits at a time from a table (one division by 10 per digit took 13 ns an id).
        [UInt8](unsafeUninitializedCapacity: ids.count * 21 + 1) { out, written in
            var n = 0
            let powersOfTen = Self.powersOfTen
            digitPairs.withUnsafeBufferPointer { pairs in
                for (i, id) in ids.enumerated() {
                    if i > 0 || leadingSpace { out[n] = 0x20; n += 1 }
                    if id < 0 { out[n] = 0x2D; n += 1 }
                    var value = id.magnitude, count = 1
                    while count < 20 && value >= powersOfTen[count] { count += 1 }
                    var end = n + count
                    n = end
                    while value >= 10 {
                        let pair = Int(value % 100) * 2
                        value /= 100
                        out[end - 1] = pairs[pair + 1]
                        out[end - 2] = pairs[pair]
                        end -= 2
                    }
                    if end > n - count { out[end - 1] = UInt8(truncatingIfNeeded: value) &+ 0x30 }
                }
            }
            if newline { out[n] = 0x0A; n += 1 }
            written = n
        }
    }

    /// "00", "01", ..., "99" as 200 bytes.
    private static let digitPairs: [UInt8] = (0..<100).flatMap { (pair: Int) -> [UInt8] in
        [UInt8(0x30 + pair / 10), UInt8(0x30 + pair % 10)]
    }
    /// 10^k for k in 0..<20 (index 0 unused).
    private static let powersOfTen: [UInt] = (0..<20).map { k in (0..<k).reduce(1) { value, _ in value * 10 } }

    /// The ids in whitespace-separated decimal text; an item that is not a non-negative integer
    /// is refused with its position and text.
    public static func parse(_ data: Data) throws -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(data.count / 5)
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var i = 0, item = 0
            while i < bytes.count {
                while i < bytes.count, isSpace(bytes[i]) { i += 1 }
                guard i < bytes.count else { break }
                let start = i
                var value = 0, valid = true
                while i < bytes.count, !isSpace(bytes[i]) {
                    let digit = Int(bytes[i]) - 0x30
                    if digit < 0 || digit > 9 || value > (Int.max - 9) / 10 { valid = false } else { value = value * 10 + digit }
                    i += 1
                }
                guard valid else {
                    let text = String(decoding: bytes[start..<min(i, start + 40)], as: UTF8.self)
                    throw TokenIDError(description: "'\(text)' (item \(item)) is not a token id")
                }
                ids.append(value)
                item += 1
            }
        }
        return ids
    }

    @inline(__always) private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (byte >= 0x09 && byte <= 0x0D) }
}

public struct TokenIDError: Error, CustomStringConvertible {
    public let description: String
}
