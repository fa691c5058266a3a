import BPE
import Foundation
import TestSupport
import XCTest
@testable import Generation
@testable import Transformer

/// Generation from self-debiased probabilities.
final class SelfDebiasingTests: XCTestCase {
    func testDebiasedGreedyGenerationFollowsTheFormula() throws {
        let model = try ParityFixture("llama-untied").model
        let tokenizer = try BPETrainer(vocabularySize: 300).train(texts: [String(repeating: "a tiny corpus for a tiny tokenizer. ", count: 30)])
        let prompt = [5, 9, 33, 2], prefix = "%%&"  // byte ids below 64, as the model's vocabulary
        let generator = Generator(model: model, tokenizer: tokenizer, endTokens: [])
        generator.debiasing = SelfDebiasing(prefixes: [prefix], decay: 50)
        let options = GenerationOptions(maxTokens: 5, sampling: SamplingOptions(temperature: 0))
        let tokens = try generator.generate(prompt: prompt, options: options).tokens
        // Each token is the argmax of p(w|x) α(Δ(w)) computed in float64 from separate single-sequence passes.
        var context = prompt
        for token in tokens {
            func probabilities(_ ids: [Int]) throws -> [Double] {
                let logits = try model.forward(ids, cache: try KVCache(model, capacity: ids.count)).map(Double.init)
                let top = logits.max()!, sum = logits.reduce(0) { $0 + exp($1 - top) }
                return logits.map { exp($0 - top) / sum }
            }
            let p = try probabilities(context), q = try probabilities(tokenizer.encode(prefix) + context)
            let weights = p.indices.map { w in p[w] - q[w] >= 0 ? p[w] : p[w] * exp(50 * (p[w] - q[w])) }
            XCTAssertEqual(token, weights.indices.max { weights[$0] < weights[$1] }!)
            context.append(token)
        }
        // A prefix that changes nothing leaves sampled generation as it was.
        generator.debiasing = SelfDebiasing(prefixes: [""])
        let sampled = GenerationOptions(maxTokens: 8, sampling: SamplingOptions(temperature: 0.9, seed: 4))
        let debiased = try generator.generate(prompt: prompt, options: sampled).tokens
        generator.debiasing = nil
        XCTAssertEqual(debiased, try generator.generate(prompt: prompt, options: sampled).tokens)
    }
}
