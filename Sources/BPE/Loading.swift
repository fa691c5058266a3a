import Foundation

// Reading tokenizers in the ecosystem's formats: tiktoken rank files, Hugging Face
// vocab.json + merges.txt (OpenAI's encoder.json + vocab.bpe are the same two files) and
// Hugging Face tokenizer.json.

extension Tokenizer {
    /// Loads a tokenizer from a path: a directory holding `tokenizer.json`, or `vocab.json` +
    /// `merges.txt`, or `encoder.json` + `vocab.bpe`; a `tokenizer.json` file; or a `.tiktoken`
    /// rank file, whose pattern comes from `pattern` or else from its name (gpt2/r50k, cl100k,
    /// o200k).
    public static func load(path: String, pattern: PreTokenizer? = nil) throws -> Tokenizer {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TokenizerError("\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            let has = { (name: String) in FileManager.default.fileExists(atPath: url.appendingPathComponent(name).path) }
            if has("tokenizer.json") { return try loadTokenizerJSON(url.appendingPathComponent("tokenizer.json")) }
            if has("vocab.json") && has("merges.txt") {
                return try loadVocabAndMerges(vocab: url.appendingPathComponent("vocab.json"),
                                              merges: url.appendingPathComponent("merges.txt"),
                                              pattern: pattern ?? .gpt2)
            }
            if has("encoder.json") && has("vocab.bpe") {
                return try loadVocabAndMerges(vocab: url.appendingPathComponent("encoder.json"),
                                              merges: url.appendingPathComponent("vocab.bpe"),
                                              pattern: pattern ?? .gpt2)
            }
            throw TokenizerError("\(path): a tokenizer directory needs tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe")
        }
        if url.pathExtension == "tiktoken" {
            guard let chosen = pattern ?? PreTokenizer(guessingFromName: url.lastPathComponent) else {
                throw TokenizerError("\(path): cannot tell the pre-tokenizer from the file name; pass --pattern gpt2|cl100k|o200k")
            }
            return try loadTiktoken(url, pattern: chosen)
        }
        if url.pathExtension == "json" { return try loadTokenizerJSON(url) }
        throw TokenizerError("\(path): not a tokenizer (expected a directory, tokenizer.json or a .tiktoken file)")
    }

