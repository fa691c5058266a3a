/// GPT-2's byte-to-unicode table: every byte gets a printable Unicode scalar, so a byte-level
/// vocabulary can be stored as JSON strings (`vocab.json`, `merges.txt`, `tokenizer.json`).
///
/// Bytes that are printable Latin-1 (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) map to themselves; the other
/// 68 take U+0100, U+0101, ... in byte order. So the space 0x20 becomes `Ġ` (U+0120) and the
/// newline 0x0A becomes `Ċ` (U+010A), as in `bytes_to_unicode()` of GPT-2's `encoder.py`.
public enum ByteEncoder {
    /// `scalars[byte]` is the Unicode scalar standing for that byte.
    public static let scalars: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte)
                || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The inverse table: scalar value to byte, for the 256 scalars of `scalars`.
    public static let bytesByScalar: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (byte, scalar) in scalars.enumerated() { map[scalar.value] = UInt8(byte) }
        return map
    }()

    /// The printable string standing for `bytes`: `[0x20, 0x68, 0x69]` -> `"Ġhi"`.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var text = String.UnicodeScalarView()
        for byte in bytes { text.append(scalars[Int(byte)]) }
        return String(text)
    }

    /// The bytes a printable string stands for, or nil when it holds a scalar outside the table.
    public static func decode(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            guard let byte = bytesByScalar[scalar.value] else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}
