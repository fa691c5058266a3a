/// Reading `vocab.json` and `merges.txt` as bytes, without a Foundation object per entry or a
/// `String` per token (GPT-2's 50,257 tokens and 50,000 merges load in tens of milliseconds):
///
///     {"!": 0, "\"": 1, ..., "Ġthe": 262, ...}          ->  token text (UTF-8 bytes) -> id
///     #version: 0.2 / "Ġ t" / "Ġt he" / ...             ->  rank-ordered (left, right) pairs
enum VocabularyParsing {
    /// The entries of a flat JSON object of strings to non-negative integers, each key as the
    /// UTF-8 bytes of its (unescaped) text.
    static func parseVocabulary(_ bytes: UnsafeRawBufferPointer) throws -> [(text: [UInt8], id: Int)] {
        let reader = JSONReader(bytes)
        let entries = try parseVocabulary(reader)
        try reader.end()
        return entries
    }

    /// The vocabulary object at the reader's position (vocab.json's, or tokenizer.json's
    /// `model.vocab`).
    static func parseVocabulary(_ reader: JSONReader) throws -> [(text: [UInt8], id: Int)] {
        var entries: [(text: [UInt8], id: Int)] = []
        try reader.members { text in
            guard let id = reader.nonNegativeInteger() else {
                throw JSONReader.Failure(message: "the id of '\(String(decoding: text, as: UTF8.self))' is not a non-negative integer (byte offset \(reader.offset))")
            }
            entries.append((text, id))
        }
        return entries
    }

    /// A merge written as one line of text, `left right`, split at its single space.
    static func splitMerge<Line: Collection<UInt8>>(_ line: Line) -> (left: [UInt8], right: [UInt8])? {
        let fields = line.split(separator: 0x20, omittingEmptySubsequences: false)
        guard fields.count == 2, !fields[0].isEmpty, !fields[1].isEmpty else { return nil }
        return (Array(fields[0]), Array(fields[1]))
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
