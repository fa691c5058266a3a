import Foundation

// Writing tokenizers in Hugging Face's formats: tokenizer.json (which `tokenizers` loads) and
// vocab.json + merges.txt.

extension Tokenizer {
    /// The merges in rank order as (left, right) ids. A tokenizer loaded from a rank file has
    /// none written down: each multi-byte token's merge is recovered by running BPE on its bytes
    /// with the merges of lower rank, which must leave exactly two parts.
    public func mergeList() throws -> [(left: Int, right: Int)] {
        switch mergeSource {
        case .mergeList:
            return merges.merges.sorted { $0.rank < $1.rank }.map { (Int($0.left), Int($0.right)) }
        case .ranks:
            var result: [(left: Int, right: Int)] = []
            for (id, bytes) in tokenBytes.enumerated() where bytes.count >= 2 {
                let parts = bytes.withUnsafeBufferPointer { mergeParts(of: $0, belowRank: Int32(id)) }
                guard parts.count == 2 else {
                    throw TokenizerError("token \(id) cannot be written as one merge of two lower-ranked tokens")
                }
                result.append((Int(parts[0]), Int(parts[1])))
            }
            return result
        }
    }

    /// BPE of `bytes` using only merges of rank below `limit`.
    func mergeParts(of bytes: UnsafeBufferPointer<UInt8>, belowRank limit: Int32) -> [Int32] {
        var parts = bytes.map { byteTokens[Int($0)] }.filter { $0 >= 0 }
        while parts.count > 1 {
            var best = -1, bestValue = UInt64.max
            for i in 0..<(parts.count - 1) {
                let value = merges.lookup(parts[i], parts[i + 1])
                if value >> 32 < bestValue >> 32 && Int32(truncatingIfNeeded: value >> 32) < limit {
                    best = i
                    bestValue = value
                }
            }
            if best < 0 { break }
            parts[best] = Int32(truncatingIfNeeded: bestValue)
            parts.remove(at: best + 1)
        }
        return parts
    }

    /// Writes `tokenizer.json`, `vocab.json` and `merges.txt` into `directory` (created if
    /// needed), each to a temporary file first and then renamed.
    public func writeHuggingFaceFiles(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let merges = try mergeList()
        let vocabulary = vocabularyEntries()
        let mergeStrings = merges.map { "\(ByteEncoder.encode(tokenBytes[$0.left])) \(ByteEncoder.encode(tokenBytes[$0.right]))" }

        let vocabJSON = "{" + vocabulary.map { "\(jsonString($0.text)):\($0.id)" }.joined(separator: ",") + "}"
        try writeAtomically(vocabJSON + "\n", to: directory.appendingPathComponent("vocab.json"))
        try writeAtomically((["#version: 0.2"] + mergeStrings).joined(separator: "\n") + "\n",
                            to: directory.appendingPathComponent("merges.txt"))

        let added = specialTokens.sorted { $0.value < $1.value }.map { token, id in
            #"{"id":\#(id),"content":\#(jsonString(token)),"single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}"#
        }
        let byteLevel = #"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":%@}"#
        let preTokenizerJSON: String
        if preTokenizer == .gpt2 {
            preTokenizerJSON = String(format: byteLevel, "true")
        } else if preTokenizer == .smollm {
            preTokenizerJSON = #"{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},"#
                + String(format: byteLevel, "true") + "]}"
        } else {
            preTokenizerJSON = #"{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":\#(jsonString(preTokenizer.huggingFacePattern))},"behavior":"Isolated","invert":false},"#
                + String(format: byteLevel, "false") + "]}"
        }
        let model = #"{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":\#(mergeSource == .ranks),"vocab":\#(vocabJSON),"merges":["#
            + mergeStrings.map(jsonString).joined(separator: ",") + "]}"
        let json = #"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[\#(added.joined(separator: ","))],"normalizer":null,"pre_tokenizer":\#(preTokenizerJSON),"post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"model":\#(model)}"#
        try writeAtomically(json + "\n", to: directory.appendingPathComponent("tokenizer.json"))
    }

    /// Every token as (text in GPT-2's byte alphabet, id), by id; special tokens as their
    /// text (GPT-2's vocab.json holds <|endoftext|> the same way).
    func vocabularyEntries() -> [(text: String, id: Int)] {
        let regular: [(text: String, id: Int)] = tokenBytes.enumerated().compactMap { id, bytes in
            bytes.isEmpty || specialById[id] != nil ? nil : (ByteEncoder.encode(bytes), id)
        }
        return (regular + specialTokens.map { ($0.key, $0.value) }).sorted { $0.id < $1.id }
    }
}

/// A JSON string literal, escaped as JSON requires.
public func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || scalar.value == 0x7F:
            out += String(format: "\\u%04x", scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// Writes `text` to a temporary file beside `url`, then renames it over `url`.
public func writeAtomically(_ text: String, to url: URL) throws {
    do {
        try Data(text.utf8).write(to: url, options: .atomic)
    } catch {
        throw TokenizerError("\(url.path): cannot write (\((error as NSError).localizedDescription))")
    }
}
