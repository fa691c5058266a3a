import BPE
import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// `GGUFExport` writes what llama.cpp's tools read (gguf-py checks the file) and what our loader
/// runs again: the same logits and greedy tokens as the model it came from, for both families.
    /// A small trained tokenizer and a random model over its vocabulary, as `gpt train` makes.
func exportableModel(_ family: ModelConfig.Family) throws -> (LanguageModel, Tokenizer) {
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

final class GGUFExportTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

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
            let (model, tokenizer) = try exportableModel(family)
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
        let (model, tokenizer) = try exportableModel(.llama)
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
        let (model, tokenizer) = try exportableModel(.llama)
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

/// A GGUF model trains in two ways: its quantised matrices frozen in place (the fp32 norms train,
/// the gradient flows through the quantised linears to them), or dequantised whole into fp32
/// (full fine-tuning: every tensor trains).
final class GGUFTrainingTests: XCTestCase {
    func testFrozenQuantizedAndDequantizedTraining() throws {
        let (source, tokenizer) = try exportableModel(.llama)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("train-\(UUID()).gguf")
        defer { try? FileManager.default.removeItem(at: url) }
        for i in source.parameters.indices { source.parameters[i] /= 8 }
        try GGUFExport.write(source, tokenizer: tokenizer, chatTemplate: nil, type: .q8_0, to: url)
        let file = try GGUFFile(url: url)
        let tokens = (0..<16).map { Int32(($0 * 37) % tokenizer.vocabularySize) }
        let targets = (0..<16).map { Int32(($0 * 11 + 5) % tokenizer.vocabularySize) }

        let frozen = try ModelLoader.model(from: file, weights: .inPlace, trainable: true)
        XCTAssertEqual(Set(frozen.layout.entries.map(\.name)),
                       ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "blk.1.attn_norm.weight", "blk.1.ffn_norm.weight",
                        "output_norm.weight"])
        func loss() throws -> Float { try XCTUnwrap(try frozen.forward(tokens: tokens, targets: targets, batch: 2, length: 8)) }
        _ = try loss()
        frozen.zeroGradients()
        frozen.backward()
        let gradient = Array(frozen.gradients), original = Array(frozen.parameters)
        XCTAssertGreaterThan(gradient.map(abs).max()!, 0)
        // Along a random direction in the norms' weights: the analytic and numerical derivatives agree.
        var generator = SplitMix64(seed: 5)
        let direction = original.map { _ in generator.nextNormal() }, epsilon: Float = 1e-2
        for i in original.indices { frozen.parameters[i] = original[i] + epsilon * direction[i] }
        let up = try loss()
        for i in original.indices { frozen.parameters[i] = original[i] - epsilon * direction[i] }
        let down = try loss()
        let numerical = Double(up - down) / Double(2 * epsilon)
        let analytic = zip(gradient, direction).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(numerical, analytic, accuracy: 0.02 * abs(analytic) + 1e-3)

        let full = try ModelLoader.model(from: file, weights: .dequantized, trainable: true)
        XCTAssertEqual(full.layout.totalCount, full.config.parameterCount)
        let fullLoss = try XCTUnwrap(try full.forward(tokens: tokens, targets: targets, batch: 2, length: 8))
        _ = frozen.parameters.update(fromContentsOf: original)
        XCTAssertEqual(fullLoss, try loss(), accuracy: 1e-4, "the same weights, dequantised or in place")
        full.zeroGradients()
        full.backward()
        XCTAssertGreaterThan(full.gradient("blk.0.attn_qkv.weight").map(abs).max()!, 0)
    }
}
