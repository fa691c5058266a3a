import BPE
import Foundation
import Transformer

/// Log-likelihoods of continuations after contexts, as lm-evaluation-harness defines them:
/// loglikelihood(context, continuation) is the sum of the continuation tokens' log-probabilities,
/// where the continuation's tokens are those of `tokenize(context + continuation)` past
/// `tokenize(context)` (trailing spaces of the context move to the continuation first; an empty
/// context becomes the end-of-text token), and sequences longer than the window lose tokens from
/// the left. `isGreedy` says whether every continuation token was the most likely one.
///
/// Many contexts run in one batched forward pass, and the continuations of one context share its
/// KV blocks (`KVCache.fork`): the context is computed once for all of them.
///
///     let scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer)
///     let scores = try scorer.score([ScoringGroup(context: "The capital of France is", continuations: [" Paris", " Rome"])])
///     scores[0][0].logLikelihood
public struct LoglikelihoodScorer {
    public let model: LanguageModel
    public let tokenizer: Tokenizer
    /// The token an empty context becomes.
    public let prefixToken: Int
    /// The most tokens one sequence runs (the model's context length by default).
    public let window: Int
    /// Rows (tokens) one batched step runs, roughly: more fills the gemms better, and costs memory.
    public var stepTokens = 1024

    public init(model: LanguageModel, tokenizer: Tokenizer, window: Int? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.window = min(window ?? model.config.contextLength, model.config.contextLength)
        prefixToken = tokenizer.endOfTextToken ?? 0
    }

    /// The tokens of one group: every continuation's whole sequence, where its context ends, and
    /// how many leading tokens all of them share (run once).
    struct Plan {
        var sequences: [[Int]]
        var contextLengths: [Int]
        var shared: Int
        var tokenCount: Int { shared + sequences.reduce(0) { $0 + $1.count - shared } }
    }

    func plan(_ group: ScoringGroup) -> [Plan] {
        // lm-eval moves the context's trailing whitespace to the front of each continuation.
        let end = group.context.lastIndex { !$0.isWhitespace }.map(group.context.index(after:)) ?? group.context.startIndex
        let context = group.context[..<end], spaces = group.context[end...]
        let contextTokens = context.isEmpty ? [prefixToken] : tokenizer.encode(String(context))
        var sequences: [[Int]] = [], contextLengths: [Int] = [], cut = false
        for continuation in group.continuations {
            let tail = String(spaces) + continuation
            var whole = context.isEmpty ? contextTokens + tokenizer.encode(tail) : tokenizer.encode(String(context) + tail)
            var contextLength = contextTokens.count
            // Too long for the window: cut from the left, keeping at least one token of context.
            let drop = max(0, whole.count - (window + 1))
            whole.removeFirst(drop)
            cut = cut || drop > 0
            contextLength = max(1, contextLength - drop)
            sequences.append(whole)
            contextLengths.append(min(contextLength, whole.count - 1))
        }
        // Sequences cut from the left share nothing: run them apart.
        if cut || sequences.count == 1 {
            return sequences.indices.map { Plan(sequences: [sequences[$0]], contextLengths: [contextLengths[$0]], shared: contextLengths[$0]) }
        }
        var shared = contextLengths.min()!
        for sequence in sequences.dropFirst() {
            shared = min(shared, zip(sequence, sequences[0]).prefix { $0 == $1 }.count)
        }
        return [Plan(sequences: sequences, contextLengths: contextLengths, shared: max(1, shared))]
    }

    /// Scores every group's continuations, in order. `progress` hears (groups done, groups).
    public func score(_ groups: [ScoringGroup], progress: ((Int, Int) -> Void)? = nil) throws -> [[ContinuationScore]] {
        let plans = groups.map(plan)
        // Steps of whole groups, each about stepTokens tokens (at least one group), and the KV
        // positions each needs: its tokens plus a partly filled block per sequence.
        var steps: [Range<Int>] = [], largest = 0
        var next = 0
        while next < plans.count {
            var end = next, positions = 0
            while end < plans.count {
                let cost = plans[end].reduce(0) { $0 + $1.tokenCount + 16 * $1.sequences.count }
                if end > next, positions + cost > stepTokens { break }
                positions += cost
                end += 1
            }
            steps.append(next..<end)
            largest = max(largest, positions)
            next = end
        }
        let pool = try KVBlockPool(config: model.config, budget: .tokens(largest + 64))
        let workspace = InferenceWorkspace(pool: model.pool)
        var results: [[ContinuationScore]] = groups.map { _ in [] }
        for step in steps {
            let scored = try run(plans[step].flatMap { $0 }, pool: pool, workspace: workspace)
            var index = 0
            for group in step {
                let count = plans[group].reduce(0) { $0 + $1.sequences.count }
                results[group] = Array(scored[index..<(index + count)])
                index += count
            }
            progress?(step.upperBound, plans.count)
        }
        return results
    }

