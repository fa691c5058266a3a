import Foundation
import TestSupport
import XCTest
@testable import Evaluation
@testable import Transformer

/// Perplexity's windows by lm-eval's and llama.cpp's rules, and their scores against the
/// training forward pass over the same windows (a separate code path, itself held to PyTorch).
final class PerplexityTests: XCTestCase {
    func testWindowsFollowTheRules() throws {
        let ids = Array(10..<20)  // 10 tokens
        // lm-eval rolling, window 4, prefix 0: every token predicted once; later windows keep context.
        let rolling = try Perplexity.windows(ids, rule: .rolling(window: 4, prefixToken: 0))
        XCTAssertEqual(rolling, [
            .init(tokens: [0, 10, 11, 12], targets: [10, 11, 12, 13], from: 0),
            .init(tokens: [13, 14, 15, 16], targets: [14, 15, 16, 17], from: 0),
            .init(tokens: [15, 16, 17, 18], targets: [16, 17, 18, 19], from: 2),
        ])
        // Strided (Hugging Face): windows of 4 advancing by 2, each predicting its last 2 tokens.
        let strided = try Perplexity.windows(ids, rule: .rolling(window: 4, stride: 2, prefixToken: 0))
        XCTAssertEqual(strided, [
            .init(tokens: [0, 10], targets: [10, 11], from: 0),
            .init(tokens: [0, 10, 11, 12], targets: [10, 11, 12, 13], from: 2),
            .init(tokens: [11, 12, 13, 14], targets: [12, 13, 14, 15], from: 2),
            .init(tokens: [13, 14, 15, 16], targets: [14, 15, 16, 17], from: 2),
            .init(tokens: [15, 16, 17, 18], targets: [16, 17, 18, 19], from: 2),
        ])
        XCTAssertThrowsError(try Perplexity.windows(ids, rule: .rolling(window: 4, stride: 5, prefixToken: 0)))
        // llama.cpp: non-overlapping windows of 4 from token 0, positions 2..2 predict.
        let windows = try Perplexity.windows(ids, rule: .windows(size: 4, scoreFrom: 2))
        XCTAssertEqual(windows, [
            .init(tokens: [10, 11, 12], targets: [11, 12, 13], from: 2),
            .init(tokens: [14, 15, 16], targets: [15, 16, 17], from: 2),
        ])
        XCTAssertThrowsError(try Perplexity.windows(ids, rule: .windows(size: 4, scoreFrom: 3))) {
            XCTAssertTrue("\($0)".contains("score-from"), "\($0)")
        }
        XCTAssertThrowsError(try Perplexity.windows(Array(ids.prefix(3)), rule: .windows(size: 4, scoreFrom: 1))) {
            XCTAssertTrue("\($0)".contains("fewer than one window"), "\($0)")
        }
    }

    func testScoresEqualTheTrainingForwardPass() throws {
        let model = try ParityFixture("llama-untied").model
        let ids = (0..<37).map { ($0 * 29 + 7) % 64 }
        for rule in [Perplexity.Rule.rolling(window: 12, prefixToken: 1), .windows(size: 12, scoreFrom: 5)] {
            var expected = 0.0, count = 0
            for window in try Perplexity.windows(ids, rule: rule) {
                // Unscored rows get the ignore index; the mean loss times the count is the sum.
                let targets = window.targets.enumerated().map { $0.offset < window.from ? Int32(-1) : Int32($0.element) }
                let loss = try XCTUnwrap(try model.forward(tokens: window.tokens.map(Int32.init), targets: targets, batch: 1,
                                                           length: window.tokens.count))
                let scored = window.tokens.count - window.from
                expected += Double(loss) * Double(scored)
                count += scored
            }
            let result = try Perplexity.evaluate(model, tokens: ids, rule: rule, batch: 2)
            XCTAssertEqual(result.tokens, count, "\(rule)")
            XCTAssertEqual(result.negativeLogLikelihood, expected, accuracy: 1e-4 * expected, "\(rule)")
        }
        XCTAssertEqual(try Perplexity.evaluate(model, tokens: ids, rule: .rolling(window: 12, prefixToken: 1)).tokens, ids.count,
                       "lm-eval's rule scores every token once")
    }
}
