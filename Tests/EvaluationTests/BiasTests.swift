import BPE
import Foundation
import Generation
import TestSupport
import XCTest
@testable import Evaluation
@testable import Transformer

/// The bias suites' bookkeeping on a tiny model (its scores checked against one-sequence float64
/// references in LoglikelihoodTests), and self-debiasing against the paper's formula in float64.
final class BiasTests: TemporaryDirectoryTestCase {
    var model: LanguageModel!
    var tokenizer: Tokenizer!

    override func setUpWithError() throws {
        try super.setUpWithError()
        model = try ParityFixture("llama-untied").model
        tokenizer = try LoglikelihoodTests.smallTokenizer()
    }

    func write(_ name: String, _ text: String) throws -> String {
        let url = directory.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url.path
    }

    /// The model's text is limited to bytes below 64 (digits, spaces, punctuation).
    func testStereoSetCountsAndICAT() throws {
        let lines = [
            #"{"type": "intrasentence", "bias_type": "gender", "context": "1 BLANK", "stereotype": "1 2", "anti-stereotype": "1 3", "unrelated": "1 ?"}"#,
            #"{"type": "intrasentence", "bias_type": "race", "context": "4 BLANK", "stereotype": "4 55", "anti-stereotype": "4 6", "unrelated": "4 #"}"#,
            #"{"type": "intersentence", "bias_type": "gender", "context": "7 8.", "stereotype": "9 0", "anti-stereotype": "0 9", "unrelated": "!!"}"#,
        ]
        let path = try write("stereoset.jsonl", lines.joined(separator: "\n"))
        let scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer)
        let report = try BiasAudit(scorer: scorer).stereoSet(path)
        // Expected, from the scorer's own per-sentence scores.
        let groups = [ScoringGroup(context: "", continuations: ["1 2", "1 3", "1 ?"]),
                      ScoringGroup(context: "", continuations: ["4 55", "4 6", "4 #"]),
                      ScoringGroup(context: "7 8.", continuations: [" 9 0", " 0 9", " !!"])]
        let means = try scorer.score(groups).map { $0.map { $0.meanLogProbability(from: $0.contextLength) } }
        let stereotyped = means.filter { $0[0] > $0[1] }.count
        let meaningful = means.reduce(0) { $0 + ($1[0] > $1[2] ? 1 : 0) + ($1[1] > $1[2] ? 1 : 0) }
        let ss = 100 * Double(stereotyped) / 3, lms = 100 * Double(meaningful) / 6
        let overall = Dictionary(uniqueKeysWithValues: report.overall.map { ($0.name, $0.value) })
        XCTAssertEqual(overall["ss"]!, ss, accuracy: 1e-9)
        XCTAssertEqual(overall["lms"]!, lms, accuracy: 1e-9)
        XCTAssertEqual(overall["icat"]!, lms * min(ss, 100 - ss) / 50, accuracy: 1e-9)
        XCTAssertEqual(report.groups.map(\.name), ["gender", "race"])
        XCTAssertEqual(report.groups.map(\.count), [2, 1])
        XCTAssertEqual(report.sections.map(\.name), ["intersentence", "intrasentence"])
        XCTAssertEqual(report.json["ss"] as? Double, overall["ss"])
        // A report people can open anywhere: charts inline, nothing fetched.
        let html = BiasReport.html([report], model: "tiny")
        XCTAssertTrue(html.contains("<svg"))
        XCTAssertFalse(html.contains("http"))
        XCTAssertFalse(html.contains("<script"))
    }

    func testCrowsPairsPrefersMask1AsTheStereotype() throws {
        let path = try write("crows.csv", ",bias_type,sentence,mask1,mask2\n0,gender,\"1, [MASK] 2\",3,4\n1,race,[MASK] 55,6,77\n")
        let scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer)
        let report = try BiasAudit(scorer: scorer).crowsPairs(path)
        let scores = try scorer.score([ScoringGroup(context: "", continuations: ["1, 3 2", "1, 4 2"]),
                                       ScoringGroup(context: "", continuations: ["6 55", "77 55"])])
        let expected = 100 * Double(scores.filter { $0[0].logLikelihood > $0[1].logLikelihood }.count) / 2
        XCTAssertEqual(report.overall[0].value, expected, accuracy: 1e-9)
        XCTAssertEqual(report.groups.map(\.name), ["gender", "race"])
        let bad = try write("bad.csv", ",bias_type,sentence,mask1\n0,gender,[MASK],3\n")
        XCTAssertThrowsError(try BiasAudit(scorer: scorer).crowsPairs(bad)) { XCTAssertTrue("\($0)".contains("mask2"), "\($0)") }
    }

    /// BBQ's bias scores by the paper's formulas, recomputed here from the chosen answers.
    func testBBQAccuracyAndBiasScores() throws {
        func item(_ id: Int, _ condition: String, _ polarity: String, label: Int) -> String {
            """
            {"example_id": \(id), "question_polarity": "\(polarity)", "context_condition": "\(condition)", "category": "Gender_identity", \
            "answer_info": {"ans0": ["1", "man"], "ans1": ["?", "unknown"], "ans2": ["2", "woman"]}, \
            "additional_metadata": {"stereotyped_groups": ["F"]}, "context": "\(id) 0", "question": "1?", \
            "ans0": "1", "ans1": "?", "ans2": "2", "label": \(label)}
            """
        }
        let items = [item(1, "ambig", "neg", label: 1), item(2, "ambig", "nonneg", label: 1),
                     item(3, "disambig", "neg", label: 2), item(4, "disambig", "nonneg", label: 0)]
        let path = try write("bbq.jsonl", items.joined(separator: "\n"))
        let scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer)
        var audit = BiasAudit(scorer: scorer)
        audit.answerCue = "\n:"  // within the tiny model's bytes
        let report = try audit.bbq(path)
        let chosen = try scorer.score((1...4).map { ScoringGroup(context: "\($0) 0 1?\n:", continuations: [" 1", " ?", " 2"]) })
            .map { TaskEvaluation.argmax($0.map(\.logLikelihood)) }
        let labels = [1, 1, 2, 0], negative = [true, false, true, false]
        func ratio(_ indices: [Int]) -> Double {
            let answered = indices.filter { chosen[$0] != 1 }
            guard !answered.isEmpty else { return 0 }
            // Biased: the woman (stereotyped) for a negative question, the man for a non-negative one.
            let biased = answered.filter { (chosen[$0] == 2) == negative[$0] }.count
            return 2 * Double(biased) / Double(answered.count) - 1
        }
        let accAmbig = Double([0, 1].filter { chosen[$0] == labels[$0] }.count) / 2
        let accDisambig = Double([2, 3].filter { chosen[$0] == labels[$0] }.count) / 2
        let values = Dictionary(uniqueKeysWithValues: report.overall.map { ($0.name, $0.value) })
        XCTAssertEqual(values["acc_ambig"]!, 100 * accAmbig, accuracy: 1e-9)
        XCTAssertEqual(values["acc_disambig"]!, 100 * accDisambig, accuracy: 1e-9)
        XCTAssertEqual(values["bias_disambig"]!, 100 * ratio([2, 3]), accuracy: 1e-9)
        XCTAssertEqual(values["bias_ambig"]!, 100 * (1 - accAmbig) * ratio([0, 1]), accuracy: 1e-9)
        XCTAssertEqual(report.groups.map(\.name), ["F"])
        XCTAssertEqual(BiasAudit.groupTag("trans_F"), "trans")
        XCTAssertEqual(BiasAudit.groupTag("Transgender women"), "trans")
        XCTAssertEqual(BiasAudit.groupTag("nonTrans_M"), "nonTrans")
        XCTAssertEqual(BiasAudit.groupTag("girl"), "F")
    }

    /// p̃(w) ∝ α(p(w|x) - max_i p(w|prefix_i x)) p(w|x), computed in float64 from the
    /// single-sequence forward pass, for every continuation token.
    func testSelfDebiasingFollowsThePapersFormula() throws {
        let prefixes = ["%%", "&&&"], decay = 50.0
        let debiasing = SelfDebiasing(prefixes: prefixes, decay: Float(decay))
        let scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer)
        let groups = [ScoringGroup(context: "12", continuations: [" 34", " 5"]), ScoringGroup(context: "", continuations: ["678"])]
        let scores = try debiasing.score(groups, scorer: scorer)
        func probabilities(_ tokens: [Int]) throws -> [Double] {
            let logits = try model.forward(tokens, cache: try KVCache(model, capacity: tokens.count)).map(Double.init)
            let top = logits.max()!, sum = logits.reduce(0) { $0 + exp($1 - top) }
            return logits.map { exp($0 - top) / sum }
        }
        for (group, groupScores) in zip(groups, scores) {
            for score in groupScores {
                // Behind a prefix, an empty context's end-of-text token is dropped.
                let body = group.context.isEmpty ? Array(score.tokens.dropFirst()) : score.tokens
                let offset = score.tokens.count - body.count
                for (row, i) in (score.contextLength..<score.tokens.count).enumerated() {
                    let p = try probabilities(Array(score.tokens[..<i]))
                    let biased = try prefixes.map { try probabilities(tokenizer.encode($0) + body[..<(i - offset)]) }
                    let weights = p.indices.map { w in
                        let delta = p[w] - biased.map { $0[w] }.max()!
                        return delta >= 0 ? p[w] : p[w] * exp(decay * delta)
                    }
                    let expected = log(weights[score.tokens[i]] / weights.reduce(0, +))
                    XCTAssertEqual(Double(score.logProbabilities[row]), expected, accuracy: 1e-4 * max(1, abs(expected)))
                }
            }
        }
        // Prefixes that change nothing leave the scores as they were.
        let unchanged = try SelfDebiasing(prefixes: [""]).score([groups[0]], scorer: scorer)[0]
        let plain = try scorer.score([groups[0]])[0]
        for (a, b) in zip(unchanged, plain) { XCTAssertEqual(a.logLikelihood, b.logLikelihood, accuracy: 1e-4) }
    }

    /// Probes: each group's favourable-minus-unfavourable gap against its category's mean.
    func testProbesGapsAreDeviationsFromTheCategoryMean() throws {
        let probes = BiasProbes(categories: ["digits": ["1", "22"]],
                                templates: [.init(name: "t", text: "{subject} =", favourable: ["3", "4"], unfavourable: ["5"])])
        let scorer = LoglikelihoodScorer(model: model, tokenizer: tokenizer)
        let report = try BiasAudit(scorer: scorer).probes(probes)
        let scores = try ["1 =", "22 ="].map { context in
            try scorer.score([ScoringGroup(context: context, continuations: [" 3", " 4", " 5"])])[0].map(\.logLikelihood)
        }
        let gaps = scores.map { ($0[0] + $0[1]) / 2 - $0[2] }
        let mean = (gaps[0] + gaps[1]) / 2
        XCTAssertEqual(report.groups.map(\.name), ["digits: 1", "digits: 22"])
        XCTAssertEqual(report.groups[0].metrics[0].value, gaps[0] - mean, accuracy: 1e-9)
        XCTAssertEqual(report.groups[1].metrics[0].value, gaps[1] - mean, accuracy: 1e-9)
        XCTAssertEqual(report.overall[0].name, "spread_digits")
        XCTAssertEqual(report.overall[0].value, abs(gaps[0] - gaps[1]), accuracy: 1e-9)
        XCTAssertThrowsError(try BiasProbes.load(try write("probes.json", #"{"categories": {"a": ["x"]}, "templates": []}"#)))
    }
}
