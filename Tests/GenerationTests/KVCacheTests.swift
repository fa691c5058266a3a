import Foundation
import XCTest
import Kernels
@testable import Generation
@testable import Transformer

/// The inference path (KV cache, prefill then one token at a time) gives the training model's
/// full-sequence logits at every position.
final class KVCacheTests: XCTestCase {
    func testIncrementalDecodingMatchesTheFullForwardPass() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../TransformerTests/Fixtures/gpt-gelu.safetensors")
        let file = try SafetensorsFile(url: url)
        let gpt = try GPT(config: .gpt2(layers: 2, heads: 4, embedding: 32, vocabularySize: 64, contextLength: 16))
        for entry in gpt.layout.entries { try file.read("param." + entry.name, into: gpt.parameter(entry.name)) }
        let tokens: [Int32] = [5, 9, 33, 2, 60, 17, 8, 41, 12, 3]
        try gpt.forward(tokens: tokens, targets: nil, batch: 1, length: tokens.count)
        let full = Array(gpt.logits)
        let model = try ModelLoader.inferenceModel(from: gpt)
        try model.reset(capacity: 16)
        // A 4-token prefill, then one token at a time.
        var logits = Array(try model.forward(tokens[0..<4].map(Int.init)))
        for position in 3..<tokens.count {
            let expected = full[(position * 64)..<((position + 1) * 64)]
            XCTAssertLessThan(zip(logits, expected).map { abs($0 - $1) }.max()!, 1e-4, "position \(position)")
            if position + 1 < tokens.count { logits = Array(try model.forward([Int(tokens[position + 1])])) }
        }
        XCTAssertThrowsError(try model.forward(Array(repeating: 1, count: 7))) {
            XCTAssertTrue("\($0)".contains("exceeds the KV cache"), "\($0)")
        }
    }

    func testStreamingYieldsTheSameTextAsGenerate() async throws {
        let (model, tokenizer, template) = try ModelLoader.load(path: try SmolLM2FidelityTests.modelPath())
        let prompt = tokenizer.encode(try XCTUnwrap(template).render([.init(role: "user", content: "Name a color.")]), allowedSpecial: .all)
        let options = GenerationOptions(maxTokens: 12, sampling: SamplingOptions(temperature: 0.8, seed: 9))
        let generator = Generator(model: model, tokenizer: tokenizer)
        let direct = try generator.generate(prompt: prompt, options: options).text
        var streamed = ""
        for try await piece in generator.stream(prompt: prompt, options: options) { streamed += piece }
        XCTAssertEqual(streamed, direct)
        XCTAssertFalse(direct.isEmpty)
    }
}
