import Foundation
import XCTest
import Kernels
import TestSupport
@testable import Training
@testable import Transformer

final class AdamWParityTests: XCTestCase {
    /// Ten AdamW steps on one batch give PyTorch's losses (torch.optim.AdamW, decay on matrices).
    func testTenStepsMatchPyTorch() throws {
        for name in ["gpt-gelu", "gpt-relu", "llama-untied", "llama-tied"] {
            let fixture = try ParityFixture(name)
            let model = fixture.model
            let optimizer = AdamWOptimizer(parameterCount: model.layout.totalCount,
                                           settings: AdamWSettings(learningRate: 1e-2, beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1))
            var losses: [Float] = []
            for _ in 0..<10 {
                losses.append(try XCTUnwrap(try model.forward(tokens: fixture.tokens, targets: fixture.targets,
                                                              batch: fixture.batch, length: fixture.length)))
                model.zeroGradients()
                model.backward()
                optimizer.update(model, learningRate: 1e-2)
            }
            let expected = try fixture.file.read("adamw_losses")
            for (step, (ours, theirs)) in zip(losses, expected).enumerated() {
                XCTAssertEqual(ours, theirs, accuracy: 1e-4 * theirs, "\(name) step \(step)")
            }
        }
    }

    func testClipGradientNorm() {
        var values: [Float] = [3, 4]
        let norm = values.withUnsafeMutableBufferPointer { clipGradientNorm($0, maxNorm: 1) }
        XCTAssertEqual(norm, 5)
        XCTAssertEqual(values[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(values[1], 0.8, accuracy: 1e-5)
    }
}
