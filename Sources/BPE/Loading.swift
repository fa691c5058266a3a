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
        // Read as bytes, one line at a time: a String per line and a Data per base64 field took
        // 60% of a gpt2 load (0.1 s of 0.18).
        let data = try readData(url)
        var tokenBytes: [[UInt8]] = []
        var rankCount = 0
        tokenBytes.reserveCapacity(data.count / 12)
        try forEachLine(of: data) { line, lineNumber in
            if line.isEmpty { return }
            guard let space = line.firstIndex(of: 0x20), let token = Base64.decode(line[..<space]),
                  let rank = decimal(line[(space + 1)...]), rank < 10_000_000 else {
                throw TokenizerError("\(url.path):\(lineNumber): expected 'base64 rank', got '\(String(decoding: line.prefix(60), as: UTF8.self))'")
            }
            if rank >= tokenBytes.count { tokenBytes += repeatElement([], count: rank + 1 - tokenBytes.count) }
            guard tokenBytes[rank].isEmpty else { throw TokenizerError("\(url.path): rank \(rank) appears twice") }
            tokenBytes[rank] = token
            rankCount += 1
        }
        guard rankCount > 0 else { throw TokenizerError("\(url.path): no ranks") }
        let specials = specialTokens ?? standardSpecialTokens(rankCount: rankCount)
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
        } catch let failure as JSONReader.Failure {
            throw TokenizerError("\(vocabURL.path): not valid JSON of token -> id (\(failure.message))")
        }
        // merges.txt: "left right" per line, in rank order, after an optional "#version" line.
        var merges: [(left: [UInt8], right: [UInt8])] = []
        try forEachLine(of: mergesData) { line, lineNumber in
            if line.isEmpty || (lineNumber == 1 && line.starts(with: "#version".utf8)) { return }
            guard let merge = VocabularyParsing.splitMerge(line) else {
                throw TokenizerError("\(mergesURL.path):\(lineNumber): expected 'left right', got '\(String(decoding: line.prefix(60), as: UTF8.self))'")
            }
            merges.append(merge)
        }
        // GPT-2 keeps <|endoftext|> in vocab.json; it is special, not text.
        let endOfText = entries.last { $0.text.elementsEqual("<|endoftext|>".utf8) }
        return try build(entries: entries, merges: merges, specialTokens: endOfText.map { ["<|endoftext|>": $0.id] } ?? [:],
                         pattern: pattern, vocabularySource: vocabURL.path, mergesSource: mergesURL.path)
    }

    /// Hugging Face `tokenizer.json` with a BPE model and a byte-level pre-tokenizer (alone, or
    /// after a Split whose regex is one of the known patterns). Read as bytes (`JSONReader`):
    /// only the model, the added tokens and the pre-tokenizer are built, the rest skipped.
    public static func loadTokenizerJSON(_ url: URL) throws -> Tokenizer {
        let data = try readData(url)
        let file: TokenizerJSON
        do {
            file = try data.withUnsafeBytes { try TokenizerJSON(JSONReader($0)) }
        } catch let failure as JSONReader.Failure {
            throw TokenizerError("\(url.path): \(failure.message)")
        }
        guard let modelType = file.modelType else { throw TokenizerError("\(url.path): no \"model\"") }
        guard modelType == "BPE" else { throw TokenizerError("\(url.path): model type \"\(modelType)\" is not supported (only BPE)") }
        guard let vocabulary = file.vocabulary else { throw TokenizerError("\(url.path): model.vocab is missing") }
        let pattern = try preTokenizer(of: file.preTokenizer, source: url.path)
        return try build(entries: vocabulary, merges: file.merges,
                         specialTokens: Dictionary(file.addedTokens, uniquingKeysWith: { _, last in last }),
                         pattern: pattern, vocabularySource: url.path, mergesSource: url.path)
    }

    /// The pre-tokenizer a tokenizer.json describes.
    static func preTokenizer(of description: TokenizerJSON.PreTokenizerStep?, source: String) throws -> PreTokenizer {
        guard let description, let type = description.type else {
            throw TokenizerError("\(source): no pre_tokenizer; only byte-level BPE is supported")
        }
        switch type {
        case "ByteLevel":
            if description.useRegex ?? true { return .gpt2 }
            throw TokenizerError("\(source): a ByteLevel pre-tokenizer without its regex is not supported")
        case "Sequence":
            let steps = description.steps
            let digits = steps.first { $0.type == "Digits" }
            if digits?.individualDigits == true,
               steps.contains(where: { $0.type == "ByteLevel" && ($0.useRegex ?? true) }) {
                return .smollm
            }
            guard steps.contains(where: { $0.type == "ByteLevel" }) else {
                throw TokenizerError("\(source): the pre_tokenizer sequence has no ByteLevel step")
            }
            guard let split = steps.first(where: { $0.type == "Split" }) else { return .gpt2 }
            guard let regex = split.regex else {
                throw TokenizerError("\(source): a Split pre-tokenizer without a Regex pattern is not supported")
            }
            if let known = PreTokenizer.allCases.first(where: { $0.matches(regex: regex) }) { return known }
            throw TokenizerError("\(source): the pre-tokenizer regex \(regex.prefix(80))... is not one SwiftGPT implements (gpt2, cl100k, o200k)")
        default:
            throw TokenizerError("\(source): pre_tokenizer type \"\(type)\" is not supported")
        }
    }

    /// A tokenizer from token texts in GPT-2's byte alphabet and merges of such texts (the form
    /// vocab.json, tokenizer.json and GGUF metadata share). `source` names the origin in errors.
    public static func build(vocabulary: [String: Int], merges: [(String, String)],
                      specialTokens: [String: Int], pattern: PreTokenizer, source: String) throws -> Tokenizer {
        try build(entries: vocabulary.map { (Array($0.key.utf8), $0.value) },
                  merges: merges.map { (Array($0.0.utf8), Array($0.1.utf8)) },
                  specialTokens: specialTokens, pattern: pattern, vocabularySource: source, mergesSource: source)
    }

    /// The same from UTF-8 bytes. Vocabulary entries whose text is a special token's are not
    /// text (GPT-2's vocab.json holds <|endoftext|>; tokenizer.json repeats its added tokens).
    static func build(entries: [(text: [UInt8], id: Int)], merges: [(left: [UInt8], right: [UInt8])],
                      specialTokens: [String: Int], pattern: PreTokenizer,
                      vocabularySource: String, mergesSource: String) throws -> Tokenizer {
        let specialTexts = Set(specialTokens.keys.map { Array($0.utf8) })
        let maxId = entries.lazy.filter { !specialTexts.contains($0.text) }.map(\.id).max() ?? -1
        guard maxId < 10_000_000 else { throw TokenizerError("\(vocabularySource): id \(maxId) is implausibly large") }
        var ids = [[UInt8]: Int32](minimumCapacity: entries.count)
        var tokenBytes = [[UInt8]](repeating: [], count: maxId + 1)
        for (text, id) in entries where !specialTexts.contains(text) {
            ids[text] = Int32(id)
            guard let bytes = VocabularyParsing.decodeByteLevel(text) else {
                throw TokenizerError("\(vocabularySource): token '\(String(decoding: text, as: UTF8.self))' (id \(id)) is not in GPT-2's byte alphabet")
            }
            tokenBytes[id] = bytes
        }
        var mergeIds: [(Int32, Int32, Int32)] = []
        mergeIds.reserveCapacity(merges.count)
        for (left, right) in merges {
            func described() -> String {
                "merge \(mergeIds.count + 1) ('\(String(decoding: left, as: UTF8.self)) \(String(decoding: right, as: UTF8.self))')"
            }
            guard let l = ids[left], let r = ids[right] else {
                let unknown = String(decoding: ids[left] == nil ? left : right, as: UTF8.self)
                throw TokenizerError("\(mergesSource): \(described()) names '\(unknown)', which is not in the vocabulary")
            }
            guard let merged = ids[left + right] else {
                throw TokenizerError("\(mergesSource): \(described()) makes '\(String(decoding: left + right, as: UTF8.self))', which is not in the vocabulary")
            }
            mergeIds.append((l, r, merged))
        }
        do {
            return try Tokenizer(tokenBytes: tokenBytes, merges: mergeIds, specialTokens: specialTokens,
                                 preTokenizer: pattern)
        } catch let error as TokenizerError {
            throw TokenizerError("\(mergesSource): \(error.description)")
        }
    }
}

