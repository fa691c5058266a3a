import Foundation

/// Token ids as text, the way `gpt tokenizer` reads and writes them: decimal, separated by
/// single spaces, written through one byte buffer (a `String` per id costs more than encoding).
public enum TokenIDText {
    /// "15496 11 995" for [15496, 11, 995], with a final newline.
    public static func format(_ ids: [Int]) -> [UInt8] {
        // At most 20 digits and a sign or separator per id, written straight into the bytes.
        [UInt8](unsafeUninitializedCapacity: ids.count * 21 + 1) { out, written in
            var n = 0
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
                for (i, id) in ids.enumerated() {
                    if i > 0 { out[n] = 0x20; n += 1 }
                    if id < 0 { out[n] = 0x2D; n += 1 }
                    var value = id.magnitude, count = 0
                    repeat {
                        digits[count] = UInt8(truncatingIfNeeded: value % 10) &+ 0x30
                        value /= 10
                        count += 1
                    } while value > 0
                    while count > 0 { count -= 1; out[n] = digits[count]; n += 1 }
                }
            }
            out[n] = 0x0A
            written = n + 1
        }
    }

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
