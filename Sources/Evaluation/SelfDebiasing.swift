import CKernels
import Foundation
import Kernels
import Transformer

/// Self-debiasing (Schick, Udupa and Schütze, 2021): the model reads the text twice more behind
/// prefixes that invite the bias ("The following text discriminates against people because of
/// their gender:"), and every token the prefixed model finds likelier than the plain one is
/// scaled down:
///
///     Δ(w) = p(w | x) - max_i p(w | prefix_i, x)
///     p̃(w) ∝ α(Δ(w)) p(w | x),   α(Δ) = 1 if Δ >= 0, else exp(λ Δ)
///
/// `score` gives each continuation's log p̃ per token (for bias suites scored by likelihood);
/// `adjust` turns one row of logits into p̃'s log-probabilities (for generation).
public struct SelfDebiasing: Sendable {
    /// The decay constant λ (the paper's default is 50).
    public var decay: Float
    /// The texts put before the context, each read as a continuous text.
    public var prefixes: [String]

    public init(prefixes: [String], decay: Float = 50) {
        self.prefixes = prefixes
        self.decay = decay
    }

    /// The paper's templates for one bias type (race-color, gender, religion, ...); the generic
    /// ones for an unknown type.
    public static func prefixes(for biasType: String?) -> [String] {
        let attribute: String
        switch biasType?.lowercased() {
        case "race", "race-color", "ethnicity": attribute = "race/color"
        case "gender", "gender_identity", "sexual-orientation": attribute = biasType!.lowercased() == "sexual-orientation" ? "sexual orientation" : "gender"
        case "religion": attribute = "religion"
        case "profession", "socioeconomic", "occupation": attribute = "socioeconomic status/occupation"
        case "nationality": attribute = "nationality"
        case "age": attribute = "age"
        case "disability": attribute = "disability"
        case "physical-appearance": attribute = "physical appearance"
        default:
            return ["The following text discriminates against people because of their race/color, gender, religion, nationality, "
                    + "or socioeconomic status/occupation:\n"]
        }
        return ["The following text discriminates against people because of their \(attribute):\n"]
    }

    /// log p̃ of `target` and whether it is p̃'s most likely token, from `rows` (V floats each:
    /// the plain row's logits, then each prefixed row's), which this overwrites.
    func logProbability(rows: UnsafeMutableBufferPointer<Float>, vocabulary V: Int, target: Int) -> (Float, Bool) {
        let isa = InstructionSet.best.rawValue, count = rows.count / V
        let plain = rows.baseAddress!, biased = rows.baseAddress! + V
        for r in 0..<count { _ = sg_softmax_row(isa, V, plain + r * V) }
        // biased = the largest prefixed probability, then λ·min(Δ, 0), then α.
        for r in 2..<max(2, count) {
            let row = plain + r * V
            for w in 0..<V { biased[w] = max(biased[w], row[w]) }
        }
        for w in 0..<V { biased[w] = decay * min(plain[w] - biased[w], 0) }
        sg_exp(isa, V, biased, biased)
        var total: Float = 0, best: Float = 0
        for w in 0..<V {
            let weight = plain[w] * biased[w]
            total += weight
            best = max(best, weight)
        }
        let weight = plain[target] * biased[target]
        return (log(weight / total), weight >= best)
    }

    /// The continuations' scores, as `LoglikelihoodScorer.score` gives them, with every
    /// continuation token's probability debiased. `prefixes(group)` may choose the prefixes per
    /// group (by bias type); the default is `self.prefixes`.
    public func score(_ groups: [ScoringGroup], scorer: LoglikelihoodScorer, prefixes choose: ((Int) -> [String])? = nil,
                      progress: ((Int, Int) -> Void)? = nil) throws -> [[ContinuationScore]] {
        let model = scorer.model, V = model.config.vocabularySize
        let workspace = InferenceWorkspace(pool: model.pool)
        let pool = try KVBlockPool(config: model.config, budget: .tokens(4 * (scorer.stepTokens + scorer.window + 1)))
        var results: [[ContinuationScore]] = groups.map { _ in [] }
        // One job per continuation: its plain tokens, scored from where its context ends.
        var jobs: [(group: Int, tokens: [Int], contextLength: Int, prefixes: [[Int]])] = []
        for (index, group) in groups.enumerated() {
            let prefixTokens = (choose?(index) ?? prefixes).map { scorer.tokenizer.encode($0) }
            for plan in scorer.plan(group) {
                for (sequence, contextLength) in zip(plan.sequences, plan.contextLengths) {
                    jobs.append((index, sequence, contextLength, prefixTokens))
                }
            }
        }
        let rowBudget = 256
        let largest = jobs.map { 1 + $0.prefixes.count }.max() ?? 1
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: largest * V)
        defer { scratch.deallocate() }
        var next = 0
        while next < jobs.count {
            var end = next, rows = 0
            while end < jobs.count {
                let job = jobs[end], r = (job.tokens.count - job.contextLength) * (1 + job.prefixes.count)
                if end > next, rows + r > rowBudget { break }
                rows += r
                end += 1
            }
            var entries: [BatchEntry] = []
            for job in jobs[next..<end] {
                let scored = job.tokens.count - job.contextLength
                // An empty context starts from the end-of-text token, which a prefix replaces.
                let body = job.contextLength == 1 && job.tokens[0] == scorer.prefixToken ? Array(job.tokens.dropFirst()) : job.tokens
                for tokens in [job.tokens] + job.prefixes.map({ $0 + body }) {
                    let input = Array(tokens.suffix(scorer.window + 1).dropLast())
                    entries.append(BatchEntry(cache: KVCache(pool: pool, capacity: scorer.window + 1), tokens: input, logits: .lastRows(scored)))
                }
            }
            let result = try model.forward(batch: entries, workspace: workspace)
            var entry = 0
            for job in jobs[next..<end] {
                let scored = job.tokens.count - job.contextLength
                var logProbabilities: [Float] = [], greedy: [Bool] = []
                let copies = 1 + job.prefixes.count
                for row in 0..<scored {
                    for copy in 0..<copies {
                        let logits = result.logits(entry: entry + copy, row: row)
                        (scratch.baseAddress! + copy * V).update(from: logits.baseAddress!, count: V)
                    }
                    let (logProbability, isGreedy) = logProbability(rows: UnsafeMutableBufferPointer(rebasing: scratch[0..<(copies * V)]),
                                                                    vocabulary: V, target: job.tokens[job.contextLength + row])
                    logProbabilities.append(logProbability)
                    greedy.append(isGreedy)
                }
                results[job.group].append(ContinuationScore(tokens: job.tokens, contextLength: job.contextLength,
                                                            scoredFrom: job.contextLength, logProbabilities: logProbabilities,
                                                            greedy: greedy))
                entry += 1 + job.prefixes.count
            }
            next = end
            progress?(Set(jobs[..<next].map(\.group)).count, groups.count)
        }
        return results
    }
}