/// The parts of a Hugging Face tokenizer.json that loading uses, read in one pass; every other
/// field is skipped unbuilt. Failures name the field and the byte offset.
struct TokenizerJSON {
    /// A pre-tokenizer, or one step of a `Sequence` of them.
    struct PreTokenizerStep {
        var type: String?
        var useRegex: Bool?
        var individualDigits: Bool?
        /// A Split's `pattern.Regex`.
        var regex: String?
        /// A Sequence's `pretokenizers` (read at the top level only).
        var steps: [PreTokenizerStep] = []
    }

    var modelType: String?
    var vocabulary: [(text: [UInt8], id: Int)]?
    var merges: [(left: [UInt8], right: [UInt8])] = []
    var addedTokens: [(content: String, id: Int)] = []
    var preTokenizer: PreTokenizerStep?

    init(_ reader: JSONReader) throws {
        try reader.members { key in
            switch String(decoding: key, as: UTF8.self) {
            case "model":
                try within("model") {
                    guard !reader.null() else { return }
                    try readModel(reader)
                    modelType = modelType ?? "BPE"
                }
            case "added_tokens":
                try within("added_tokens") {
                    if reader.null() { return }
                    try reader.elements { index in
                        var id: Int?, content: String?
                        try reader.members { key in
                            switch String(decoding: key, as: UTF8.self) {
                            case "id": id = reader.nonNegativeInteger()
                                if id == nil { try reader.skipValue() }
                            case "content": content = try Self.text(reader)
                            default: try reader.skipValue()
                            }
                        }
                        guard let id, let content else { throw reader.failure("added_tokens[\(index)] needs an id and a content, ending") }
                        addedTokens.append((content, id))
                    }
                }
            case "pre_tokenizer":
                try within("pre_tokenizer") {
                    if !reader.null() { preTokenizer = try Self.step(reader, nested: false) }
                }
            case let other:
                try within(other) { try reader.skipValue() }
            }
        }
        try reader.end()
    }

