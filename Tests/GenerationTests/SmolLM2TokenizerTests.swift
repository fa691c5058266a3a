import Foundation
import TestSupport
import XCTest
import BPE
@testable import Transformer

/// SmolLM2's tokenizer from GGUF metadata against Hugging Face `tokenizers` built from the same
/// vocabulary (Digits + ByteLevel, as SmolLM2's tokenizer.json), on the torture text.
final class SmolLM2TokenizerTests: XCTestCase {
    func testMatchesHuggingFaceTokenizers() throws {
        let path = try smolLM2Path()
        let tokenizer = try Tokenizer.fromGGUF(try GGUFFile(url: URL(fileURLWithPath: path)))
        XCTAssertEqual(tokenizer.preTokenizer, .smollm)
        let torture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../BPETests/Fixtures/torture.txt")
        let output = try runPython("""
            import sys, json
            from gguf import GGUFReader
            from tokenizers import Tokenizer, models, pre_tokenizers
            r = GGUFReader(sys.argv[1])
            tokens = r.fields["tokenizer.ggml.tokens"].contents()
            merges = [tuple(m.split(" ")) for m in r.fields["tokenizer.ggml.merges"].contents()]
            t = Tokenizer(models.BPE({s: i for i, s in enumerate(tokens)}, merges))
            t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
            text = open(sys.argv[2], "rb").read().decode("utf-8")
            print(json.dumps([t.encode(line).ids for line in text.split("\\n")]))
            """, [path, torture.path])
        let expected = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [[Int]]
        // Split bytes, as Python does: Swift's String treats "\r\n" as one Character.
        let lines = try Data(contentsOf: torture).split(separator: 10, omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(lines.count, expected.count)
        for (line, ids) in zip(lines, expected) {
            XCTAssertEqual(tokenizer.encodeOrdinary(line), ids, line.debugDescription)
        }
    }
}

