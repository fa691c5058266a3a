import Foundation

/// Token ids as text, the way `gpt tokenizer` reads and writes them: decimal, separated by
/// single spaces, written through one byte buffer (a `String` per id costs more than encoding).
public enum TokenIDText {
    /// "15496 11 995" for [15496, 11, 995], with a final newline. Ids written in parts take
    /// `leadingSpace` on each part after the first and `newline` on the last.
    public static func format(_ ids: [Int], leadingSpace: Bool = false, newline: Bool = true) -> [UInt8] {
        // At most 20 digits and a sign or separator per id, written straight into the bytes,
        // two digits at a time from a table (a division by 10 per digit took 13 ns an id).
        [UInt8](unsafeUninitializedCapacity: ids.count * 21 + 1) { out, written in
            let start = out.baseAddress!
            var p = start
            ids.withUnsafeBufferPointer { ids in
                powersOfTen.withUnsafeBufferPointer { powers in
                    digitPairs.withUnsafeBufferPointer { pairs in
                        for (i, id) in ids.enumerated() {
                            if i > 0 || leadingSpace { p.pointee = 0x20; p += 1 }
                            if id < 0 { p.pointee = 0x2D; p += 1 }
                            var value = id.magnitude, count = 1
                            while count < 20 && value >= powers[count] { count += 1 }
                            p += count
                            var end = p
                            while value >= 10 {
                                let pair = Int(value % 100)
                                value /= 100
                                end -= 2
                                UnsafeMutableRawPointer(end).storeBytes(of: pairs[pair], as: UInt16.self)
                            }
                            if end > p - count { (end - 1).pointee = UInt8(truncatingIfNeeded: value) &+ 0x30 }
                        }
                    }
                }
            }
            if newline { p.pointee = 0x0A; p += 1 }
            written = p - start
        }
    }

    /// "00", "01", ..., "99", each as a UInt16 whose bytes in memory (little-endian) are the digits.
    private static let digitPairs: [UInt16] = (0..<100).map { (pair: Int) -> UInt16 in
        UInt16(0x30 + pair / 10) | UInt16(0x30 + pair % 10) << 8
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