    private mutating func readModel(_ reader: JSONReader) throws {
        try reader.members { key in
            switch String(decoding: key, as: UTF8.self) {
            case "type": try within("model.type") { modelType = try Self.text(reader) }
            case "vocab": try within("model.vocab") { vocabulary = try VocabularyParsing.parseVocabulary(reader) }
            case "merges":
                try within("model.merges") {
                    try reader.elements { index in
                        if reader.peek() == 0x22, let merge = VocabularyParsing.splitMerge(try reader.string()) {
                            merges.append(merge)
                        } else if reader.peek() == 0x5B {
                            var pair: [[UInt8]] = []
                            try reader.elements { _ in pair.append(try reader.string()) }
                            guard pair.count == 2 else { throw reader.failure("model.merges[\(index)] is not a pair, ending") }
                            merges.append((pair[0], pair[1]))
                        } else {
                            throw reader.failure("model.merges[\(index)] is neither 'left right' nor [left, right], ending")
                        }
                    }
                }
            case let other: try within("model.\(other)") { try reader.skipValue() }
            }
        }
    }

    /// A pre-tokenizer object; a nested Sequence's steps are skipped (none of the known
    /// configurations nests them), which also bounds the recursion.
    private static func step(_ reader: JSONReader, nested: Bool) throws -> PreTokenizerStep {
        var step = PreTokenizerStep()
        try reader.members { key in
            switch String(decoding: key, as: UTF8.self) {
            case "type": step.type = try text(reader)
            case "use_regex": step.useRegex = try reader.bool()
            case "individual_digits": step.individualDigits = try reader.bool()
            case "pattern":
                try reader.members { kind in
                    if kind.elementsEqual("Regex".utf8) { step.regex = try text(reader) } else { try reader.skipValue() }
                }
            case "pretokenizers" where !nested:
                try reader.elements { _ in step.steps.append(try Self.step(reader, nested: true)) }
            default: try reader.skipValue()
            }
        }
        return step
    }

    private static func text(_ reader: JSONReader) throws -> String {
        String(decoding: try reader.string(), as: UTF8.self)
    }
}

/// Runs `body`, naming `field` in the failure it throws.
private func within(_ field: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as JSONReader.Failure where !failure.message.hasPrefix(field) {
        throw JSONReader.Failure(message: "\(field): \(failure.message)")
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

/// Calls `body` with each line of `data` (without its "\n" or "\r\n") and its number from 1.
private func forEachLine(of data: Data, _ body: (Slice<UnsafeRawBufferPointer>, Int) throws -> Void) throws {
    try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
        var lineStart = 0, lineNumber = 0
        while lineStart < bytes.count {
            var end = lineStart
            while end < bytes.count, bytes[end] != 0x0A { end += 1 }
            lineNumber += 1
            var line = bytes[lineStart..<end]
            if line.last == 0x0D { line = line.dropLast() }
            lineStart = end + 1
            try body(line, lineNumber)
        }
    }
}

/// The non-negative decimal number that is all of `digits` (at most 9 of them), or nil.
private func decimal(_ digits: Slice<UnsafeRawBufferPointer>) -> Int? {
    guard !digits.isEmpty, digits.count <= 9 else { return nil }
    var value = 0
    for byte in digits {
        guard byte >= 0x30 && byte <= 0x39 else { return nil }
        value = value * 10 + Int(byte - 0x30)
    }
    return value
}

/// Standard base64 (`+/`, `=` padding), as tiktoken rank files write token bytes.
enum Base64 {
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, symbol) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            table[Int(symbol)] = UInt8(value)
        }
        return table
    }()

    /// The bytes `text` encodes, or nil when it is not padded base64.
    static func decode(_ text: Slice<UnsafeRawBufferPointer>) -> [UInt8]? {
        guard text.count % 4 == 0 else { return nil }
        let padding = text.reversed().prefix(2).prefix { $0 == 0x3D }.count
        let values = Self.values
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var accumulator: UInt32 = 0, index = 0
        for symbol in text.dropLast(padding) {
            let value = values[Int(symbol)]
            guard value != 0xFF else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            index += 1
            if index & 3 == 0 {
                out.append(UInt8(truncatingIfNeeded: accumulator >> 16))
                out.append(UInt8(truncatingIfNeeded: accumulator >> 8))
                out.append(UInt8(truncatingIfNeeded: accumulator))
            }
        }
        switch padding {
        case 1: out += [UInt8(truncatingIfNeeded: accumulator >> 10), UInt8(truncatingIfNeeded: accumulator >> 2)]
        case 2: out.append(UInt8(truncatingIfNeeded: accumulator >> 4))
        default: break
        }
        return out
    }
}
