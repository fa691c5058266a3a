/// A JSON reader over bytes that builds only what its caller asks for: strings as UTF-8 bytes,
/// non-negative integers, booleans; everything else is skipped without being built. Tokenizer
/// files are large objects (GPT-2's tokenizer.json: 50,257 vocabulary entries and 50,000 merges)
/// of which a loader wants a few fields:
///
///     {"model": {"vocab": {"Ġthe": 262, ...}, "merges": ["Ġ t", ...]}, "decoder": {...}}
///       reader.members { key in key == "model" ? read the model : reader.skipValue() }
///
/// Every failure names its byte offset; deep nesting in a skipped value costs no stack.
final class JSONReader {
    struct Failure: Error {
        let message: String
    }

    private let bytes: UnsafeRawBufferPointer
    /// The offset of the next byte to read.
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func failure(_ what: String) -> Failure { Failure(message: "\(what) at byte offset \(offset)") }

    @inline(__always)
    private func skipSpace() {
        while offset < bytes.count {
            let byte = bytes[offset]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            offset += 1
        }
    }

    /// The next byte that is not whitespace, not consumed; nil at the end.
    func peek() -> UInt8? {
        skipSpace()
        return offset < bytes.count ? bytes[offset] : nil
    }

    func expect(_ byte: UInt8) throws {
        guard peek() == byte else {
            throw failure(offset < bytes.count ? "expected '\(Character(Unicode.Scalar(byte)))'" : "unexpected end")
        }
        offset += 1
    }

    /// Calls `body` with each key of an object; `body` must read or skip the key's value.
    func members(_ body: ([UInt8]) throws -> Void) throws {
        try expect(0x7B)  // {
        if peek() == 0x7D { offset += 1; return }
        while true {
            let key = try string()
            try expect(0x3A)  // :
            try body(key)
            switch peek() {
            case 0x2C: offset += 1
            case 0x7D: offset += 1; return
            case nil: throw failure("unexpected end")
            default: throw failure("expected ',' or '}'")
            }
        }
    }

    /// Calls `body` with the index of each element of an array; `body` must read or skip it.
    func elements(_ body: (Int) throws -> Void) throws {
        try expect(0x5B)  // [
        if peek() == 0x5D { offset += 1; return }
        var index = 0
        while true {
            try body(index)
            index += 1
            switch peek() {
            case 0x2C: offset += 1
            case 0x5D: offset += 1; return
            case nil: throw failure("unexpected end")
            default: throw failure("expected ',' or ']'")
            }
        }
    }

    /// Whether the next value is `null` (consumed if so).
    func null() -> Bool {
        guard peek() == 0x6E, matches("null") else { return false }
        offset += 4
        return true
    }

    func bool() throws -> Bool {
        if peek() == 0x74, matches("true") { offset += 4; return true }
        if peek() == 0x66, matches("false") { offset += 5; return false }
        throw failure("expected true or false")
    }

    /// A non-negative integer of at most 9 digits, or nil (nothing consumed) when the next value
    /// is anything else.
    func nonNegativeInteger() -> Int? {
        _ = peek()
        var end = offset, value = 0
        while end < bytes.count, bytes[end] >= 0x30, bytes[end] <= 0x39, end - offset < 10 {
            value = value * 10 + Int(bytes[end] - 0x30)
            end += 1
        }
        guard end > offset, end - offset < 10, end == bytes.count || Self.endsNumber(bytes[end]) else { return nil }
        offset = end
        return value
    }

    /// The UTF-8 bytes of a string (escapes resolved).
    func string() throws -> [UInt8] {
        try expect(0x22)  // "
        var out: [UInt8] = []
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            if byte == 0x22 { return out }
            guard byte == 0x5C else { out.append(byte); continue }
            guard offset < bytes.count else { break }
            let escape = bytes[offset]
            offset += 1
            switch escape {
            case 0x22, 0x5C, 0x2F: out.append(escape)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x75:
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar), offset + 6 <= bytes.count, bytes[offset] == 0x5C, bytes[offset + 1] == 0x75 {
                    offset += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw failure("invalid \\u surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let value = Unicode.Scalar(scalar) else { throw failure("invalid \\u escape") }
                out += Array(String(Character(value)).utf8)
            default:
                offset -= 1
                throw failure("invalid escape '\\\(Character(Unicode.Scalar(escape)))'")
            }
        }
        throw failure("unterminated string")
    }

    /// Skips one value of any kind without building it. Nesting is counted, not recursed into.
    func skipValue() throws {
        var depth = 0
        repeat {
            guard let byte = peek() else { throw failure("unexpected end") }
            switch byte {
            case 0x7B, 0x5B:  // { [
                depth += 1
                offset += 1
                continue
            case 0x7D, 0x5D:  // } ]
                guard depth > 0 else { throw failure("unexpected '\(Character(Unicode.Scalar(byte)))'") }
                depth -= 1
                offset += 1
            case 0x22:
                try skipString()
            case 0x74 where matches("true"): offset += 4
            case 0x66 where matches("false"): offset += 5
            case 0x6E where matches("null"): offset += 4
            default:
                // A number: its characters up to the next delimiter.
                let start = offset
                while offset < bytes.count, !Self.endsNumber(bytes[offset]) {
                    guard Self.isNumberCharacter(bytes[offset]) else { throw failure("expected a value") }
                    offset += 1
                }
                guard offset > start else { throw failure("expected a value") }
            }
            // Between values inside a container: a separator or the container's end.
            if depth > 0 {
                switch peek() {
                case 0x2C, 0x3A: offset += 1
                case 0x7D, 0x5D: break
                case nil: throw failure("unexpected end")
                default: throw failure("expected ',' or the end of an object or array")
                }
            }
        } while depth > 0
    }

    private func skipString() throws {
        offset += 1
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += byte == 0x5C ? 2 : 1
            if byte == 0x22 { return }
        }
        offset = bytes.count
        throw failure("unterminated string")
    }

    /// Fails unless only whitespace is left.
    func end() throws {
        guard peek() == nil else { throw failure("text after the JSON value") }
    }

    private func matches(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard offset + count <= bytes.count else { return false }
        for k in 0..<count where bytes[offset + k] != word.utf8Start[k] { return false }
        return offset + count == bytes.count || Self.endsNumber(bytes[offset + count])
    }

    private static func isNumberCharacter(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || byte == 0x2D || byte == 0x2B || byte == 0x2E || byte == 0x65 || byte == 0x45
    }

    @inline(__always)
    private static func endsNumber(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 || byte == 0x2C || byte == 0x7D || byte == 0x5D
    }

    private func hex4() throws -> UInt32 {
        guard offset + 4 <= bytes.count else { throw failure("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[offset]
            let digit: UInt8
            switch c {
            case 0x30...0x39: digit = c - 0x30
            case 0x41...0x46: digit = c - 0x41 + 10
            case 0x61...0x66: digit = c - 0x61 + 10
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            offset += 1
        }
        return value
    }
}
