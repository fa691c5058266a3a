import Foundation
import Transformer

/// Perplexity of a text under a model, by the two rules people compare against:
///
/// - `rolling` (lm-evaluation-harness's `loglikelihood_rolling`): every token is predicted
///   exactly once, the first from the end-of-text token alone, each later window of up to
///   `window` predicted tokens conditioned on as much preceding text as fits in the window.
///   With a `stride` below the window, windows overlap (Hugging Face's strided perplexity):
///   each predicts the next `stride` tokens with up to `window - stride` tokens of context more.
/// - `windows(size:scoreFrom:)` (llama.cpp's `llama-perplexity`): non-overlapping windows of
///   `size` tokens from token 0 with no BOS added; in each, only positions `scoreFrom`..<size-1
///   predict (the second half of each window with the usual `size/2`).
///
/// Windows run through the batched forward several at a time, scored with per-position
/// log-probabilities (their V-wide logits are never kept).
///
///     let score = try Perplexity.evaluate(model, tokens: ids, rule: .windows(size: 512, scoreFrom: 256))
///     score.perplexity
public enum Perplexity {
    public enum Rule: Sendable, Equatable {
        case rolling(window: Int, stride: Int? = nil, prefixToken: Int)
        case windows(size: Int, scoreFrom: Int)
    }

    /// One forward pass's worth of work: run `tokens`, score `targets` at rows `from`...
    struct Window: Equatable {
        var tokens: [Int]
        var targets: [Int]
        /// Rows before this one predict nothing scored.
        var from: Int
    }

    static func windows(_ ids: [Int], rule: Rule) throws -> [Window] {
        switch rule {
        case .rolling(let size, let strideOption, let prefix):
            let step = strideOption ?? size
            guard size >= 1 else { throw ModelError("the window must be at least 1 token, got \(size)") }
            guard step >= 1, step <= size else { throw ModelError("the stride must be 1...\(size) tokens (the window), got \(step)") }
            // Predict ids[start..<end] from the `size` tokens ending just before `end - 1`.
            // full[p] predicts ids[p]: the prefix token predicts the first.
            let full = [prefix] + ids
            var result: [Window] = []
            var start = 0
            while start < ids.count {
                let end = min(ids.count, start + step)
                let tokens = Array(full[max(0, end - size)..<end]), targets = Array(ids[max(0, end - size)..<end])
                result.append(Window(tokens: tokens, targets: targets, from: tokens.count - (end - start)))
                start = end
            }
            return result
        case .windows(let size, let scoreFrom):
            guard size >= 2, scoreFrom >= 0, scoreFrom < size - 1 else {
                throw ModelError("windows of \(size) tokens scored from \(scoreFrom): need size >= 2 and 0 <= score-from < size - 1")
            }
            guard ids.count >= size else { throw ModelError("the text has \(ids.count) tokens, fewer than one window of \(size)") }
            return stride(from: 0, through: ids.count - size, by: size).map { first in
                let window = Array(ids[first..<(first + size)])
                return Window(tokens: Array(window.dropLast()), targets: Array(window.dropFirst()), from: scoreFrom)
            }
        }
    }

    /// The summed negative log-likelihood of the scored tokens and their count (bytes and words
    /// are the caller's: they depend on the text, not the tokens).
    public static func evaluate(_ model: LanguageModel, tokens ids: [Int], rule: Rule, batch: Int = 4,
                                progress: ((Int, Int) -> Void)? = nil) throws -> (negativeLogLikelihood: Double, tokens: Int) {
        let windows = try windows(ids, rule: rule)
        guard let longest = windows.map(\.tokens.count).max(), longest <= model.config.contextLength else {
            throw ModelError("a window of \(windows.map(\.tokens.count).max() ?? 0) tokens exceeds the model's context length \(model.config.contextLength)")
        }
        let pool = try KVBlockPool(config: model.config, budget: .tokens(batch * (longest + 16)))
        let workspace = InferenceWorkspace(pool: model.pool)
        var total = 0.0, counted = 0, done = 0
        for group in stride(from: 0, to: windows.count, by: batch).map({ Array(windows[$0..<min(windows.count, $0 + batch)]) }) {
            let entries = group.map { window in
                BatchEntry(cache: KVCache(pool: pool, capacity: longest), tokens: window.tokens, logits: .none, targets: window.targets)
            }
            let result = try model.forward(batch: entries, workspace: workspace)
            for (index, window) in group.enumerated() {
                let scores = result.logProbabilities[index]!
                for row in window.from..<window.tokens.count { total -= Double(scores[row]) }
                counted += window.tokens.count - window.from
            }
            done += group.count
            progress?(done, windows.count)
        }
        return (total, counted)
    }
}
