import Kernels
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

    func testPickWalksTheRunningSum() {
        // Weights over blocks of 16 and a tail, zeros among them; each threshold's token against
        // a plain running sum in float64 (thresholds within rounding of a boundary skipped).
        var generator = SplitMix64(seed: 9)
        let weights: [Float] = (0..<1003).map { i in i % 7 == 0 ? 0 : generator.nextUnitFloat() }
        let total = weights.withUnsafeBufferPointer { Sampler.sum($0) }
        var prefix = [0.0]
        for w in weights { prefix.append(prefix.last! + Double(w)) }
        XCTAssertEqual(total, prefix.last!, accuracy: 1e-6 * total)
        var checked = 0
        for _ in 0..<3000 {
            let threshold = Double(generator.nextUnitFloat()) * total
            guard prefix.allSatisfy({ abs($0 - threshold) > 1e-6 * total }) else { continue }
            let expected = prefix.indices.dropFirst().first { prefix[$0] > threshold }! - 1
            XCTAssertEqual(weights.withUnsafeBufferPointer { Sampler.pick($0, at: threshold) }, expected, "threshold \(threshold)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 2500)
    }

    func testVocabularyDrawsFollowTheTemperedSoftmax() {
        // 40 logits (two blocks of 16 and a tail of 8) at temperature 0.5: each token's count over
        // 20,000 draws within 5 standard deviations of softmax(logits / 0.5).
        var generator = SplitMix64(seed: 3)
        let logits: [Float] = (0..<40).map { _ in generator.nextUnitFloat() * 2 }
        let weights = logits.map { exp(Double($0) / 0.5) }, total = weights.reduce(0, +)
        var sampler = Sampler(temperature: 0.5, seed: 11)
        var counts = [Int](repeating: 0, count: logits.count)
        let draws = 20_000
        logits.withUnsafeBufferPointer { logits in
            for _ in 0..<draws { counts[sampler.sample(logits)] += 1 }
        }
        for (i, count) in counts.enumerated() {
            let p = weights[i] / total, sd = (Double(draws) * p * (1 - p)).squareRoot()
            XCTAssertEqual(Double(count), Double(draws) * p, accuracy: 5 * sd, "token \(i)")
        }
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

final class SamplingOptionsTests: XCTestCase {
    func draws(_ options: SamplingOptions, _ logits: [Float], count: Int = 2000) -> [Int: Int] {
        var sampler = Sampler(options: options)
        var histogram: [Int: Int] = [:]
        logits.withUnsafeBufferPointer { l in
            for _ in 0..<count { histogram[sampler.sample(l), default: 0] += 1 }
        }
        return histogram
    }

    func testTopPKeepsTheSmallestSetReachingP() {
        // softmax([ln 5, ln 3, ln 1, ln 1]) = [0.5, 0.3, 0.1, 0.1]: top_p 0.75 keeps {0, 1}.
        let logits: [Float] = [log(5), log(3), 0, 0]
        XCTAssertEqual(Set(draws(SamplingOptions(temperature: 1, topP: 0.75, seed: 1), logits).keys), [0, 1])
        XCTAssertEqual(Set(draws(SamplingOptions(temperature: 1, topP: 0.85, seed: 1), logits).keys), [0, 1, 2])
    }

    func testMinPDropsUnlikelyTokens() {
        // p = [0.5, 0.3, 0.1, 0.1]; min_p 0.3 keeps tokens with p >= 0.15.
        let logits: [Float] = [log(5), log(3), 0, 0]
        XCTAssertEqual(Set(draws(SamplingOptions(temperature: 1, minP: 0.3, seed: 2), logits).keys), [0, 1])
    }

    func testPenaltiesAndBias() {
        var options = SamplingOptions(temperature: 0)
        options.logitBias = [2: 10]
        var sampler = Sampler(options: options)
        let logits: [Float] = [3, 2, 1]
        XCTAssertEqual(logits.withUnsafeBufferPointer { sampler.sample($0) }, 2)

        options = SamplingOptions(temperature: 0)
        options.repetitionPenalty = 2  // 3 -> 1.5, below token 1's 2
        sampler = Sampler(options: options)
        sampler.observe([0])
        XCTAssertEqual(logits.withUnsafeBufferPointer { sampler.sample($0) }, 1)

        options = SamplingOptions(temperature: 0)
        options.frequencyPenalty = 0.6  // token 0 seen twice: 3 - 1.2 = 1.8 < 2
        sampler = Sampler(options: options)
        sampler.observe([0, 0])
        XCTAssertEqual(logits.withUnsafeBufferPointer { sampler.sample($0) }, 1)

        // Presence counts a token once however often it appeared: 3 - 0.5 = 2.5 stays above 2,
        // where a frequency penalty of 0.5 on three sightings (3 - 1.5) would not.
        options = SamplingOptions(temperature: 0)
        options.presencePenalty = 0.5
        sampler = Sampler(options: options)
        sampler.observe([0, 0, 0])
        XCTAssertEqual(logits.withUnsafeBufferPointer { sampler.sample($0) }, 0)
        options.presencePenalty = 1.5
        sampler = Sampler(options: options)
        sampler.observe([0])
        XCTAssertEqual(logits.withUnsafeBufferPointer { sampler.sample($0) }, 1)
    }

    func testLogprobsAndAlternatives() {
        var sampler = Sampler(options: SamplingOptions(temperature: 0))
        let logits: [Float] = [0, log(3), 0]
        let token = logits.withUnsafeBufferPointer { sampler.sample($0, alternatives: 2) }
        XCTAssertEqual(token.id, 1)
        XCTAssertEqual(token.logprob, log(0.6), accuracy: 1e-6)
        XCTAssertEqual(token.topAlternatives.map(\.id), [1, 0])
        XCTAssertEqual(token.topAlternatives[1].logprob, log(0.2), accuracy: 1e-6)
    }

    func testProblemsNameTheField() {
        XCTAssertTrue(SamplingOptions(temperature: -1).problems[0].contains("temperature"))
        XCTAssertTrue(SamplingOptions(topP: 0).problems[0].contains("top_p"))
        XCTAssertTrue(SamplingOptions(topK: 0).problems[0].contains("top_k"))
    }
}

final class StopSequenceFilterTests: XCTestCase {
    func testHoldsBackPrefixesAndCutsAtTheStop() {
        var filter = StopSequenceFilter(stops: ["<|im_end|>", "\n\n"])
        XCTAssertEqual(filter.push("Hello <|im").0, "Hello ")
        XCTAssertEqual(filter.push("_e").0, "")
        let (text, stopped) = filter.push("nd|> more")
        XCTAssertEqual(text, "")
        XCTAssertTrue(stopped)

        var other = StopSequenceFilter(stops: ["STOP"])
        XCTAssertEqual(other.push("a S").0, "a ")
        XCTAssertEqual(other.push("x").0, "Sx")
        XCTAssertEqual(other.push("ST").0, "")
        XCTAssertEqual(other.finish(""), "ST")
    }
}

/// The partial selection gives the tokens of the full-sort reference: the same candidates in
/// the same order, so the same draw picks the same token.
final class SamplerSelectionTests: XCTestCase {
    /// The reference: sort every token, cut by top-p then min-p, draw with the same uniform.
    static func reference(_ logits: [Float], temperature: Float, topP: Float?, minP: Float?, uniform: Float) -> Int {
        let order = logits.indices.sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        let maxLogit = logits[order[0]]
        var weights = order.map { exp(Double((logits[$0] - maxLogit) / temperature)) }
        let total = weights.reduce(0, +)
        var keep = weights.count
        if let topP, topP < 1 {
            var cumulative = 0.0
            for (i, w) in weights.enumerated() {
                cumulative += w / total
                if cumulative >= Double(topP) { keep = i + 1; break }
            }
        }
        if let minP, minP > 0 { keep = min(keep, max(1, weights.prefix(keep).firstIndex { $0 < Double(minP) } ?? keep)) }
        weights = Array(weights.prefix(keep))
        var threshold = Double(uniform) * weights.reduce(0, +)
        for (candidate, weight) in zip(order, weights) {
            threshold -= weight
            if threshold < 0 { return candidate }
        }
        return order[keep - 1]
    }

    func testTopPAndMinPPickTheFullSortsToken() {
        var generator = SplitMix64(seed: 4)
        for trial in 0..<200 {
            let vocabulary = 50 + Int(generator.next() % 3000)
            let spread = Float(1 + generator.next() % 8)
            let logits = (0..<vocabulary).map { _ in generator.nextNormal() * spread }
            let topP: Float = [0.5, 0.9, 0.99][trial % 3], minP: Float? = trial % 2 == 0 ? 0.05 : nil
            let seed = generator.next()
            var sampler = Sampler(options: SamplingOptions(temperature: 0.7, topP: topP, minP: minP, seed: seed))
            var copy = SplitMix64(seed: seed)
            let expected = Self.reference(logits, temperature: 0.7, topP: topP, minP: minP, uniform: copy.nextUnitFloat())
            XCTAssertEqual(logits.withUnsafeBufferPointer { sampler.sample($0) }, expected, "trial \(trial)")
        }
    }
}
