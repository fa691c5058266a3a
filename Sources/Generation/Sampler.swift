import Foundation
import Kernels

/// Picks the next token from a row of logits.
///
/// Greedy takes the arg-max (the lowest id on ties). Otherwise the logits are divided by the
/// temperature, cut to the `topK` largest when set, softmaxed, and one id is drawn with the
/// sampler's own seeded generator, so the same seed gives the same tokens.
public struct Sampler: Sendable {
    public var temperature: Float
    public var topK: Int?
    private var generator: SplitMix64

    /// `temperature` 0 means greedy.
    public init(temperature: Float = 1, topK: Int? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        generator = SplitMix64(seed: seed)
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        precondition(!logits.isEmpty, "Sampler: empty logits")
        if temperature <= 0 || topK == 1 { return Self.argmax(logits) }
        var candidates = Array(logits.indices)
        if let topK, topK > 0, topK < logits.count {
            // Stable order: larger logit first, then lower id.
            candidates.sort { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
            candidates.removeSubrange(topK...)
        }
        let maxLogit = candidates.map { logits[$0] }.max()!
        let weights = candidates.map { exp(Double((logits[$0] - maxLogit) / temperature)) }
        let total = weights.reduce(0, +)
        var threshold = Double(generator.nextUnitFloat()) * total
        for (candidate, weight) in zip(candidates, weights) {
            threshold -= weight
            if threshold < 0 { return candidate }
        }
        return candidates.last!
    }

    /// The index of the largest value, the first one on ties.
    public static func argmax(_ values: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }
}
