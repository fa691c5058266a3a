import BPE
import Foundation

extension Tokenizer {
    /// A tokenizer from any path the commands take: what `Tokenizer.load(path:pattern:)` reads, or
    /// a `.gguf` model's own tokenizer.
    public static func load(modelOrTokenizer path: String, pattern: PreTokenizer? = nil) throws -> Tokenizer {
        if path.hasSuffix(".gguf") { return try fromGGUF(GGUFFile(url: URL(fileURLWithPath: path))) }
        return try load(path: path, pattern: pattern)
    }

    /// The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.model` = "gpt2": byte-level
    /// BPE): tokens, merges, token types (control and user-defined tokens are special), and the
    /// pre-tokenizer named by `tokenizer.ggml.pre`.
    public static func fromGGUF(_ file: GGUFFile) throws -> Tokenizer {
        let path = file.url.path
        let model = file.metadata["tokenizer.ggml.model"]?.string ?? "?"
        guard model == "gpt2" else {
            throw TokenizerError("\(path): tokenizer.ggml.model \"\(model)\" is not supported (gpt2: byte-level BPE)")
        }
        guard let tokens = file.metadata["tokenizer.ggml.tokens"]?.array?.compactMap(\.string), !tokens.isEmpty else {
            throw TokenizerError("\(path): tokenizer.ggml.tokens is missing")
        }
        let merges = (file.metadata["tokenizer.ggml.merges"]?.array ?? []).compactMap(\.string)
        let types = file.metadata["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        let pre = file.metadata["tokenizer.ggml.pre"]?.string ?? "default"
        let pattern: PreTokenizer
        switch pre {
        case "smollm": pattern = .smollm
        case "gpt-2", "gpt2", "default": pattern = .gpt2
        default:
            throw TokenizerError("\(path): pre-tokenizer \"\(pre)\" is not one SwiftGPT implements (gpt-2, smollm)")
        }
        var vocabulary: [String: Int] = [:]
        var specials: [String: Int] = [:]
        for (id, token) in tokens.enumerated() {
            // 3: control, 4: user-defined (llama.cpp's token types).
            if id < types.count && (types[id] == 3 || types[id] == 4) {
                specials[token] = id
            }
            if vocabulary[token] == nil { vocabulary[token] = id }
        }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(merges.count)
        for (index, merge) in merges.enumerated() {
            let parts = merge.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw TokenizerError("\(path): merge \(index) '\(merge)' is not 'left right'") }
            pairs.append((String(parts[0]), String(parts[1])))
        }
        return try build(vocabulary: vocabulary, merges: pairs, specialTokens: specials, pattern: pattern, source: path)
    }
}
