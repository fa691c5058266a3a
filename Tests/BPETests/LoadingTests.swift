import Foundation
import TestSupport
import XCTest
@testable import BPE

/// tokenizer.json read as bytes (JSONReader) against the JSONSerialization reading it replaced,
/// on files our writer and Hugging Face `tokenizers` write; malformed files give errors that
/// name the file and the place.
final class TokenizerJSONTests: XCTestCase {
    /// What loading a tokenizer.json gave before it was read as bytes: JSONSerialization's object
    /// tree, the same fields picked out (kept here as the reference).
    func loadThroughFoundation(_ url: URL) throws -> Tokenizer {
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let model = try XCTUnwrap(root["model"] as? [String: Any])
        let vocab = try XCTUnwrap(model["vocab"] as? [String: Int])
        var ids = vocab
        var merges: [(String, String)] = []
        for merge in model["merges"] as? [Any] ?? [] {
            if let line = merge as? String {
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                merges.append((String(parts[0]), String(parts[1])))
            } else {
                let pair = try XCTUnwrap(merge as? [String])
                merges.append((pair[0], pair[1]))
            }
        }
        var specials: [String: Int] = [:]
        for entry in root["added_tokens"] as? [[String: Any]] ?? [] {
            let content = try XCTUnwrap(entry["content"] as? String)
            specials[content] = try XCTUnwrap(entry["id"] as? Int)
            ids.removeValue(forKey: content)
        }
        let pre = try XCTUnwrap(root["pre_tokenizer"] as? [String: Any])
        let steps = pre["pretokenizers"] as? [[String: Any]] ?? []
        let regex = (steps.first { $0["type"] as? String == "Split" }?["pattern"] as? [String: Any])?["Regex"] as? String
        let pattern: PreTokenizer
        if steps.contains(where: { $0["type"] as? String == "Digits" }) {
            pattern = .smollm
        } else if let regex {
            pattern = try XCTUnwrap(PreTokenizer.allCases.first { $0.matches(regex: regex) })
        } else {
            pattern = .gpt2
        }
        return try Tokenizer.build(vocabulary: ids, merges: merges, specialTokens: specials, pattern: pattern, source: url.path)
    }

    func assertSameTokenizer(_ url: URL, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let text = String(decoding: try Data(contentsOf: fixtureURL("torture.txt")), as: UTF8.self)
            + "<|endoftext|>" + (try shakespeareSample(bytes: 50_000))
        let ours = try Tokenizer.load(path: url.path), reference = try loadThroughFoundation(url)
        XCTAssertEqual(ours.specialTokens, reference.specialTokens, name, file: file, line: line)
        XCTAssertEqual(ours.vocabularySize, reference.vocabularySize, name, file: file, line: line)
        XCTAssertEqual(ours.preTokenizer, reference.preTokenizer, name, file: file, line: line)
        XCTAssertEqual(ours.tokenBytes, reference.tokenBytes, name, file: file, line: line)
        XCTAssertEqual(ours.encode(text, allowedSpecial: .all), reference.encode(text, allowedSpecial: .all), name, file: file, line: line)
    }

