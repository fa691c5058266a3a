import BPE
import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// `GGUFExport` writes what llama.cpp's tools read (gguf-py checks the file) and what our loader
/// runs again: the same logits and greedy tokens as the model it came from, for both families.
final class GGUFExportTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// A small trained tokenizer and a random model over its vocabulary, as `gpt train` makes.
    func makeModel(_ family: ModelConfig.Family) throws -> (LanguageModel, Tokenizer) {
        let text = String(repeating: "the quick brown fox jumps over the lazy dog; ", count: 40)
        let tokenizer = try BPETrainer(vocabularySize: 300, specialTokens: ["<|endoftext|>"]).train(texts: [text])
        let config: ModelConfig = family == .llama
            ? .llama(layers: 2, heads: 4, keyValueHeads: 2, embedding: 64, hidden: 96, vocabularySize: tokenizer.vocabularySize,
                     contextLength: 64, tiedEmbeddings: false)
            : .gpt2(layers: 2, heads: 4, embedding: 64, vocabularySize: tokenizer.vocabularySize, contextLength: 64)
        let model = try LanguageModel(config: config, trainable: false)
        model.initializeWeights(seed: 3)
        // Larger than the init scale, so the greedy path is not flat.
        for i in model.parameters.indices { model.parameters[i] *= 8 }
        return (model, tokenizer)
    }

    func greedy(_ model: LanguageModel, from prompt: [Int], steps: Int) throws -> (tokens: [Int], firstLogits: [Float]) {
        let cache = try KVCache(model, capacity: prompt.count + steps)
        var logits = try model.forward(prompt, cache: cache)
        let first = Array(logits)
        var tokens: [Int] = []
        for _ in 0..<steps {
            let next = logits.indices.max { logits[$0] < logits[$1] }!
            tokens.append(next)
            logits = try model.forward([next], cache: cache)
        }
        return (tokens, first)
    }

    func testRoundTripGivesTheSameLogitsAndGreedyTokens() throws {
        for family in [ModelConfig.Family.llama, .gpt2] {
            let (model, tokenizer) = try makeModel(family)
            let prompt = tokenizer.encode("the lazy fox")
            let original = try greedy(model, from: prompt, steps: 24)
            for (type, tolerance) in [(GGMLType.f32, Float(1e-5)), (.q8_0, 0.02)] {
                let url = directory.appendingPathComponent("\(family)-\(type).gguf")
                try GGUFExport.write(model, tokenizer: tokenizer, chatTemplate: nil, type: type, to: url)
                let file = try GGUFFile(url: url)
                let loaded = try ModelLoader.model(from: file)
                XCTAssertEqual(loaded.config.layerCount, 2)
                XCTAssertEqual(try Tokenizer.fromGGUF(file).encode("the lazy fox"), prompt)
                let again = try greedy(loaded, from: prompt, steps: 24)
                // Relative to the largest logit: Q8_0 rounds each weight to 1/254 of its block's range.
                let error = zip(again.firstLogits, original.firstLogits).map { abs($0 - $1) }.max()!
                let scale = original.firstLogits.map(abs).max()!
                XCTAssertLessThan(error, tolerance * scale, "\(family) \(type): logits (largest \(scale))")
                if type == .f32 { XCTAssertEqual(again.tokens, original.tokens, "\(family): greedy tokens") }
            }
        }
    }

    func testGGUFPyReadsTheExport() throws {
        let (model, tokenizer) = try makeModel(.llama)
        let url = directory.appendingPathComponent("model.gguf")
        try GGUFExport.write(model, tokenizer: tokenizer, chatTemplate: "{{ messages }}", type: .q4_0, to: url)
        let output = try runPython("""
            import sys
            from gguf import GGUFReader
            r = GGUFReader(sys.argv[1])
            f = r.fields
            print(bytes(f["general.architecture"].parts[-1]).decode())
            print(int(f["llama.block_count"].parts[-1][0]), int(f["llama.attention.head_count_kv"].parts[-1][0]))
            print(bytes(f["tokenizer.chat_template"].parts[-1]).decode())
            for t in r.tensors:
                if t.name.startswith("blk.0.") or not t.name.startswith("blk."):
                    print(t.name, t.tensor_type.name, list(map(int, t.shape)))
            """, [url.path])
        let lines = output.split(separator: "\n").map(String.init)
        XCTAssertEqual(Array(lines.prefix(3)), ["llama", "2 2", "{{ messages }}"])
        for expected in ["blk.0.attn_q.weight Q4_0 [64, 64]", "blk.0.attn_k.weight Q4_0 [64, 32]", "blk.0.ffn_gate.weight Q4_0 [64, 96]",
                         "blk.0.attn_norm.weight F32 [64]", "output.weight Q4_0 [64, \(tokenizer.vocabularySize)]"] {
            XCTAssertTrue(lines.contains(expected), "\(expected) in \(lines)")
        }
    }

    func testTypesThatCannotBeExportedAreRefused() throws {
        let (model, tokenizer) = try makeModel(.llama)
        let url = directory.appendingPathComponent("bad.gguf")
        XCTAssertThrowsError(try GGUFExport.write(model, tokenizer: tokenizer, chatTemplate: nil, type: .bf16, to: url)) {
            XCTAssertTrue("\($0)".contains("cannot export as BF16"), "\($0)")
        }
        // 96 columns of ffn_down: not a whole number of 32-element blocks for Q4_0.
        let odd = try LanguageModel(config: .llama(layers: 1, heads: 2, keyValueHeads: 1, embedding: 64, hidden: 80,
                                                   vocabularySize: tokenizer.vocabularySize, contextLength: 16))
        XCTAssertThrowsError(try GGUFExport.write(odd, tokenizer: tokenizer, chatTemplate: nil, type: .q4_0, to: url)) {
            XCTAssertTrue("\($0)".contains("blk.0.ffn_down.weight"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }
}
