import Foundation
import Kernels

/// How the next token is chosen from the logits.
public struct SamplingOptions: Sendable, Equatable {
    /// 0 means greedy (the arg-max).
    public var temperature: Float = 1
    public var topK: Int? = nil
    /// Keep the smallest set of tokens whose probabilities sum to at least this.
    public var topP: Float? = nil
    /// Drop tokens less likely than this fraction of the most likely one.
    public var minP: Float? = nil
    /// > 1 discourages tokens already seen (CTRL's rule: positive logits divided, negative multiplied).
    public var repetitionPenalty: Float = 1
    /// OpenAI's penalties: logit -= frequency · count + presence · (count > 0).
    public var frequencyPenalty: Float = 0
    public var presencePenalty: Float = 0
    /// Added to the logits of these ids before anything else (OpenAI's logit_bias).
    public var logitBias: [Int: Float] = [:]
    public var seed: UInt64 = 0

    public init(temperature: Float = 1, topK: Int? = nil, topP: Float? = nil, minP: Float? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
    }

    /// Problems with the values, naming the field; empty when valid.
    public var problems: [String] {
        var found: [String] = []
        if !(temperature >= 0 && temperature.isFinite) { found.append("temperature must be >= 0, got \(temperature)") }
        if let topK, topK < 1 { found.append("top_k must be >= 1, got \(topK)") }
        if let topP, !(topP > 0 && topP <= 1) { found.append("top_p must be in (0, 1], got \(topP)") }
        if let minP, !(minP >= 0 && minP <= 1) { found.append("min_p must be in [0, 1], got \(minP)") }
        if !(repetitionPenalty > 0) { found.append("repetition_penalty must be > 0, got \(repetitionPenalty)") }
        return found
    }
}

/// One sampled token with its log-probability and, when asked, the most likely alternatives.
public struct SampledToken: Sendable, Equatable {
    public var id: Int
    /// ln p(id) under the model's distribution after bias and penalties (temperature 1).
    public var logprob: Float
    public var topAlternatives: [(id: Int, logprob: Float)]

    public static func == (a: SampledToken, b: SampledToken) -> Bool {
        a.id == b.id && a.logprob == b.logprob && a.topAlternatives.map(\.id) == b.topAlternatives.map(\.id)
    }
}

/// Picks next tokens: logit bias, penalties, then greedy or temperature sampling cut by top-k,
/// top-p and min-p, drawing from its own seeded generator (same seed, same tokens).
public struct Sampler: Sendable {
    public var options: SamplingOptions
    private var generator: SplitMix64
    /// How often each token has appeared (prompt and output), for the penalties.
    private var counts: [Int: Int] = [:]
    /// The adjusted logits and the draw's weights: kept between tokens, so that a step allocates
    /// no vocabulary-sized arrays.
    private var adjusted: [Float] = [], weights: [Float] = []

    public init(options: SamplingOptions) {
        self.options = options
        generator = SplitMix64(seed: options.seed)
    }

    /// `temperature` 0 means greedy.
    public init(temperature: Float = 1, topK: Int? = nil, seed: UInt64 = 0) {
        self.init(options: SamplingOptions(temperature: temperature, topK: topK, seed: seed))
    }

