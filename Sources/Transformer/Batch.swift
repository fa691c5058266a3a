/// One sequence's part of a batched step (`LanguageModel.forward(batch:workspace:)`): its tokens
/// run at the cache's next positions.
public struct BatchEntry {
    /// Which rows' logits come back: none (a prompt chunk before the last), the last row (to
    /// sample the next token), the last n rows, or every row.
    public enum Logits: Sendable { case none, last, lastRows(Int), all }

    public var cache: KVCache
    public var tokens: [Int]
    public var logits: Logits
    /// For scoring: the token that follows each row (-1: that row is not scored); the
    /// log-probability of each comes back, and whether it is the most likely token.
    public var targets: [Int]?

    public init(cache: KVCache, tokens: [Int], logits: Logits = .last, targets: [Int]? = nil) {
        self.cache = cache
        self.tokens = tokens
        self.logits = logits
        self.targets = targets
    }
}

/// What a batched step returns, as views into the workspace (valid until its next use).
public struct BatchResult {
    /// The logits rows asked for, V floats each, entries in order.
    public let logits: UnsafeBufferPointer<Float>
    public let vocabularySize: Int
    /// For each entry, its rows of `logits`.
    public let ranges: [Range<Int>]
    /// For each entry with targets, log p(target) at each of its rows (NaN where the target was -1).
    public let logProbabilities: [[Float]?]
    /// For each entry with targets, whether the target is the most likely token at each of its rows
    /// (lm-evaluation-harness's `is_greedy`; false where the target was -1).
    public let isGreedy: [[Bool]?]

    /// Row `row` of entry `entry`'s logits (its last, by default).
    public func logits(entry: Int, row: Int? = nil) -> UnsafeBufferPointer<Float> {
        let r = ranges[entry].lowerBound + (row ?? (ranges[entry].count - 1))
        precondition(ranges[entry].contains(r), "BatchResult: entry \(entry) has no logits row \(row ?? -1)")
        return UnsafeBufferPointer(rebasing: logits[(r * vocabularySize)..<((r + 1) * vocabularySize)])
    }
}
