import Foundation
import XCTest
@testable import Evaluation

final class LanguageModelingScoreTests: XCTestCase {
    func testUniformModelOverFourTokens() {
        // A model that gives every token probability 1/4 has perplexity 4; at 4 bytes a token
        // that is 2 bits per token / 4 bytes = 0.5 bits per byte.
        var score = LanguageModelingScore(negativeLogLikelihood: 60 * log(4.0), tokens: 60, bytes: 240)
        XCTAssertEqual(score.perplexity, 4, accuracy: 1e-12)
        XCTAssertEqual(score.bitsPerByte, 0.5, accuracy: 1e-12)
        score.add(LanguageModelingScore(negativeLogLikelihood: 40 * log(4.0), tokens: 40, bytes: 160))
        XCTAssertEqual(score.tokens, 100)
        XCTAssertEqual(score.meanLoss, log(4.0), accuracy: 1e-12)
    }

    func testEmptyScoreIsNotANumber() {
        XCTAssertTrue(LanguageModelingScore().perplexity.isNaN)
        XCTAssertTrue(LanguageModelingScore().bitsPerByte.isNaN)
    }
}