    /// A tiktoken rank file: one `base64(token bytes) rank` per line; the rank is the id.
    /// `specialTokens` defaults to the standard ones of gpt2, cl100k_base and o200k_base when
    /// the file is one of those (told by the number of ranks).
    public static func loadTiktoken(_ url: URL, pattern: PreTokenizer,
                                    specialTokens: [String: Int]? = nil) throws -> Tokenizer {
        let text = try readText(url)
        var entries: [(bytes: [UInt8], rank: Int)] = []
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.isEmpty { continue }
            let fields = line.split(separator: " ")
            guard fields.count == 2, let data = Data(base64Encoded: String(fields[0])),
                  let rank = Int(fields[1]), rank >= 0, rank < 10_000_000 else {
                throw TokenizerError("\(url.path):\(lineNumber): expected 'base64 rank', got '\(line.prefix(60))'")
            }
            entries.append((Array(data), rank))
        }
        guard let maxRank = entries.map(\.rank).max() else { throw TokenizerError("\(url.path): no ranks") }
        var tokenBytes = [[UInt8]](repeating: [], count: maxRank + 1)
        for entry in entries {
            guard tokenBytes[entry.rank].isEmpty else {
                throw TokenizerError("\(url.path): rank \(entry.rank) appears twice")
            }
            tokenBytes[entry.rank] = entry.bytes
        }
        let specials = specialTokens ?? standardSpecialTokens(rankCount: entries.count)
        do {
            return try Tokenizer(tokenBytes: tokenBytes, merges: nil, specialTokens: specials,
                                 preTokenizer: pattern)
        } catch let error as TokenizerError {
            throw TokenizerError("\(url.path): \(error.description)")
        }
    }

    /// The special tokens tiktoken's registry gives gpt2 (50,256 ranks), cl100k_base (100,256)
    /// and o200k_base (199,998); none for other files.
    static func standardSpecialTokens(rankCount: Int) -> [String: Int] {
        switch rankCount {
        case 50256: return ["<|endoftext|>": 50256]
        case 100_256:
            return ["<|endoftext|>": 100_257, "<|fim_prefix|>": 100_258, "<|fim_middle|>": 100_259,
                    "<|fim_suffix|>": 100_260, "<|endofprompt|>": 100_276]
        case 199_998: return ["<|endoftext|>": 199_999, "<|endofprompt|>": 200_018]
        default: return [:]
        }
    }

    /// Hugging Face `vocab.json` (token text in GPT-2's byte alphabet -> id) and `merges.txt`
    /// (`left right` per line in rank order, after an optional `#version` line).
    public static func loadVocabAndMerges(vocab vocabURL: URL, merges mergesURL: URL,
                                          pattern: PreTokenizer = .gpt2) throws -> Tokenizer {
        let vocabData = try readData(vocabURL), mergesData = try readData(mergesURL)
        let entries: [(text: [UInt8], id: Int)]
        do {
            entries = try vocabData.withUnsafeBytes { try VocabularyParsing.parseVocabulary($0) }
        } catch let failure as VocabularyParsing.Failure {
            throw TokenizerError("\(vocabURL.path): not valid JSON of token -> id (\(failure.message))")
        }
        // GPT-2 keeps <|endoftext|> in vocab.json; it is special, not text.
        let endOfText = Array("<|endoftext|>".utf8)
        var specials: [String: Int] = [:]
        var ids = [[UInt8]: Int32](minimumCapacity: entries.count)
        let maxId = entries.map(\.id).max() ?? -1
        guard maxId < 10_000_000 else { throw TokenizerError("\(vocabURL.path): id \(maxId) is implausibly large") }
        var tokenBytes = [[UInt8]](repeating: [], count: maxId + 1)
        for (text, id) in entries {
            ids[text] = Int32(id)
            if text == endOfText { specials["<|endoftext|>"] = id; continue }
            guard let bytes = VocabularyParsing.decodeByteLevel(text) else {
                throw TokenizerError("\(vocabURL.path): token '\(String(decoding: text, as: UTF8.self))' (id \(id)) is not in GPT-2's byte alphabet")
            }
            tokenBytes[id] = bytes
        }
        // merges.txt: "left right" per line, in rank order, after an optional "#version" line.
        var merges: [(Int32, Int32, Int32)] = []
        try mergesData.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var lineStart = 0, lineNumber = 0
            while lineStart < bytes.count {
                var end = lineStart
                while end < bytes.count, bytes[end] != 0x0A { end += 1 }
                lineNumber += 1
                var line = bytes[lineStart..<end]
                if line.last == 0x0D { line = line.dropLast() }
                lineStart = end + 1
                if line.isEmpty || (lineNumber == 1 && line.starts(with: "#version".utf8)) { continue }
                let fields = line.split(separator: 0x20, omittingEmptySubsequences: false)
                guard fields.count == 2, !fields[0].isEmpty, !fields[1].isEmpty else {
                    throw TokenizerError("\(mergesURL.path):\(lineNumber): expected 'left right', got '\(String(decoding: line.prefix(60), as: UTF8.self))'")
                }
                let left = Array(fields[0]), right = Array(fields[1])
                guard let l = ids[left], let r = ids[right] else {
                    let unknown = String(decoding: ids[left] == nil ? left : right, as: UTF8.self)
                    throw TokenizerError("\(mergesURL.path): merge \(merges.count + 1) ('\(String(decoding: line, as: UTF8.self))') names '\(unknown)', which is not in the vocabulary")
                }
                guard let merged = ids[left + right] else {
                    throw TokenizerError("\(mergesURL.path): merge \(merges.count + 1) ('\(String(decoding: line, as: UTF8.self))') makes '\(String(decoding: left + right, as: UTF8.self))', which is not in the vocabulary")
                }
                merges.append((l, r, merged))
            }
        }
        do {
            return try Tokenizer(tokenBytes: tokenBytes, merges: merges, specialTokens: specials, preTokenizer: pattern)
        } catch let error as TokenizerError {
            throw TokenizerError("\(mergesURL.path): \(error.description)")
        }
    }

    /// Hugging Face `tokenizer.json` with a BPE model and a byte-level pre-tokenizer (alone, or
    /// after a Split whose regex is one of the known patterns).
    public static func loadTokenizerJSON(_ url: URL) throws -> Tokenizer {
        let root: [String: Any]
        do {
            guard let object = try JSONSerialization.jsonObject(with: try readData(url)) as? [String: Any] else {
                throw TokenizerError("\(url.path): expected a JSON object")
            }
            root = object
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw TokenizerError("\(url.path): not valid JSON (\(error.localizedDescription))")
        }
        guard let model = root["model"] as? [String: Any] else { throw TokenizerError("\(url.path): no \"model\"") }
        let type = model["type"] as? String ?? "BPE"
        guard type == "BPE" else { throw TokenizerError("\(url.path): model type \"\(type)\" is not supported (only BPE)") }
        guard let vocab = model["vocab"] as? [String: Any] else { throw TokenizerError("\(url.path): model.vocab is missing") }
        var ids: [String: Int] = [:]
        for (token, value) in vocab {
            guard let id = value as? Int, id >= 0 else {
                throw TokenizerError("\(url.path): model.vocab: the id of '\(token)' is not a non-negative integer")
            }
            ids[token] = id
        }
        var merges: [(String, String)] = []
        for (index, merge) in (model["merges"] as? [Any] ?? []).enumerated() {
            if let line = merge as? String {
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError("\(url.path): model.merges[\(index)]: expected 'left right', got '\(line)'") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = merge as? [String], pair.count == 2 {
                merges.append((pair[0], pair[1]))
            } else {
                throw TokenizerError("\(url.path): model.merges[\(index)] is neither 'left right' nor [left, right]")
            }
        }
        var specials: [String: Int] = [:]
        for (index, entry) in (root["added_tokens"] as? [[String: Any]] ?? []).enumerated() {
            guard let id = entry["id"] as? Int, let content = entry["content"] as? String else {
                throw TokenizerError("\(url.path): added_tokens[\(index)] needs an id and a content")
            }
            specials[content] = id
            ids.removeValue(forKey: content)
        }
        let pattern = try preTokenizer(of: root["pre_tokenizer"], source: url.path)
        return try build(vocabulary: ids, merges: merges, specialTokens: specials, pattern: pattern,
                         source: url.path)
    }

    /// The pre-tokenizer a tokenizer.json describes.
    static func preTokenizer(of value: Any?, source: String) throws -> PreTokenizer {
        guard let object = value as? [String: Any], let type = object["type"] as? String else {
            throw TokenizerError("\(source): no pre_tokenizer; only byte-level BPE is supported")
        }
        switch type {
        case "ByteLevel":
            if object["use_regex"] as? Bool ?? true { return .gpt2 }
            throw TokenizerError("\(source): a ByteLevel pre-tokenizer without its regex is not supported")
        case "Sequence":
            let steps = object["pretokenizers"] as? [[String: Any]] ?? []
            let digits = steps.first { $0["type"] as? String == "Digits" }
            if digits?["individual_digits"] as? Bool == true,
               steps.contains(where: { $0["type"] as? String == "ByteLevel" && ($0["use_regex"] as? Bool ?? true) }) {
                return .smollm
            }
            let split = steps.first { $0["type"] as? String == "Split" }
            let regex = (split?["pattern"] as? [String: Any])?["Regex"] as? String
            guard steps.contains(where: { $0["type"] as? String == "ByteLevel" }) else {
                throw TokenizerError("\(source): the pre_tokenizer sequence has no ByteLevel step")
            }
            if let regex {
                if let known = PreTokenizer.allCases.first(where: { $0.matches(regex: regex) }) { return known }
                throw TokenizerError("\(source): the pre-tokenizer regex \(regex.prefix(80))... is not one SwiftGPT implements (gpt2, cl100k, o200k)")
            }
            return .gpt2
        default:
            throw TokenizerError("\(source): pre_tokenizer type \"\(type)\" is not supported")
        }
    }

    /// A tokenizer from token texts in GPT-2's byte alphabet and merges of such texts (the form
    /// vocab.json, tokenizer.json and GGUF metadata share). `source` names the origin in errors.
    public static func build(vocabulary: [String: Int], merges: [(String, String)],
                      specialTokens: [String: Int], pattern: PreTokenizer, source: String) throws -> Tokenizer {
        let maxId = vocabulary.values.max() ?? -1
        guard maxId < 10_000_000 else { throw TokenizerError("\(source): id \(maxId) is implausibly large") }
        var tokenBytes = [[UInt8]](repeating: [], count: maxId + 1)
        for (token, id) in vocabulary where specialTokens[token] == nil {
            guard let bytes = ByteEncoder.decode(token) else {
                throw TokenizerError("\(source): token '\(token)' (id \(id)) is not in GPT-2's byte alphabet")
            }
            tokenBytes[id] = bytes
        }
        var mergeIds: [(Int32, Int32, Int32)] = []
        mergeIds.reserveCapacity(merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            guard let l = vocabulary[left], let r = vocabulary[right] else {
                let unknown = vocabulary[left] == nil ? left : right
                throw TokenizerError("\(source): merge \(rank + 1) ('\(left) \(right)') names '\(unknown)', which is not in the vocabulary")
            }
            guard let merged = vocabulary[left + right] else {
                throw TokenizerError("\(source): merge \(rank + 1) ('\(left) \(right)') makes '\(left + right)', which is not in the vocabulary")
            }
            mergeIds.append((Int32(l), Int32(r), Int32(merged)))
        }
        do {
            return try Tokenizer(tokenBytes: tokenBytes, merges: mergeIds, specialTokens: specialTokens,
                                 preTokenizer: pattern)
        } catch let error as TokenizerError {
            throw TokenizerError("\(source): \(error.description)")
        }
    }
}

