import BPE

extension Tokenizer {
    /// The `tokenizer.*` metadata that llama.cpp reads for a byte-level BPE, and that
    /// `Tokenizer.fromGGUF` turns back into a tokenizer giving the same ids:
    ///
    ///     tokenizer.ggml.model         "gpt2" (byte-level BPE)
    ///     tokenizer.ggml.pre           "gpt-2", or "smollm" (every digit a piece of its own)
    ///     tokenizer.ggml.tokens        [string] by id, in GPT-2's byte alphabet ("Ġthe");
    ///                                  special tokens as their text ("<|endoftext|>")
    ///     tokenizer.ggml.token_type    [i32] by id: 1 normal, 3 control (special), 5 unused
    ///     tokenizer.ggml.merges        [string] in rank order, "left right" ("Ġ t")
    ///     tokenizer.ggml.bos_token_id, eos_token_id, padding_token_id   u32, when given
    ///     tokenizer.ggml.add_bos_token bool, when given
    ///     tokenizer.chat_template      string (Jinja), when given
    ///
    /// Ids the vocabulary leaves unused are written as "[PAD<id>]" of type unused, as llama.cpp's
    /// converter does, so the token list stays indexed by id. A tokenizer loaded from a tiktoken
    /// rank file has its merges recovered (`mergeList()`).
    ///
    /// Throws for a pre-tokenizer with no name that both llama.cpp and `fromGGUF` agree on
    /// (cl100k and o200k: llama.cpp's "llama-bpe" and "gpt-4o" are near, not equal), and for
    /// special token ids outside the vocabulary.
    public func ggufMetadata(bosTokenID: Int? = nil, eosTokenID: Int? = nil, paddingTokenID: Int? = nil,
                             addBOSToken: Bool? = nil, chatTemplate: String? = nil) throws -> [(key: String, value: GGUFWriter.Value)] {
        let pre: String
        switch preTokenizer {
        case .gpt2: pre = "gpt-2"
        case .smollm: pre = "smollm"
        case .cl100k, .o200k:
            throw ModelError("tokenizer: the \(preTokenizer) pre-tokenizer has no tokenizer.ggml.pre name that SwiftGPT reads back (gpt-2, smollm)")
        }
        let size = vocabularySize
        // Two texts for one special id cannot both be written; keep the first in sort order.
        let specialById = Dictionary(specialTokens.map { ($0.value, $0.key) }, uniquingKeysWith: min)
        var tokens: [String] = []
        var types: [Int32] = []
        tokens.reserveCapacity(size)
        types.reserveCapacity(size)
        for id in 0..<size {
            if let special = specialById[id] {
                tokens.append(special)
                types.append(3)
            } else if let bytes = try? bytes(of: id), !bytes.isEmpty {
                tokens.append(ByteEncoder.encode(bytes))
                types.append(1)
            } else {
                tokens.append("[PAD\(id)]")
                types.append(5)
            }
        }
        let merges = try mergeList().map { "\(tokens[$0.left]) \(tokens[$0.right])" }

        var entries: [(key: String, value: GGUFWriter.Value)] = [
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.pre", .string(pre)),
            ("tokenizer.ggml.tokens", .stringArray(tokens)),
            ("tokenizer.ggml.token_type", .int32Array(types)),
            ("tokenizer.ggml.merges", .stringArray(merges)),
        ]
        for (key, id) in [("bos_token_id", bosTokenID), ("eos_token_id", eosTokenID), ("padding_token_id", paddingTokenID)] {
            guard let id else { continue }
            guard (0..<size).contains(id) else {
                throw ModelError("tokenizer: \(key) \(id) is outside the vocabulary (0..<\(size))")
            }
            entries.append(("tokenizer.ggml.\(key)", .uint32(UInt32(id))))
        }
        if let addBOSToken { entries.append(("tokenizer.ggml.add_bos_token", .bool(addBOSToken))) }
        if let chatTemplate { entries.append(("tokenizer.chat_template", .string(chatTemplate))) }
        return entries
    }
}