    /// Counts tokens for the penalties (call with the prompt, and the sampler adds its own picks).
    public mutating func observe(_ tokens: [Int]) {
        for token in tokens { counts[token, default: 0] += 1 }
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        sample(logits, alternatives: 0).id
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, alternatives: Int) -> SampledToken {
        precondition(!logits.isEmpty, "Sampler: empty logits")
        if adjusted.count == logits.count {
            adjusted.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: logits) }
        } else {
            adjusted = Array(logits)
        }
        for (id, bias) in options.logitBias where id >= 0 && id < adjusted.count { adjusted[id] += bias }
        for (id, count) in counts where id < adjusted.count {
            if options.repetitionPenalty != 1 {
                adjusted[id] = adjusted[id] > 0 ? adjusted[id] / options.repetitionPenalty : adjusted[id] * options.repetitionPenalty
            }
            adjusted[id] -= options.frequencyPenalty * Float(count) + (count > 0 ? options.presencePenalty : 0)
        }
        let logNormalizer = adjusted.withUnsafeBufferPointer { logSumExp($0) }
        let chosen: Int
        if options.temperature == 0 || options.topK == 1 {
            chosen = Self.argmax(adjusted)
        } else {
            chosen = draw(adjusted)
        }
        counts[chosen, default: 0] += 1
        var top: [(id: Int, logprob: Float)] = []
        if alternatives > 0 {
            top = Self.largest(adjusted, count: alternatives).map { ($0, adjusted[$0] - logNormalizer) }
        }
        return SampledToken(id: chosen, logprob: adjusted[chosen] - logNormalizer, topAlternatives: top)
    }

    /// Temperature sampling cut by top-k, then top-p (the smallest set of the most likely
    /// tokens holding at least p of the mass), then min-p. No full-vocabulary sort: top-k keeps a
    /// heap of k; top-p sorts only the tokens above a weight floor that already holds p of the
    /// mass (lowered until it does), which are exactly the first tokens of the full sort.
    private mutating func draw(_ logits: [Float]) -> Int {
        func before(_ a: Int, _ b: Int) -> Bool { logits[a] != logits[b] ? logits[a] > logits[b] : a < b }
        let pool: [Int]? = options.topK.flatMap { $0 < logits.count ? Self.largest(logits, count: $0) : nil }
        let maxLogit = pool.map { logits[$0[0]] } ?? logits.withUnsafeBufferPointer { maximum($0) }
        let temperature = options.temperature
        // Every token's weight exp((logit - max) / temperature) once, by the vectorised exp (the
        // pool's only, with top-k).
        if pool == nil {
            if self.weights.count != logits.count { self.weights = [Float](repeating: 0, count: logits.count) }
            logits.withUnsafeBufferPointer { source in
                self.weights.withUnsafeMutableBufferPointer { _ = exponentialSum(source, shift: maxLogit, scale: 1 / temperature, into: $0) }
            }
        }
        let all = self.weights
        func weight(_ i: Int) -> Double { pool == nil ? Double(all[i]) : exp(Double((logits[i] - maxLogit) / temperature)) }
        if pool == nil, options.topP.map({ $0 >= 1 }) ?? true, options.minP.map({ $0 <= 0 }) ?? true {
            // No cut: draw from every token in index order (the general path below builds index
            // and weight arrays of the whole vocabulary first).
            return all.withUnsafeBufferPointer { Self.pick($0, at: Double(generator.nextUnitFloat()) * Self.sum($0)) }
        }
        let total = pool.map { $0.reduce(0.0) { $0 + weight($1) } } ?? all.withUnsafeBufferPointer { Self.sum($0) }
        // The candidates in order, enough of them to hold the top-p mass.
        var candidates: [Int]
        if let pool {
            candidates = pool
        } else if let topP = options.topP, topP < 1 {
            var floor: Float = 1e-3
            while true {
                var above: [Int] = [], mass = 0.0
                all.withUnsafeBufferPointer { weights in
                    for i in weights.indices where weights[i] >= floor {
                        above.append(i)
                        mass += Double(weights[i])
                    }
                }
                if mass >= Double(topP) * total || floor < 1e-30 {
                    candidates = floor < 1e-30 ? Array(logits.indices) : above
                    break
                }
                floor *= 1e-3
            }
            candidates.sort(by: before)
        } else {
            candidates = Array(logits.indices)
        }
        var weights = candidates.map(weight)
        var keep = weights.count
        if let topP = options.topP, topP < 1 {
            var cumulative = 0.0
            for (i, w) in weights.enumerated() {
                cumulative += w / total
                if cumulative >= Double(topP) { keep = i + 1; break }
            }
        }
        if let minP = options.minP, minP > 0 {
            // Relative to the most likely token (weight 1): an order-free cut, no sort needed.
            let floor = Double(minP)
            if pool != nil || options.topP.map({ $0 < 1 }) == true {
                keep = min(keep, max(1, weights.prefix(keep).firstIndex { $0 < floor } ?? keep))
            } else {
                let kept = candidates.indices.filter { weights[$0] >= floor }
                candidates = kept.map { candidates[$0] }
                weights = kept.map { weights[$0] }
                keep = candidates.count
            }
        }
        let kept = weights.prefix(keep)
        var threshold = Double(generator.nextUnitFloat()) * kept.reduce(0, +)
        for (candidate, weight) in zip(candidates, kept) {
            threshold -= weight
            if threshold < 0 { return candidate }
        }
        return candidates[keep - 1]
    }

    /// Σ values: each block of 16 summed as floats, the blocks and the tail in a double (the
    /// order `pick` walks in, so that a threshold below the total always lands on a value).
    static func sum(_ values: UnsafeBufferPointer<Float>) -> Double {
        var total = 0.0, i = 0
        while i + 16 <= values.count {
            total += Double(block(values, at: i).sum())
            i += 16
        }
        while i < values.count {
            total += Double(values[i])
            i += 1
        }
        return total
    }

    /// The first index whose running sum of `weights` passes `threshold`: whole blocks of 16 are
    /// stepped over by their sums, and only the block holding the threshold is walked value by
    /// value (the last index if rounding leaves the threshold past the end).
    static func pick(_ weights: UnsafeBufferPointer<Float>, at threshold: Double) -> Int {
        var remaining = threshold, i = 0
        while i + 16 <= weights.count {
            let blockSum = Double(block(weights, at: i).sum())
            if remaining < blockSum { break }
            remaining -= blockSum
            i += 16
        }
        while i < weights.count {
            remaining -= Double(weights[i])
            if remaining < 0 { return i }
            i += 1
        }
        return weights.count - 1
    }

    private static func block(_ values: UnsafeBufferPointer<Float>, at i: Int) -> SIMD16<Float> {
        UnsafeRawPointer(values.baseAddress! + i).loadUnaligned(as: SIMD16<Float>.self)
    }

    /// The `count` indices of the largest values, largest first (lower index on ties).
    static func largest(_ values: [Float], count: Int) -> [Int] {
        var heap: [Int] = []  // the kept indices, smallest value first
        func less(_ a: Int, _ b: Int) -> Bool { values[a] != values[b] ? values[a] < values[b] : a > b }
        for i in values.indices {
            if heap.count < count {
                heap.append(i)
                if heap.count == count { heap.sort(by: less) }
            } else if less(heap[0], i) {
                heap[0] = i
                var j = 0
                while j + 1 < heap.count && less(heap[j + 1], heap[j]) { heap.swapAt(j, j + 1); j += 1 }
            }
        }
        return heap.sorted { less($1, $0) }
    }

    /// The index of the largest value, the first one on ties.
    public static func argmax(_ values: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }

    static func argmax(_ values: [Float]) -> Int { values.withUnsafeBufferPointer { argmax($0) } }
}