extension PreTokenizer {
    /// The pattern a rank file's name suggests: gpt2/r50k/p50k, cl100k, o200k.
    init?(guessingFromName name: String) {
        let lower = name.lowercased()
        if lower.contains("cl100k") { self = .cl100k }
        else if lower.contains("o200k") { self = .o200k }
        else if lower.contains("gpt2") || lower.contains("r50k") || lower.contains("p50k") { self = .gpt2 }
        else { return nil }
    }

    /// Whether `regex` is this pattern, as Hugging Face or tiktoken writes it. Near-variants
    /// (cl100k without `\s++$`, say) split differently at the end of a text, so only exact
    /// spellings count.
    func matches(regex: String) -> Bool {
        // tiktoken's current spelling of GPT-2's pattern, which it asserts is equivalent.
        let r50kTiktoken = #"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"#
        return regex == pattern || regex == huggingFacePattern || (self == .gpt2 && regex == r50kTiktoken)
    }
}

func readData(_ url: URL) throws -> Data {
    do {
        return try Data(contentsOf: url)
    } catch {
        throw TokenizerError("\(url.path): cannot read (\((error as NSError).localizedDescription))")
    }
}

func readText(_ url: URL) throws -> String {
    let data = try readData(url)
    guard let text = String(data: data, encoding: .utf8) else {
        throw TokenizerError("\(url.path): not valid UTF-8")
    }
    return text
}
