import Foundation
import TestSupport
import XCTest
@testable import BPE

final class TrainerTests: XCTestCase {
    func testWorkedExample() throws {
        // Pieces "hug" x10, " pug" x5, " hugs" x5 -> (u, g) is the most frequent pair (20).
        let text = Array(repeating: "hug", count: 10).joined() + String(repeating: " pug", count: 5)
            + String(repeating: " hugs", count: 5)
        let tokenizer = try BPETrainer(vocabularySize: 256 + 3, specialTokens: []).train(texts: [text])
        let merges = try tokenizer.mergeList()
        XCTAssertEqual(merges.count, 3)
        XCTAssertEqual(try tokenizer.bytes(of: 256), Array("ug".utf8))
        XCTAssertEqual(merges[0].left, Int(UInt8(ascii: "u")))
        XCTAssertEqual(merges[0].right, Int(UInt8(ascii: "g")))
    }

    func testTrainedTokenizerRoundTripsAndIsDeterministic() throws {
        let text = try shakespeareSample(bytes: 300_000)
        let trainer = BPETrainer(vocabularySize: 1000, specialTokens: ["<|endoftext|>", "<|pad|>"])
        let tokenizer = try trainer.train(texts: [text])
        XCTAssertEqual(tokenizer.vocabularySize, 1000)
        XCTAssertEqual(tokenizer.specialTokens, ["<|endoftext|>": 998, "<|pad|>": 999])
        let again = try trainer.train(texts: [text])
        XCTAssertTrue(zip(try tokenizer.mergeList(), try again.mergeList()).allSatisfy { $0 == $1 })
        let heldOut = "Wherefore art thou, Romeo? 😀 naïve — 1234\n\n  x"
        XCTAssertEqual(try tokenizer.decode(tokenizer.encodeOrdinary(heldOut)), heldOut)
        // Compression: far fewer tokens than bytes on text like the training text.
        let sample = String(text.prefix(20_000))
        XCTAssertLessThan(Double(tokenizer.encodeOrdinary(sample).count), 0.5 * Double(sample.utf8.count))
    }

    func testWrittenFilesLoadBackWithTheSameIds() throws {
        let text = try shakespeareSample(bytes: 200_000)
        let tokenizer = try BPETrainer(vocabularySize: 700, specialTokens: ["<|endoftext|>"]).train(texts: [text])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bpe-train-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        try tokenizer.writeHuggingFaceFiles(to: directory)
        let heldOut = String(decoding: try Data(contentsOf: fixtureURL("torture.txt")), as: UTF8.self)
        let expected = tokenizer.encode(heldOut, allowedSpecial: .all)
        let fromJSON = try Tokenizer.load(path: directory.appendingPathComponent("tokenizer.json").path)
        let fromVocab = try Tokenizer.loadVocabAndMerges(vocab: directory.appendingPathComponent("vocab.json"),
                                                        merges: directory.appendingPathComponent("merges.txt"))
        XCTAssertEqual(fromJSON.encode(heldOut, allowedSpecial: .all), expected)
        XCTAssertEqual(fromVocab.encode(heldOut, allowedSpecial: .all), expected)
    }

    /// Hugging Face `tokenizers` (pip tokenizers==0.23.3) loads what we write and gives our ids,
    /// for a trained tokenizer and for gpt2, cl100k_base and o200k_base written from their rank files.
    func testHuggingFaceTokenizersGiveTheSameIds() throws {
        let heldOut = fixtureURL("torture.txt")
        let text = String(decoding: try Data(contentsOf: heldOut), as: UTF8.self)
        let trained = try BPETrainer(vocabularySize: 2000).train(texts: [try shakespeareSample(bytes: 500_000)])
        var cases = [("trained", trained)]
        for encoding in TiktokenParityTests.encodings {
            cases.append((encoding.name, try loadAsset(encoding.file, pattern: encoding.pattern)))
        }
        for (name, tokenizer) in cases {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bpe-hf-\(UUID())")
            defer { try? FileManager.default.removeItem(at: directory) }
            try tokenizer.writeHuggingFaceFiles(to: directory)
            let theirs = try runPython("""
                import sys, json
                from tokenizers import Tokenizer
                t = Tokenizer.from_file(sys.argv[1])
                text = open(sys.argv[2], "rb").read().decode("utf-8")
                print(json.dumps(t.encode(text, add_special_tokens=False).ids))
                """, [directory.appendingPathComponent("tokenizer.json").path, heldOut.path])
            // tokenizers always splits out added tokens, like encode with every special allowed.
            XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(theirs.utf8)) as? [Int],
                           tokenizer.encode(text, allowedSpecial: .all), name)
        }
    }

    func testRefusesImpossibleSizes() {
        XCTAssertThrowsError(try BPETrainer(vocabularySize: 200).train(texts: ["x"]))
        XCTAssertThrowsError(try BPETrainer(vocabularySize: 300, specialTokens: ["a", "a"]).train(texts: ["x"]))
    }
}

/// The first `bytes` of the concatenated Shakespeare texts (sorted by name), cut at a newline.
func shakespeareSample(bytes: Int) throws -> String {
    let directory = try assetURL("shakespeare")
    var text = ""
    for file in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() {
        text += String(decoding: try Data(contentsOf: directory.appendingPathComponent(file)), as: UTF8.self)
        if text.utf8.count > bytes { break }
    }
    let cut = text.utf8.index(text.utf8.startIndex, offsetBy: min(bytes, text.utf8.count))
    return String(text[..<cut])
}

