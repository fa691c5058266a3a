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
}
