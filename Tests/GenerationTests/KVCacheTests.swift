import Foundation
import XCTest
import Kernels
import TestSupport
@testable import Generation
@testable import Transformer

/// The generation path (a KV cache, a prefill then one token at a time) gives the training
/// pass's full-sequence logits at every position, over the same weights, for both families.
final class KVCacheTests: XCTestCase {
    func testIncrementalDecodingMatchesTheFullForwardPass() throws {
        for name in ["gpt-gelu", "llama-untied", "llama-tied"] {
            let model = try ParityFixture(name).model
            let tokens: [Int32] = [5, 9, 33, 2, 60, 17, 8, 41, 12, 3]
            try model.forward(tokens: tokens, targets: nil, batch: 1, length: tokens.count)
            let full = Array(model.logits)
            let cache = try KVCache(model, capacity: 16)
            // A 6-token prefill (the gemm path), then one token at a time (the decode path).
            var logits = Array(try model.forward(tokens[0..<6].map(Int.init), cache: cache))
            for position in 5..<tokens.count {
                let expected = full[(position * 64)..<((position + 1) * 64)]
                XCTAssertLessThan(zip(logits, expected).map { abs($0 - $1) }.max()!, 1e-4, "\(name) position \(position)")
                if position + 1 < tokens.count { logits = Array(try model.forward([Int(tokens[position + 1])], cache: cache)) }
            }
            XCTAssertThrowsError(try model.forward(Array(repeating: 1, count: 7), cache: cache)) {
                XCTAssertTrue("\($0)".contains("exceeds the KV cache"), "\($0)")
            }
        }
    }

    func testStreamingYieldsTheSameTextAsGenerate() async throws {
        let loaded = try ModelLoader.load(path: try SmolLM2FidelityTests.modelPath())
        let (model, tokenizer, template) = (loaded.model, loaded.tokenizer, loaded.chatTemplate)
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
