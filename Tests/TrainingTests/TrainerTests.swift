import Foundation
import TestSupport
import XCTest
import Kernels
@testable import Training
@testable import Transformer

final class TrainerTests: TemporaryDirectoryTestCase {
    /// Shards of a simple repeating pattern with noise: learnable in a few steps.
    func makeShards() throws -> (train: [TokenShard.Reader], validation: [TokenShard.Reader]) {
        var generator = SplitMix64(seed: 3)
        let tokens = (0..<6000).map { i in (i % 7 == 0) ? Int(generator.next() % 32) : (i * 5) % 32 }
        try TokenShard.write(Array(tokens[0..<5000]), to: directory.appendingPathComponent("train_000000.bin"))
        try TokenShard.write(Array(tokens[5000...]), to: directory.appendingPathComponent("val_000000.bin"))
        return ([try TokenShard.Reader(url: directory.appendingPathComponent("train_000000.bin"))],
                [try TokenShard.Reader(url: directory.appendingPathComponent("val_000000.bin"))])
    }

    func makeTrainer(steps: Int, shards: (train: [TokenShard.Reader], validation: [TokenShard.Reader]),
                     dropout: Float = 0.1, family: ModelConfig.Family = .gpt2) throws -> Trainer {
        let config: ModelConfig = family == .gpt2
            ? .gpt2(layers: 2, heads: 2, embedding: 16, vocabularySize: 32, contextLength: 16, dropout: dropout)
            : .llama(layers: 2, heads: 4, keyValueHeads: 2, embedding: 16, hidden: 32, vocabularySize: 32, contextLength: 16,
                     dropout: dropout)
        let model = try LanguageModel(config: config)
        model.initializeWeights(seed: 5)
        var options = TrainingOptions()
        options.batchSize = 4
        options.sequenceLength = 16
        options.gradientAccumulation = 2
        options.steps = steps
        options.learningRate = 2e-2
        options.warmupSteps = 2
        options.evaluationInterval = 5
        options.evaluationBatches = 4
        return try Trainer(model: model, tokenizer: nil, train: shards.train, validation: shards.validation, options: options)
    }

    func testLossFallsAndResumeGivesTheSameBits() throws {
        for family in [ModelConfig.Family.gpt2, .llama] { try checkLossFallsAndResumeGivesTheSameBits(family) }
    }

    func checkLossFallsAndResumeGivesTheSameBits(_ family: ModelConfig.Family) throws {
        let shards = try makeShards()
        let straight = try makeTrainer(steps: 12, shards: shards, family: family)
        var reports: [StepReport] = []
        for _ in 0..<12 { reports.append(try straight.trainStep()) }
        let lastThree = reports.suffix(3).map(\.trainLoss).reduce(0, +) / 3
        XCTAssertLessThan(lastThree, reports.first!.trainLoss * 0.87, "\(family): \(reports.map(\.trainLoss))")
        XCTAssertNotNil(reports[4].validationLoss)

        let first = try makeTrainer(steps: 12, shards: shards, family: family)
        for _ in 0..<5 { _ = try first.trainStep() }
        let checkpoint = directory.appendingPathComponent("checkpoint")
        try first.save(to: checkpoint)
        var config = try Checkpoint.loadConfig(checkpoint)
        XCTAssertEqual(config.dropout, 0.1)
        config.dropout = 0.1
        let loaded = try Checkpoint.load(checkpoint)
        let resumedModel = try LanguageModel(config: config)
        _ = resumedModel.parameters.update(fromContentsOf: loaded.parameters)
        var options = try Trainer.savedOptions(in: checkpoint)
        options.steps = 12
        let resumed = try Trainer(model: resumedModel, tokenizer: nil, train: shards.train, validation: shards.validation, options: options)
        try resumed.restore(from: checkpoint)
        XCTAssertEqual(resumed.step, 5)
        for _ in 5..<12 { _ = try resumed.trainStep() }
        XCTAssertEqual(Array(resumed.model.parameters), Array(straight.model.parameters), "\(family): resumed run differs")
    }

    func testCorruptShardsAreRefused() throws {
        let url = directory.appendingPathComponent("bad.bin")
        try Data(repeating: 0, count: 100).write(to: url)
        XCTAssertThrowsError(try TokenShard.Reader(url: url)) { XCTAssertTrue("\($0)".contains("shorter than"), "\($0)") }
        try TokenShard.write([1, 2, 3], to: url)
        var data = try Data(contentsOf: url)
        data.removeLast()
        try data.write(to: url)
        XCTAssertThrowsError(try TokenShard.Reader(url: url)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        data = try Data(contentsOf: url)
        data[0] = 7
        try data.write(to: url)
        XCTAssertThrowsError(try TokenShard.Reader(url: url)) { XCTAssertTrue("\($0)".contains("magic"), "\($0)") }
        XCTAssertThrowsError(try TokenShard.write([70_000], to: url)) { XCTAssertTrue("\($0)".contains("65,535"), "\($0)") }
    }

    func testDataBeyondTheVocabularyIsRefused() throws {
        try TokenShard.write([1, 2, 40, 3], to: directory.appendingPathComponent("train_000000.bin"))
        let shard = try TokenShard.Reader(url: directory.appendingPathComponent("train_000000.bin"))
        XCTAssertThrowsError(try makeTrainer(steps: 1, shards: ([shard], []))) {
            XCTAssertTrue("\($0)".contains("token id 40"), "\($0)")
        }
    }
}
