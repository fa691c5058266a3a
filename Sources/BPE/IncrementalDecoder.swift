/// Turns a stream of token ids into text for streaming output, emitting text only once its
/// UTF-8 characters are complete: a token can end in the middle of a character (GPT-2 splits
/// most emoji and CJK characters across tokens), and printing its bytes then would show U+FFFD.
///
///     var decoder = IncrementalDecoder(tokenizer: gpt2)
///     try decoder.append(id of "\xF0\x9F")   // -> ""    (first half of 😀 held back)
///     try decoder.append(id of "\x98\x80")   // -> "😀"
///     decoder.finish()                      // -> ""    (anything left, invalid bytes as U+FFFD)
public struct IncrementalDecoder: Sendable {
    public let tokenizer: Tokenizer
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// Adds one token and returns the text that became complete (possibly empty).
    public mutating func append(_ id: Int) throws -> String {
        try tokenizer.appendBytes(of: id, to: &pending, position: nil)
        let complete = Self.completePrefixLength(pending)
        if complete == 0 { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// The text of bytes still held back (an unfinished character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// The length of the longest prefix that does not end inside a character that more bytes
    /// could still complete. Invalid bytes count as complete (they decode to U+FFFD).
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        // Only the last 3 bytes can belong to an unfinished character.
        var start = bytes.count
        var back = 0
        while start > 0 && back < 4 {
            start -= 1
            back += 1
            let byte = bytes[start]
            if byte & 0xC0 != 0x80 {
                // A lead byte: does its sequence run past the end?
                let needed = byte >= 0xF0 && byte <= 0xF4 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC2 && byte < 0xE0 ? 2 : 1
                return needed > bytes.count - start ? start : bytes.count
            }
        }
        return bytes.count
    }
}

/// The offset of the first byte that is not part of valid UTF-8, or nil when all of it is valid.
public func firstInvalidUTF8Offset<Bytes: Collection>(_ bytes: Bytes) -> Int? where Bytes.Element == UInt8 {
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    var offset = 0
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue(let scalar):
            offset += UTF8.width(scalar)
        case .emptyInput:
            return nil
        case .error:
            return offset
        }
    }
}
