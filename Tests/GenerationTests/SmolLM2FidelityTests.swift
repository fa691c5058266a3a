import Foundation
import TestSupport
import XCTest
import BPE
import Kernels
@testable import Generation
@testable import Transformer

/// SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by scripts/fetch-assets.sh smollm2) against a float64
/// numpy forward pass over the same dequantised weights (scripts/make-smollm2-fixtures.py).
final class SmolLM2FidelityTests: XCTestCase {
    static func modelPath() throws -> String {
        try assetURL("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    }

    func testMatchesTheFloat64Reference() throws {
        let loaded = try ModelLoader.load(path: try Self.modelPath())
        let (model, tokenizer, template) = (loaded.model, loaded.tokenizer, loaded.chatTemplate)
        XCTAssertEqual(template?.format, .chatML)
        let fixture = try SafetensorsFile(url: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/smollm2-reference.safetensors"))
        let prompts = try JSONSerialization.jsonObject(with: Data(fixture.metadata["prompts"]!.utf8)) as! [String]
        for (k, prompt) in prompts.enumerated() {
            let ids = try fixture.read("prompt\(k).ids").map { Int($0) }
            XCTAssertEqual(tokenizer.encode(prompt, allowedSpecial: .all), ids, "prompt \(k): tokenization")

            // (a) the last position's distribution: KL(reference || ours) < 1e-4.
            let cache = try KVCache(model, capacity: ids.count + 16)
            let logits = Array(try model.forward(ids, cache: cache))
            let reference = try fixture.read("prompt\(k).logprobs")
            let maxLogit = logits.max()!
            let logNormalizer = log(logits.reduce(0.0) { $0 + exp(Double($1 - maxLogit)) }) + Double(maxLogit)
            var kl = 0.0
            for (r, l) in zip(reference, logits) {
                let p = exp(Double(r))
                kl += p * (Double(r) - (Double(l) - logNormalizer))
            }
            XCTAssertLessThan(kl, 1e-4, "prompt \(k): KL at the last position")
            print("SmolLM2 prompt \(k): KL(reference || ours) = \(kl)")

            // Greedy tokens agree wherever the reference's top-2 margin exceeds 0.05 (teacher forced
            // on the reference's continuation).
            let greedy = try fixture.read("prompt\(k).greedy").map { Int($0) }
            let margins = try fixture.read("prompt\(k).margins")
            var current = logits
            for (step, token) in greedy.enumerated() {
                if margins[step] > 0.05 {
                    XCTAssertEqual(current.withUnsafeBufferPointer { Sampler.argmax($0) }, token, "prompt \(k) step \(step)")
                }
                current = Array(try model.forward([token], cache: cache))
            }
        }
    }

    func testChatAnswersParis() throws {
        let loaded = try ModelLoader.load(path: try Self.modelPath())
        let (model, tokenizer, template) = (loaded.model, loaded.tokenizer, loaded.chatTemplate)
        let prompt = try XCTUnwrap(template).render([.init(role: "user", content: "What is the capital of France?")])
        let generator = Generator(model: model, tokenizer: tokenizer)
        let result = try generator.generate(prompt: tokenizer.encode(prompt, allowedSpecial: .all),
                                            options: GenerationOptions(maxTokens: 20, sampling: SamplingOptions(temperature: 0)))
        XCTAssertTrue(result.text.contains("Paris"), result.text)
        XCTAssertEqual(result.finishReason, .stop)
    }
}
