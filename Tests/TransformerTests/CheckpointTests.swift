import Foundation
import TestSupport
import XCTest
import Kernels
@testable import Transformer

final class CheckpointTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("checkpoint-\(UUID())")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func testSaveAndLoadGiveTheSameLogits() throws {
        let fixture = try ParityFixture("gpt-relu")
        try Checkpoint.save(fixture.model, to: directory)
        let loaded = try Checkpoint.load(directory)
        XCTAssertEqual(loaded.config.activation, .relu)
        try fixture.model.forward(tokens: fixture.tokens, targets: nil, batch: fixture.batch, length: fixture.length)
        try loaded.forward(tokens: fixture.tokens, targets: nil, batch: fixture.batch, length: fixture.length)
        XCTAssertEqual(Array(loaded.logits), Array(fixture.model.logits))
        let names = try SafetensorsFile(url: directory.appendingPathComponent("model.safetensors")).tensors.keys
        XCTAssertTrue(names.contains("transformer.h.1.attn.c_attn.weight"))
    }

    func testBadCheckpointsAreRefusedWithAReason() throws {
        let fixture = try ParityFixture("gpt-gelu")
        try Checkpoint.save(fixture.model, to: directory)
        let weights = directory.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count - 100).write(to: weights)
        XCTAssertThrowsError(try Checkpoint.load(directory)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }

        try Checkpoint.save(fixture.model, to: directory)
        let configURL = directory.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["n_embd"] = 48
        config["n_head"] = 4
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        XCTAssertThrowsError(try Checkpoint.load(directory)) { XCTAssertTrue("\($0)".contains("has shape"), "\($0)") }

        try Data("[1, 2]".utf8).write(to: configURL)
        XCTAssertThrowsError(try Checkpoint.load(directory)) { XCTAssertTrue("\($0)".contains("not a JSON object"), "\($0)") }
        XCTAssertThrowsError(try Checkpoint.load(directory.appendingPathComponent("nope"))) {
            XCTAssertTrue("\($0)".contains("cannot read"), "\($0)")
        }
    }

    /// Architectures and settings we do not run are refused by name, from either kind of file.
    func testUnknownArchitecturesAreRefusedByName() throws {
        let fixture = try ParityFixture("llama-tied")
        try Checkpoint.save(fixture.model, to: directory)
        let configURL = directory.appendingPathComponent("config.json")
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        for (key, value, message) in [("model_type", "mistral" as Any, "model_type \"mistral\" is not supported"),
                                      ("hidden_act", "gelu" as Any, "hidden_act \"gelu\" is not supported"),
                                      ("rope_scaling", ["rope_type": "yarn"] as Any, "rope scaling \"yarn\" is not supported")] {
            var config = original
            config[key] = value
            try JSONSerialization.data(withJSONObject: config).write(to: configURL)
            XCTAssertThrowsError(try Checkpoint.load(directory)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        // A Llama checkpoint whose q_proj disagrees with the config names the file and tensor.
        try JSONSerialization.data(withJSONObject: original).write(to: configURL)
        let weightsURL = directory.appendingPathComponent("model.safetensors")
        let file = try SafetensorsFile(url: weightsURL)
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for name in file.tensors.keys.sorted() {
            let values = try file.read(name)
            tensors.append(name == "model.layers.1.self_attn.q_proj.weight" ? (name, [16, 64], Array(values.prefix(16 * 64)))
                                                                           : (name, file.tensors[name]!.shape, values))
        }
        try withExtendedLifetime(tensors) {
            let buffers = tensors.map { tensor in tensor.values.withUnsafeBufferPointer { FloatBuffer.allocate(capacity: $0.count) } }
            defer { buffers.forEach { $0.deallocate() } }
            for (buffer, tensor) in zip(buffers, tensors) { _ = buffer.initialize(from: tensor.values) }
            try SafetensorsFile.write(zip(tensors, buffers).map { ($0.name, $0.shape, UnsafeBufferPointer($1)) }, to: weightsURL)
        }
        XCTAssertThrowsError(try Checkpoint.load(directory)) {
            XCTAssertTrue("\($0)".contains("model.safetensors: tensor model.layers.1.self_attn.q_proj.weight has shape [16, 64]"), "\($0)")
        }
        // A GGUF file of an architecture we do not run.
        var writer = GGUFWriter()
        writer.setMetadata("general.architecture", .string("falcon"))
        let gguf = directory.appendingPathComponent("falcon.gguf")
        try writer.write(to: gguf)
        XCTAssertThrowsError(try ModelLoader.config(of: GGUFFile(url: gguf))) {
            XCTAssertTrue("\($0)".contains("architecture \"falcon\" is not supported"), "\($0)")
        }
    }
}
