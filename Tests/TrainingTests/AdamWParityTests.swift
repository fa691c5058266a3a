import Foundation
import XCTest
import Kernels
@testable import Training
@testable import Transformer

final class AdamWParityTests: XCTestCase {
    /// Ten AdamW steps on one batch give PyTorch's losses (torch.optim.AdamW, decay on matrices).
    func testTenStepsMatchPyTorch() throws {
        for activation in ["gelu", "relu"] {
            let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../TransformerTests/Fixtures/gpt-\(activation).safetensors")
            let file = try SafetensorsFile(url: url)
            let meta = try JSONSerialization.jsonObject(with: Data(file.metadata["config"]!.utf8)) as! [String: Any]
            let model = try GPT(config: .gpt2(layers: meta["n_layer"] as! Int, heads: meta["n_head"] as! Int,
                                              embedding: meta["n_embd"] as! Int, vocabularySize: meta["vocab_size"] as! Int,
                                              contextLength: meta["n_positions"] as! Int,
                                              activation: activation == "relu" ? .relu : .gelu))
            for entry in model.layout.entries { try file.read("param." + entry.name, into: model.parameter(entry.name)) }
            let tokens = try file.read("tokens").map { Int32($0) }, targets = try file.read("targets").map { Int32($0) }
            let optimizer = AdamWOptimizer(parameterCount: model.layout.totalCount,
                                           settings: AdamWSettings(learningRate: 1e-2, beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1))
            var losses: [Float] = []
            for _ in 0..<10 {
                losses.append(try XCTUnwrap(try model.forward(tokens: tokens, targets: targets, batch: meta["batch"] as! Int,
                                                              length: meta["length"] as! Int)))
                model.zeroGradients()
                model.backward()
                optimizer.update(model, learningRate: 1e-2)
            }
            let expected = try file.read("adamw_losses")
            for (step, (ours, theirs)) in zip(losses, expected).enumerated() {
                XCTAssertEqual(ours, theirs, accuracy: 1e-4 * theirs, "\(activation) step \(step)")
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
