import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// Generation's path through the model: a KV cache, a prefill, then one token at a time.
final class InferenceTests: XCTestCase {
    /// The cached path gives the training pass's full-sequence logits at every position, over
    /// the same weights, for both families.
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

    /// SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by scripts/fetch-assets.sh smollm2) against a
    /// float64 numpy forward pass over the same dequantised weights
    /// (scripts/make-smollm2-fixtures.py).
    func testMatchesTheFloat64Reference() throws {
        let loaded = try ModelLoader.load(path: try smolLM2Path())
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
                    XCTAssertEqual(current.indices.max { current[$0] < current[$1] }!, token, "prompt \(k) step \(step)")
                }
                current = Array(try model.forward([token], cache: cache))
            }
        }
    }
}
