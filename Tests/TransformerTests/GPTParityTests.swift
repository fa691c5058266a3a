import Foundation
import XCTest
import Kernels
@testable import Transformer

/// Our GPT against a PyTorch reference on tiny random configs (fixtures from
/// scripts/make-gpt-fixtures.py), for both MLP activations.
final class GPTParityTests: XCTestCase {
    func testForwardAndBackwardMatchPyTorch() throws {
        for activation in ["gelu", "relu"] {
            let fixture = try GPTFixture(activation: activation)
            let model = fixture.model
            let loss = try XCTUnwrap(try model.forward(tokens: fixture.tokens, targets: fixture.targets,
                                                       batch: fixture.batch, length: fixture.length))
            let expectedLogits = try fixture.file.read("logits")
            let logitError = zip(Array(model.logits), expectedLogits).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(logitError, 1e-4, "\(activation): logits")
            print("parity \(activation): max logit error \(logitError), loss \(loss) vs \(try fixture.file.read("loss")[0])")
            let expectedLoss = try fixture.file.read("loss")[0]
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * expectedLoss, "\(activation): loss")

            model.zeroGradients()
            model.backward()
            for entry in model.layout.entries {
                let expected = try fixture.file.read("grad." + entry.name)
                let ours = Array(model.gradient(entry.name))
                let scale = expected.map(abs).max()!
                let error = zip(ours, expected).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(error, 1e-3 * scale, "\(activation): gradient of \(entry.name)")
            }
        }
    }

    func testSameBitsAtAnyThreadCount() throws {
        let fixture = try GPTFixture(activation: "gelu")
        func run(threads: Int) throws -> ([Float], [Float]) {
            let model = fixture.model
            model.pool = ThreadPool(threadCount: threads)
            _ = try model.forward(tokens: fixture.tokens, targets: fixture.targets, batch: fixture.batch, length: fixture.length)
            model.zeroGradients()
            model.backward()
            return (Array(model.logits), Array(model.gradients))
        }
        let one = try run(threads: 1), two = try run(threads: 2)
        XCTAssertEqual(one.0, two.0)
        XCTAssertEqual(one.1, two.1)
    }

    func testBadInputIsRefusedWithAReason() throws {
        let model = try GPTFixture(activation: "gelu").model
        XCTAssertThrowsError(try model.forward(tokens: [1, 2, 64], targets: nil, batch: 1, length: 3)) {
            XCTAssertTrue("\($0)".contains("token id 64 at position 2"), "\($0)")
        }
        XCTAssertThrowsError(try model.forward(tokens: Array(repeating: 0, count: 17), targets: nil, batch: 1, length: 17)) {
            XCTAssertTrue("\($0)".contains("exceeds the model's context length"), "\($0)")
        }
        XCTAssertThrowsError(try GPT(config: .gpt2(layers: 1, heads: 3, embedding: 32))) {
            XCTAssertTrue("\($0)".contains("n_head"), "\($0)")
        }
    }
}

/// A fixture file with its model loaded.
struct GPTFixture {
    let file: SafetensorsFile
    let model: GPT
    let tokens: [Int32], targets: [Int32]
    let batch: Int, length: Int

    init(activation: String) throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/gpt-\(activation).safetensors")
        file = try SafetensorsFile(url: url)
        let config = try JSONSerialization.jsonObject(with: Data(file.metadata["config"]!.utf8)) as! [String: Any]
        let modelConfig = ModelConfig.gpt2(
            layers: config["n_layer"] as! Int, heads: config["n_head"] as! Int, embedding: config["n_embd"] as! Int,
            vocabularySize: config["vocab_size"] as! Int, contextLength: config["n_positions"] as! Int,
            activation: activation == "relu" ? .relu : .gelu)
        model = try GPT(config: modelConfig)
        for entry in model.layout.entries {
            try file.read("param." + entry.name, into: model.parameter(entry.name))
        }
        tokens = try file.read("tokens").map { Int32($0) }
        targets = try file.read("targets").map { Int32($0) }
        batch = config["batch"] as! Int
        length = config["length"] as! Int
    }
}

final class DropoutGradientTests: XCTestCase {
    /// With dropout on (fixed masks from the seed), the gradient matches a central finite
    /// difference of the loss along random directions.
    func testGradientWithDropoutMatchesFiniteDifferences() throws {
        let fixture = try GPTFixture(activation: "gelu")
        var config = fixture.model.config
        config.dropout = 0.2
        let model = try GPT(config: config)
        model.parameters.update(fromContentsOf: fixture.model.parameters)
        func loss() throws -> Float {
            try XCTUnwrap(try model.forward(tokens: fixture.tokens, targets: fixture.targets, batch: fixture.batch,
                                            length: fixture.length, training: true, dropoutSeed: 77))
        }
        let base = try loss()
        let noDropout = try XCTUnwrap(try model.forward(tokens: fixture.tokens, targets: fixture.targets,
                                                        batch: fixture.batch, length: fixture.length))
        XCTAssertNotEqual(base, noDropout, "dropout changed nothing")
        _ = try loss()
        model.zeroGradients()
        model.backward()
        let gradient = Array(model.gradients)
        let original = Array(model.parameters)
        var generator = SplitMix64(seed: 12)
        for trial in 0..<3 {
            let direction = (0..<original.count).map { _ in generator.nextNormal() }
            let epsilon: Float = 1e-3
            for i in original.indices { model.parameters[i] = original[i] + epsilon * direction[i] }
            let up = try loss()
            for i in original.indices { model.parameters[i] = original[i] - epsilon * direction[i] }
            let down = try loss()
            model.parameters.update(fromContentsOf: original)
            let numerical = Double(up - down) / Double(2 * epsilon)
            let analytic = zip(gradient, direction).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(numerical, analytic, accuracy: 0.02 * abs(analytic) + 2e-3, "direction \(trial)")
        }
    }
}
