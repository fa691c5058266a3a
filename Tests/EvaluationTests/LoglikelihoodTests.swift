import BPE
import Foundation
import TestSupport
import XCTest
@testable import Evaluation
@testable import Transformer

/// Log-likelihood scoring against one sequence at a time in float64: each continuation token's
/// log-probability from the single-sequence forward pass's logits.
final class LoglikelihoodTests: XCTestCase {
    /// A byte-level tokenizer for the 64-token fixture models: its ids are the bytes, and text of
    /// digits, spaces and punctuation stays within ids 0..<64, as no merge was learnt for it.
    static func smallTokenizer() throws -> Tokenizer {
        try BPETrainer(vocabularySize: 300).train(texts: [String(repeating: "a tiny corpus for a tiny tokenizer. ", count: 30)])
    }

    /// log p(tokens[i] | tokens[..<i]) for i in from..<count, and whether each is the argmax, in Double.
    static func reference(_ model: LanguageModel, _ tokens: [Int], from: Int) throws -> (logProbabilities: [Double], greedy: [Bool]) {
        var result: (logProbabilities: [Double], greedy: [Bool]) = ([], [])
        for i in from..<tokens.count {
            let cache = try KVCache(model, capacity: tokens.count)
            let logits = try model.forward(Array(tokens[..<i]), cache: cache).map(Double.init)
            let top = logits.max()!
            let logSumExp = top + log(logits.reduce(0) { $0 + exp($1 - top) })
            result.logProbabilities.append(logits[tokens[i]] - logSumExp)
            result.greedy.append(logits[tokens[i]] == top)
        }
        return result
    }

    func testScoresEqualOneSequenceAtATime() throws {
        let tokenizer = try Self.smallTokenizer()
        for name in ["gpt-gelu", "llama-untied"] {
            let model = try ParityFixture(name).model
            var scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer, window: 12)
            scorer.stepTokens = 40  // several steps
            let groups = [
                ScoringGroup(context: "12,34 ", continuations: ["567", "89", "5678", "?"]),  // its space moves to the continuations
                ScoringGroup(context: "", continuations: ["(1+2)", "3=3"]),               // from the end-of-text token
                ScoringGroup(context: "#9", continuations: [" 0"]),
                ScoringGroup(context: "0123456789;:<=", continuations: [" 11", "!"]),     // longer than the window: cut from the left
            ]
            let scores = try scorer.score(groups)
            XCTAssertEqual(scores.map(\.count), groups.map(\.continuations.count))
            for (group, groupScores) in zip(groups, scores) {
                for (continuation, score) in zip(group.continuations, groupScores) {
                    // lm-eval's split: the context's trailing spaces move to the continuation, whose
                    // tokens are those of the whole text past the context's.
                    let text = group.context.replacingOccurrences(of: " +$", with: "", options: .regularExpression)
                    let moved = String(repeating: " ", count: group.context.count - text.count) + continuation
                    let context = text.isEmpty ? [tokenizer.endOfTextToken ?? 0] : tokenizer.encode(text)
                    var whole = text.isEmpty ? context + tokenizer.encode(moved) : tokenizer.encode(text + moved)
                    let drop = max(0, whole.count - 13)
                    whole.removeFirst(drop)
                    XCTAssertEqual(score.tokens, whole, "\(name) \(continuation)")
                    XCTAssertEqual(score.contextLength, context.count - drop)
                    let expected = try Self.reference(model, whole, from: score.contextLength)
                    XCTAssertEqual(score.logLikelihood, expected.logProbabilities.reduce(0, +), accuracy: 1e-4, "\(name) \(continuation)")
                    XCTAssertEqual(score.isGreedy, expected.greedy.allSatisfy { $0 }, "\(name) \(continuation)")
                    XCTAssertEqual(score.continuationTokens, whole.count - score.contextLength)
                }
            }
        }
    }

    /// The choice rules: acc by the sum, acc_norm by the sum per character, acc_per_token by the
    /// mean after the prefix every choice shares (llama.cpp), which may reach into the choices.
    func testChoiceRules() {
        func score(_ tokens: [Int], _ logProbabilities: [Float], from: Int = 2) -> ContinuationScore {
            ContinuationScore(tokens: tokens, contextLength: 2, scoredFrom: from, logProbabilities: logProbabilities,
                              greedy: logProbabilities.map { _ in false })
        }
        // Both choices start with token 7 after the context [1, 2]: the shared prefix is [1, 2, 7].
        let a = score([1, 2, 7, 8], [-1, -3])         // sum -4, mean after prefix -3
        let b = score([1, 2, 7, 9, 9, 9], [-1, -1.5, -1.5, -1.5])  // sum -5.5, mean after prefix -1.5
        let picked = TaskEvaluation.choose([a, b], choices: ["ab", "abcdefghijk"])
        XCTAssertEqual(picked.acc, 0)       // -4 > -5.5
        XCTAssertEqual(picked.accNorm, 1)   // -4/2 = -2 < -5.5/11 = -0.5
        XCTAssertEqual(picked.perToken, 1)  // -3 < -1.5
        // Ties go to the first choice.
        XCTAssertEqual(TaskEvaluation.choose([a, a], choices: ["x", "x"]).acc, 0)
    }

    func testStandardErrorIsLmEvalsSampleStandardError() {
        // Bernoulli outcomes 1,0,0,1,1: mean 0.6, sample variance 0.3, stderr sqrt(0.3/5).
        XCTAssertEqual(standardError([1, 0, 0, 1, 1]), (0.3 / 5).squareRoot(), accuracy: 1e-12)
    }
}
