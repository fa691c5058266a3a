import Foundation

/// A task's figures: multiple choice (every item has a gold continuation) or language modelling
/// (one continuation each, as LAMBADA's last word).
public struct TaskReport: Sendable {
    public enum Kind: String, Sendable { case multipleChoice = "multiple_choice", continuation }
    public let kind: Kind
    public let items: Int
    /// name -> value; accuracies in [0, 1], each with `<name>_stderr` beside it.
    public let metrics: [String: Double]
    public let seconds: Double

    /// The figures as report.json has them, at top level.
    public var json: [String: Any] {
        var object: [String: Any] = metrics
        object["n"] = items
        object["seconds"] = seconds
        object["kind"] = kind.rawValue
        return object
    }
}

/// Multiple-choice and continuation tasks scored by log-likelihood.
///
/// For multiple choice (lm-evaluation-harness's names, with llama.cpp's as `acc_per_token`):
/// - `acc`: the choice with the highest log-likelihood;
/// - `acc_norm`: the highest log-likelihood divided by the choice's length in characters;
/// - `acc_per_token`: llama.cpp's `--hellaswag` rule: of context + continuation's tokens, the
///   prefix all choices share is dropped and each choice is scored by the mean log-probability
///   of the tokens after it.
/// For continuation tasks: `acc` (every continuation token the most likely, LAMBADA's accuracy),
/// `perplexity` (exp of minus the mean log-likelihood per item) and `bits_per_byte` (minus the
/// log-likelihoods summed, in bits, over the continuations' UTF-8 bytes).
/// Ties go to the first choice, as numpy's argmax and llama.cpp do. Standard errors are the
/// sample standard deviation over items divided by sqrt(n), as lm-evaluation-harness's.
public enum TaskEvaluation {
    public static func evaluate(_ items: [TaskItem], scorer: LoglikelihoodScorer,
                                progress: ((Int, Int) -> Void)? = nil) throws -> TaskReport {
        let start = Date()
        let multipleChoice = items.filter { $0.gold != nil }.count
        guard multipleChoice == 0 || multipleChoice == items.count else {
            throw EvaluationError("the task mixes multiple-choice items (\(multipleChoice)) with single continuations (\(items.count - multipleChoice))")
        }
        let scores = try scorer.score(items.map { ScoringGroup(context: $0.context, continuations: $0.continuations) }, progress: progress)
        let seconds = Date().timeIntervalSince(start)
        if multipleChoice > 0 {
            var correct: [String: [Double]] = ["acc": [], "acc_norm": [], "acc_per_token": []]
            for (item, score) in zip(items, scores) {
                let choice = choose(score, choices: item.choices)
                correct["acc"]!.append(choice.acc == item.gold ? 1 : 0)
                correct["acc_norm"]!.append(choice.accNorm == item.gold ? 1 : 0)
                correct["acc_per_token"]!.append(choice.perToken == item.gold ? 1 : 0)
            }
            var metrics: [String: Double] = [:]
            for (name, values) in correct {
                metrics[name] = mean(values)
                metrics[name + "_stderr"] = standardError(values)
            }
            return TaskReport(kind: .multipleChoice, items: items.count, metrics: metrics, seconds: seconds)
        }
        let greedy = scores.map { $0[0].isGreedy ? 1.0 : 0.0 }
        let logLikelihoods = scores.map { $0[0].logLikelihood }
        let bytes = items.reduce(0) { $0 + $1.continuations[0].utf8.count }
        let metrics = ["acc": mean(greedy), "acc_stderr": standardError(greedy),
                       "perplexity": exp(-mean(logLikelihoods)),
                       "bits_per_byte": -logLikelihoods.reduce(0, +) / (Double(max(1, bytes)) * log(2.0))]
        return TaskReport(kind: .continuation, items: items.count, metrics: metrics, seconds: seconds)
    }

    /// The choice each rule picks from one item's continuation scores.
    public static func choose(_ scores: [ContinuationScore], choices: [String]) -> (acc: Int, accNorm: Int, perToken: Int) {
        // The token prefix every choice shares (llama.cpp's common_prefix), at most all but one of each.
        var common = scores.map { $0.tokens.count - 1 }.min() ?? 0
        for score in scores.dropFirst() { common = min(common, zip(score.tokens, scores[0].tokens).prefix { $0 == $1 }.count) }
        let acc = argmax(scores.map(\.logLikelihood))
        let accNorm = argmax(zip(scores, choices).map { $0.logLikelihood / Double(max(1, $1.count)) })
        let perToken = argmax(scores.map { $0.meanLogProbability(from: common) })
        return (acc, accNorm, perToken)
    }

    static func argmax(_ values: [Double]) -> Int {
        values.indices.reduce(0) { values[$1] > values[$0] ? $1 : $0 }
    }
}

func mean(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }

/// The sample standard deviation (n - 1) over sqrt(n): lm-evaluation-harness's `mean_stderr`.
func standardError(_ values: [Double]) -> Double {
    guard values.count > 1 else { return .nan }
    let m = mean(values)
    let variance = values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)
    return (variance / Double(values.count)).squareRoot()
}