    /// Files written by our writer (a trained tokenizer, gpt2 and cl100k from their rank files)
    /// and by Hugging Face `tokenizers` (GPT-2 from vocab.json + merges.txt, which it saves with
    /// [left, right] merges; and the same file with "left right" merges).
    func testSameTokenizerAsFoundationReading() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-json-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let trained = try BPETrainer(vocabularySize: 600, specialTokens: ["<|endoftext|>", "<|pad|>"])
            .train(texts: [try shakespeareSample(bytes: 100_000)])
        let cases: [(String, Tokenizer)] = [("trained", trained), ("gpt2", try loadAsset("gpt2.tiktoken", pattern: .gpt2)),
                                            ("cl100k", try loadAsset("cl100k_base.tiktoken", pattern: .cl100k))]
        for (name, tokenizer) in cases {
            try tokenizer.writeHuggingFaceFiles(to: directory.appendingPathComponent(name))
            try assertSameTokenizer(directory.appendingPathComponent("\(name)/tokenizer.json"), name)
        }
        let huggingFace = directory.appendingPathComponent("hf")
        _ = try runPython("""
            import json, os, sys
            from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
            vocab, merges = models.BPE.read_file(sys.argv[1], sys.argv[2])
            t = Tokenizer(models.BPE(vocab, merges))
            t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            t.decoder = decoders.ByteLevel()
            t.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
            os.makedirs(sys.argv[3], exist_ok=True)
            t.save(os.path.join(sys.argv[3], "tokenizer.json"))
            data = json.load(open(os.path.join(sys.argv[3], "tokenizer.json")))
            data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
            os.makedirs(sys.argv[3] + "-strings", exist_ok=True)
            json.dump(data, open(os.path.join(sys.argv[3] + "-strings", "tokenizer.json"), "w"), indent=2, ensure_ascii=True)
            """, [try assetURL("tokenizers/gpt2/vocab.json").path, try assetURL("tokenizers/gpt2/merges.txt").path, huggingFace.path])
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: huggingFace.appendingPathComponent("tokenizer.json"))) as? [String: Any]
        XCTAssertTrue(((saved?["model"] as? [String: Any])?["merges"] as? [Any])?.first is [String], "tokenizers now writes merges differently")
        try assertSameTokenizer(huggingFace.appendingPathComponent("tokenizer.json"), "tokenizers, [left, right] merges")
        try assertSameTokenizer(URL(fileURLWithPath: huggingFace.path + "-strings/tokenizer.json"), "tokenizers, 'left right' merges, \\u escapes")
        // And the ids tokenizers itself gives with the file it wrote.
        let heldOut = fixtureURL("torture.txt")
        let theirs = try runPython("""
            import sys, json
            from tokenizers import Tokenizer
            t = Tokenizer.from_file(sys.argv[1])
            print(json.dumps(t.encode(open(sys.argv[2], "rb").read().decode("utf-8"), add_special_tokens=False).ids))
            """, [huggingFace.appendingPathComponent("tokenizer.json").path, heldOut.path])
        let ours = try Tokenizer.load(path: huggingFace.appendingPathComponent("tokenizer.json").path)
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(theirs.utf8)) as? [Int],
                       ours.encode(String(decoding: try Data(contentsOf: heldOut), as: UTF8.self), allowedSpecial: .all))
    }

    func testMalformedFilesGiveErrorsNamingFileAndPlace() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-json-bad-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let trained = try BPETrainer(vocabularySize: 300, specialTokens: ["<|endoftext|>"]).train(texts: [try shakespeareSample(bytes: 20_000)])
        try trained.writeHuggingFaceFiles(to: directory)
        let url = directory.appendingPathComponent("tokenizer.json")
        let good = try Data(contentsOf: url)
        func expectError(_ json: Data, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
            try json.write(to: url)
            XCTAssertThrowsError(try Tokenizer.load(path: url.path), file: file, line: line) { error in
                XCTAssertTrue(error is TokenizerError, "\(error)", file: file, line: line)
                XCTAssertTrue("\(error)".hasPrefix(url.path + ": "), "\(error) should name the file", file: file, line: line)
                XCTAssertTrue("\(error)".contains(message), "\(error) should mention \(message)", file: file, line: line)
            }
        }
        // Truncated anywhere: an error with a byte offset, never a crash.
        for cut in stride(from: 0, to: good.count - 2, by: max(1, good.count / 97)) + [1, 2, good.count - 3] {
            try expectError(good.prefix(cut), "byte offset")
        }
        func edited(_ from: String, _ to: String) throws -> Data {
            let text = String(decoding: good, as: UTF8.self)
            XCTAssertTrue(text.contains(from), from)
            return Data(text.replacingOccurrences(of: from, with: to).utf8)
        }
        try expectError(try edited(#""vocab":{"#, #""vocab":["#), "model.vocab: expected '{' at byte offset")
        try expectError(try edited(#""vocab":{"#, #""vocab":{"zz":"0","#), "model.vocab: the id of 'zz' is not a non-negative integer")
        try expectError(try edited(#""merges":["#, #""merges":[7,"#), "model.merges[0] is neither 'left right' nor [left, right]")
        try expectError(try edited(#""merges":["#, #""merges":[["a"],"#), "model.merges[0] is not a pair")
        try expectError(try edited(#""merges":["#, #""merges":["a b c","#), "model.merges[0] is neither")
        try expectError(try edited(#""id":299"#, #""id":"299""#), "added_tokens[0] needs an id and a content")
        try expectError(try edited(#""use_regex":true"#, #""use_regex":"yes""#), "pre_tokenizer: expected true or false at byte offset")
        try expectError(try edited(#""type":"BPE""#, #""type":"WordPiece""#), #"model type "WordPiece" is not supported"#)
        try expectError(try edited(#""type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true"#, #""type":"Whitespace""#),
                        #"pre_tokenizer type "Whitespace" is not supported"#)
        try expectError(try edited(#""pre_tokenizer":{"#, #""pre_tokenizer":null,"x":{"#), "no pre_tokenizer")
        try expectError(try edited(#""normalizer":null"#, #""normalizer":nul"#), "byte offset")
        try expectError(try edited(#""normalizer":null"#, #""normalizer":{"a":1 "b":2}"#), "normalizer: expected ',' or the end of an object or array at byte offset")
        try expectError(good + Data("x".utf8), "text after the JSON value")
        let vocabulary = String(decoding: good, as: UTF8.self)
        try expectError(Data(vocabulary.replacingOccurrences(of: #""model":"#, with: #""nothing":"#).utf8), #"no "model""#)
        // Nesting in a skipped field costs no stack, however deep.
        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        try Data(String(decoding: good, as: UTF8.self).replacingOccurrences(of: #""normalizer":null"#, with: #""normalizer":\#(deep)"#).utf8).write(to: url)
        XCTAssertEqual(try Tokenizer.load(path: url.path).vocabularySize, 300)
        try expectError(try edited(#""normalizer":null"#, #""normalizer":\#(String(repeating: "[", count: 200_000))"#), "normalizer: expected a value at byte offset")
    }

    /// A Split step with a plain String pattern was read as GPT-2's pattern before; it is refused.
    func testSplitWithoutRegexIsRefused() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-json-split-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        try BPETrainer(vocabularySize: 300, preTokenizer: .cl100k).train(texts: [try shakespeareSample(bytes: 20_000)]).writeHuggingFaceFiles(to: directory)
        let url = directory.appendingPathComponent("tokenizer.json")
        XCTAssertEqual(try Tokenizer.load(path: url.path).preTokenizer, .cl100k)
        let text = try String(contentsOf: url, encoding: .utf8)
        let regex = #"{"Regex":"# + jsonString(PreTokenizer.cl100k.huggingFacePattern) + "}"
        XCTAssertTrue(text.contains(regex))
        try text.replacingOccurrences(of: regex, with: #"{"String":" "}"#).write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer.load(path: url.path)) {
            XCTAssertTrue("\($0)".contains("a Split pre-tokenizer without a Regex pattern is not supported"), "\($0)")
        }
    }
}

final class RankFileTests: XCTestCase {
    /// Our base64 against Foundation's on random byte strings, and refusals of what is not padded
    /// base64 (Foundation reads "IQ=A" as two bytes; the rank files never have it).
    func testBase64MatchesFoundation() {
        var generator = SplitMix64(seed: 7)
        for length in 0..<40 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Array(Data(bytes).base64EncodedString().utf8)
            XCTAssertEqual(text.withUnsafeBytes { Base64.decode($0[...]) }, bytes)
        }
        for bad in ["IQ=", "I===", "IQ=A", "IQ!=", "=IQ="] {
            XCTAssertNil(Array(bad.utf8).withUnsafeBytes { Base64.decode($0[...]) }, bad)
        }
    }
}