    /// Two batched passes: every plan's shared tokens but the last (no logits), then every
    /// continuation from the last shared token on, in a fork of its plan's cache.
    private func run(_ plans: [Plan], pool: KVBlockPool, workspace: InferenceWorkspace) throws -> [ContinuationScore] {
        let caches = plans.map { _ in KVCache(pool: pool, capacity: window + 1) }
        let prefixes = plans.indices.filter { plans[$0].shared > 1 }.map { index in
            BatchEntry(cache: caches[index], tokens: Array(plans[index].sequences[0][..<(plans[index].shared - 1)]), logits: .none)
        }
        if !prefixes.isEmpty { _ = try model.forward(batch: prefixes, workspace: workspace) }
        var entries: [BatchEntry] = [], owners: [(plan: Int, sequence: Int)] = []
        for (index, plan) in plans.enumerated() {
            for (s, sequence) in plan.sequences.enumerated() {
                let cache = s == plan.sequences.count - 1 ? caches[index] : caches[index].fork()
                entries.append(BatchEntry(cache: cache, tokens: Array(sequence[(plan.shared - 1)..<(sequence.count - 1)]), logits: .none,
                                          targets: Array(sequence[plan.shared...])))
                owners.append((index, s))
            }
        }
        let result = try model.forward(batch: entries, workspace: workspace)
        return owners.enumerated().map { entry, owner in
            let plan = plans[owner.plan]
            return ContinuationScore(tokens: plan.sequences[owner.sequence], contextLength: plan.contextLengths[owner.sequence],
                                     scoredFrom: plan.shared, logProbabilities: result.logProbabilities[entry]!,
                                     greedy: result.isGreedy[entry]!)
        }
    }
}

/// One context and the continuations to score after it (the choices of a multiple-choice item).
public struct ScoringGroup: Sendable {
    public var context: String
    public var continuations: [String]

    public init(context: String, continuations: [String]) {
        self.context = context
        self.continuations = continuations
    }
}

/// One continuation's scores: the log-probability of every token from `scoredFrom` on.
public struct ContinuationScore: Sendable {
    /// Context and continuation, as run (cut from the left to the window).
    public let tokens: [Int]
    /// `tokens[contextLength...]` are the continuation's, by lm-evaluation-harness's split.
    public let contextLength: Int
    /// The first position with a score.
    public let scoredFrom: Int
    /// log p(tokens[i] | tokens[..<i]) for i in scoredFrom..<tokens.count.
    public let logProbabilities: [Float]
    /// Whether tokens[i] was the most likely token there, for the same i.
    public let greedy: [Bool]

    /// lm-evaluation-harness's loglikelihood: the continuation tokens' log-probabilities summed.
    public var logLikelihood: Double { logProbabilities[(contextLength - scoredFrom)...].reduce(0) { $0 + Double($1) } }
    /// lm-evaluation-harness's is_greedy: every continuation token was the most likely.
    public var isGreedy: Bool { greedy[(contextLength - scoredFrom)...].allSatisfy { $0 } }
    /// The continuation's token count.
    public var continuationTokens: Int { tokens.count - contextLength }

    /// The mean log-probability of tokens[from...] (llama.cpp's HellaSwag score with `from` the
    /// prefix all choices share).
    public func meanLogProbability(from: Int) -> Double {
        let scores = logProbabilities[(max(from, scoredFrom) - scoredFrom)...]
        return scores.reduce(0) { $0 + Double($1) } / Double(max(1, scores.count))
    }
}
