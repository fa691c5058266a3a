import XCTest
@testable import Generation

final class SamplerTests: XCTestCase {
    func testGreedyTakesTheFirstMaximum() {
        var sampler = Sampler(temperature: 0)
        [0.5, 3, -1, 3].withUnsafeBufferPointer { logits in
            XCTAssertEqual(sampler.sample(logits), 1)
        }
    }

    func testTopKNeverLeavesTheTopK() {
        var sampler = Sampler(temperature: 5, topK: 2, seed: 7)
        let logits: [Float] = [1, 4, 0, 3.9, -2]
        logits.withUnsafeBufferPointer { logits in
            let picks = (0..<500).map { _ in sampler.sample(logits) }
            XCTAssertEqual(Set(picks), [1, 3])
        }
    }

    func testFrequenciesFollowTheSoftmax() {
        // Probabilities softmax([0, ln 3]) = [0.25, 0.75]; 4000 draws: sd of the count is ~27.
        var sampler = Sampler(temperature: 1, seed: 42)
        let logits: [Float] = [0, Float(log(3.0))]
        let ones = logits.withUnsafeBufferPointer { logits in
            (0..<4000).reduce(0) { count, _ in count + sampler.sample(logits) }
        }
        XCTAssertEqual(Double(ones), 3000, accuracy: 140)
    }

    func testSameSeedSameTokens() {
        let logits: [Float] = (0..<50).map { Float($0 % 7) * 0.3 }
        func draw(seed: UInt64) -> [Int] {
            var sampler = Sampler(temperature: 0.8, seed: seed)
            return logits.withUnsafeBufferPointer { l in (0..<64).map { _ in sampler.sample(l) } }
        }
        XCTAssertEqual(draw(seed: 3), draw(seed: 3))
        XCTAssertNotEqual(draw(seed: 3), draw(seed: 4))
    }
}
