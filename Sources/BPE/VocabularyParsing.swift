/// Reading `vocab.json` and `merges.txt` as bytes, without a Foundation object per entry or a
/// `String` per token (GPT-2's 50,257 tokens and 50,000 merges load in tens of milliseconds):
///
///     {"!": 0, "\"": 1, ..., "Ġthe": 262, ...}          ->  token text (UTF-8 bytes) -> id
///     #version: 0.2 / "Ġ t" / "Ġt he" / ...             ->  rank-ordered (left, right) pairs
enum VocabularyParsing {
    struct Failure: Error {
        let message: String
    }

    /// The entries of a flat JSON object of strings to non-negative integers, each key as the
    /// UTF-8 bytes of its (unescaped) text.
    static func parseVocabulary(_ bytes: UnsafeRawBufferPointer) throws -> [(text: [UInt8], id: Int)] {
        var i = 0
        func fail(_ what: String) -> Failure { Failure(message: "\(what) at byte offset \(i)") }
        func skipSpace() { while i < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[i]) { i += 1 } }
        func expect(_ byte: UInt8) throws {
            skipSpace()
            guard i < bytes.count, bytes[i] == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))'") }
            i += 1
        }
        var entries: [(text: [UInt8], id: Int)] = []
        entries.reserveCapacity(bytes.count / 12)
        try expect(0x7B)  // {
        skipSpace()
        if i < bytes.count, bytes[i] == 0x7D { return entries }
        while true {
            try expect(0x22)  // "
            let text = try parseString(bytes, at: &i)
            try expect(0x3A)  // :
            skipSpace()
            var id = 0, digits = 0
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39, digits < 10 {
                id = id * 10 + Int(bytes[i] - 0x30)
                i += 1
                digits += 1
            }
            guard digits > 0, i == bytes.count || [0x20, 0x0A, 0x0D, 0x09, 0x2C, 0x7D].contains(bytes[i]) else {
                throw Failure(message: "the id of '\(String(decoding: text, as: UTF8.self))' is not a non-negative integer")
            }
            entries.append((text, id))
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end") }
            if bytes[i] == 0x2C { i += 1; continue }
            if bytes[i] == 0x7D { i += 1; break }
            throw fail("expected ',' or '}'")
        }
        skipSpace()
        guard i == bytes.count else { throw fail("text after the object") }
        return entries
    }

    /// The UTF-8 bytes of a JSON string whose opening quote is just before `i`; `i` ends past
    /// the closing quote.
    private static func parseString(_ bytes: UnsafeRawBufferPointer, at i: inout Int) throws -> [UInt8] {
        var out: [UInt8] = []
        while i < bytes.count {
            let byte = bytes[i]
            i += 1
            if byte == 0x22 { return out }
            guard byte == 0x5C else { out.append(byte); continue }
            guard i < bytes.count else { break }
            let escape = bytes[i]
            i += 1
            switch escape {
            case 0x22, 0x5C, 0x2F: out.append(escape)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x75:
                var scalar = try hex4(bytes, at: &i)
                if (0xD800..<0xDC00).contains(scalar), i + 6 <= bytes.count, bytes[i] == 0x5C, bytes[i + 1] == 0x75 {
                    i += 2
                    let low = try hex4(bytes, at: &i)
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let value = Unicode.Scalar(scalar) else { throw Failure(message: "invalid \\u escape before byte offset \(i)") }
                out += Array(String(Character(value)).utf8)
            default:
                throw Failure(message: "invalid escape '\\\(Character(Unicode.Scalar(escape)))' at byte offset \(i - 1)")
            }
        }
        throw Failure(message: "unterminated string at byte offset \(i)")
    }

    private static func hex4(_ bytes: UnsafeRawBufferPointer, at i: inout Int) throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw Failure(message: "truncated \\u escape at byte offset \(i)") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let digit: UInt8
            switch c {
            case 0x30...0x39: digit = c - 0x30
            case 0x41...0x46: digit = c - 0x41 + 10
            case 0x61...0x66: digit = c - 0x61 + 10
            default: throw Failure(message: "invalid \\u escape at byte offset \(i)")
            }
            value = value << 4 | UInt32(digit)
            i += 1
        }
        return value
    }

    /// The bytes a token's text stands for in GPT-2's byte alphabet (`ByteEncoder`), or nil.
    static func decodeByteLevel(_ text: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            let lead = text[i]
            let scalar: UInt32
            if lead < 0x80 {
                scalar = UInt32(lead)
                i += 1
            } else if lead & 0xE0 == 0xC0, i + 1 < text.count {
                scalar = UInt32(lead & 0x1F) << 6 | UInt32(text[i + 1] & 0x3F)
                i += 2
            } else {
                return nil  // the table's scalars all fit in two UTF-8 bytes
            }
            guard scalar < byteOfScalar.count, byteOfScalar[Int(scalar)] >= 0 else { return nil }
            out.append(UInt8(byteOfScalar[Int(scalar)]))
        }
        return out
    }

    /// `ByteEncoder.bytesByScalar` as an array over scalar values (-1: not in the table).
    private static let byteOfScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x200)
        for (byte, scalar) in ByteEncoder.scalars.enumerated() { table[Int(scalar.value)] = Int16(byte) }
        return table
    }()
}
