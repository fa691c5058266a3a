import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// The one model against PyTorch on tiny random configs of both families (fixtures from
/// scripts/make-gpt-fixtures.py and scripts/make-llama-fixtures.py, the latter run by
/// transformers' own LlamaForCausalLM): logits, loss and every gradient.
final class ModelParityTests: XCTestCase {
    static let fixtures = ["gpt-gelu", "gpt-relu", "llama-untied", "llama-tied"]

    func testForwardAndBackwardMatchPyTorch() throws {
        for name in Self.fixtures {
            let fixture = try ParityFixture(name)
            let model = fixture.model
            let loss = try XCTUnwrap(try model.forward(tokens: fixture.tokens, targets: fixture.targets,
                                                       batch: fixture.batch, length: fixture.length))
            let expectedLogits = try fixture.file.read("logits")
            let logitError = zip(Array(model.logits), expectedLogits).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(logitError, 1e-4, "\(name): logits")
            let expectedLoss = try fixture.file.read("loss")[0]
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * expectedLoss, "\(name): loss")
            model.zeroGradients()
            model.backward()
            let errors = try fixture.gradientErrors()
            XCTAssertEqual(errors.count, model.config.family == .llama ? (model.config.tiedEmbeddings ? 20 : 21) : 28, name)
            for (tensor, error, scale) in errors {
                XCTAssertGreaterThan(scale, 0, "\(name): \(tensor) has no gradient in the fixture")
                XCTAssertLessThan(error, 1e-3 * scale, "\(name): gradient of \(tensor)")
            }
            print("parity \(name): max logit error \(logitError), loss \(loss) vs \(expectedLoss), worst gradient error \(errors.map { $0.error / $0.scale }.max()!) of its scale")
        }
    }

    func testSameBitsAtAnyThreadCount() throws {
        for name in ["gpt-gelu", "llama-untied"] {
            func run(threads: Int) throws -> ([Float], [Float]) {
                let fixture = try ParityFixture(name, pool: ThreadPool(threadCount: threads))
                _ = try fixture.model.forward(tokens: fixture.tokens, targets: fixture.targets, batch: fixture.batch,
                                              length: fixture.length)
                fixture.model.zeroGradients()
                fixture.model.backward()
                return (Array(fixture.model.logits), Array(fixture.model.gradients))
            }
            let one = try run(threads: 1), two = try run(threads: 2)
            XCTAssertEqual(one.0, two.0, name)
            XCTAssertEqual(one.1, two.1, name)
        }
    }

    func testBadInputIsRefusedWithAReason() throws {
        let model = try ParityFixture("gpt-gelu").model
        XCTAssertThrowsError(try model.forward(tokens: [1, 2, 64], targets: nil, batch: 1, length: 3)) {
            XCTAssertTrue("\($0)".contains("token id 64 at position 2"), "\($0)")
        }
        XCTAssertThrowsError(try model.forward(tokens: Array(repeating: 0, count: 17), targets: nil, batch: 1, length: 17)) {
            XCTAssertTrue("\($0)".contains("exceeds the model's context length"), "\($0)")
        }
        XCTAssertThrowsError(try LanguageModel(config: .gpt2(layers: 1, heads: 3, embedding: 32))) {
            XCTAssertTrue("\($0)".contains("n_head"), "\($0)")
        }
        XCTAssertThrowsError(try LanguageModel(config: .llama(layers: 1, heads: 4, keyValueHeads: 3, embedding: 32, hidden: 64,
                                                              vocabularySize: 16))) {
            XCTAssertTrue("\($0)".contains("key/value heads"), "\($0)")
        }
    }

    /// With dropout on (fixed masks from the seed), the gradient matches a central finite
    /// difference of the loss along random directions, for both families.
    func testGradientWithDropoutMatchesFiniteDifferences() throws {
        for name in ["gpt-gelu", "llama-untied"] {
            let model = try ParityFixture(name, dropout: 0.2).model
            let fixture = try ParityFixture(name)
            func loss(training: Bool = true) throws -> Float {
                try XCTUnwrap(try model.forward(tokens: fixture.tokens, targets: fixture.targets, batch: fixture.batch,
                                                length: fixture.length, training: training, dropoutSeed: 77))
            }
            XCTAssertNotEqual(try loss(), try loss(training: false), "\(name): dropout changed nothing")
            _ = try loss()
            model.zeroGradients()
            model.backward()
            let gradient = Array(model.gradients), original = Array(model.parameters)
            var generator = SplitMix64(seed: 12)
            for trial in 0..<3 {
                let direction = (0..<original.count).map { _ in generator.nextNormal() }
                let epsilon: Float = 1e-3
                for i in original.indices { model.parameters[i] = original[i] + epsilon * direction[i] }
                let up = try loss()
                for i in original.indices { model.parameters[i] = original[i] - epsilon * direction[i] }
                let down = try loss()
                _ = model.parameters.update(fromContentsOf: original)
                let numerical = Double(up - down) / Double(2 * epsilon)
                let analytic = zip(gradient, direction).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                XCTAssertEqual(numerical, analytic, accuracy: 0.02 * abs(analytic) + 2e-3, "\(name) direction \(trial)")
            }
        }
    }
}
