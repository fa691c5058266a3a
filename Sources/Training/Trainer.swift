import BPE
import Foundation
import Kernels
import Transformer

/// Everything that shapes a training run; saved with each checkpoint so a run resumes as it was.
public struct TrainingOptions: Codable, Sendable, Equatable {
    public var batchSize = 8
    public var sequenceLength = 64
    public var gradientAccumulation = 1
    public var steps = 1000
    public var learningRate: Float = 1e-3
    public var minimumLearningRate: Float = 1e-4
    public var warmupSteps = 100
    public var weightDecay: Float = 0.1
    public var gradientClip: Float = 1.0
    public var evaluationInterval = 100
    public var evaluationBatches = 20
    public var checkpointInterval = 0
    public var seed: UInt64 = 1337

    public init() {}
}

/// One step's figures, for the progress line and metrics.jsonl.
public struct StepReport: Sendable {
    public var step: Int
    public var trainLoss: Float
    public var validationLoss: Float?
    public var learningRate: Float
    public var gradientNorm: Float
    public var tokensPerSecond: Double
    public var elapsed: Double
}

/// The training loop: gradient accumulation over micro-batches, global-norm clipping, AdamW with
/// warmup and cosine decay, periodic validation, and checkpoints that resume exactly (same seed,
/// same thread count: the same bits as a run that never stopped).
public final class Trainer {
    public let model: LanguageModel
    public let optimizer: AdamWOptimizer
    public let options: TrainingOptions
    public let tokenizer: Tokenizer?
    /// Saved with the tokenizer in each checkpoint (a chat model's template).
    public var chatTemplate: String?
    public private(set) var sampler: BatchSampler
    public let validation: [(inputs: [Int32], targets: [Int32])]
    public let schedule: LearningRateSchedule
    public private(set) var step = 0
    public private(set) var history: [StepReport] = []

    public init(model: LanguageModel, tokenizer: Tokenizer?, train: [TokenShard.Reader], validation: [TokenShard.Reader],
                options: TrainingOptions) throws {
        guard options.batchSize > 0, options.sequenceLength > 0, options.gradientAccumulation > 0, options.steps > 0 else {
            throw ModelError("batch size, sequence length, gradient accumulation and steps must be positive")
        }
        guard options.sequenceLength <= model.config.contextLength else {
            throw ModelError("--seq-len \(options.sequenceLength) exceeds the model's context length \(model.config.contextLength)")
        }
        let maxToken = train.map { $0.maximumToken() }.max() ?? 0
        guard maxToken < model.config.vocabularySize else {
            throw ModelError("the data holds token id \(maxToken) but the model's vocabulary has \(model.config.vocabularySize) ids")
        }
        self.model = model
        self.tokenizer = tokenizer
        self.options = options
        optimizer = AdamWOptimizer(parameterCount: model.layout.totalCount,
                                   settings: AdamWSettings(learningRate: options.learningRate, weightDecay: options.weightDecay))
        sampler = try BatchSampler(shards: train, seed: options.seed)
        self.validation = BatchSampler.evaluationBatches(validation, batch: options.batchSize, length: options.sequenceLength,
                                                         maximumBatches: options.evaluationBatches)
        schedule = LearningRateSchedule(peak: options.learningRate, minimum: options.minimumLearningRate,
                                        warmupSteps: options.warmupSteps, totalSteps: options.steps)
    }

    /// Mean loss over the validation batches (nil without validation data).
    public func validationLoss() throws -> Float? {
        guard !validation.isEmpty else { return nil }
        var total: Double = 0
        for batch in validation {
            total += Double(try model.forward(tokens: batch.inputs, targets: batch.targets, batch: options.batchSize,
                                              length: options.sequenceLength) ?? 0)
        }
        return Float(total / Double(validation.count))
    }

    /// Takes one optimisation step (all micro-batches) and returns its report.
    public func trainStep() throws -> StepReport {
        let start = DispatchTime.now().uptimeNanoseconds
        model.zeroGradients()
        var loss: Double = 0
        for micro in 0..<options.gradientAccumulation {
            let batch = try sampler.next(batch: options.batchSize, length: options.sequenceLength)
            let dropoutSeed = options.seed &+ UInt64(step) &* 1_000_003 &+ UInt64(micro)
            loss += Double(try model.forward(tokens: batch.inputs, targets: batch.targets, batch: options.batchSize,
                                             length: options.sequenceLength, training: true, dropoutSeed: dropoutSeed) ?? 0)
            model.backward()
        }
        if options.gradientAccumulation > 1 {
            let scale = 1 / Float(options.gradientAccumulation)
            for i in model.gradients.indices { model.gradients[i] *= scale }
        }
        let norm = clipGradientNorm(model.gradients, maxNorm: options.gradientClip, pool: model.pool)
        let rate = schedule.rate(at: step)
        optimizer.update(model, learningRate: rate)
        step += 1
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let tokens = Double(options.batchSize * options.sequenceLength * options.gradientAccumulation)
        var report = StepReport(step: step, trainLoss: Float(loss / Double(options.gradientAccumulation)),
                                validationLoss: nil, learningRate: rate, gradientNorm: norm,
                                tokensPerSecond: tokens / seconds, elapsed: seconds)
        if options.evaluationInterval > 0 && (step % options.evaluationInterval == 0 || step == options.steps) {
            report.validationLoss = try validationLoss()
        }
        history.append(report)
        return report
    }

    // MARK: checkpoints

    /// The trainer's own state, beside the Hugging Face files of `Checkpoint.save`.
    struct State: Codable {
        var step: Int
        var samplerState: UInt64
        var optimizerStep: Int
        var options: TrainingOptions
        var threads: Int
    }

    /// Saves the model, tokenizer, optimizer moments and trainer state into `directory`.
    public func save(to directory: URL) throws {
        try Checkpoint.save(model, tokenizer: tokenizer, chatTemplate: chatTemplate, to: directory)
        try SafetensorsFile.write([
            (name: "exp_avg", shape: [optimizer.firstMoment.count], values: UnsafeBufferPointer(optimizer.firstMoment)),
            (name: "exp_avg_sq", shape: [optimizer.secondMoment.count], values: UnsafeBufferPointer(optimizer.secondMoment)),
        ], to: directory.appendingPathComponent("optimizer.safetensors"))
        let state = State(step: step, samplerState: sampler.generator.state, optimizerStep: optimizer.step,
                          options: options, threads: model.pool.threadCount)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try encoder.encode(state).write(to: directory.appendingPathComponent("trainer_state.json"), options: .atomic)
        } catch {
            throw ModelError("\(directory.path)/trainer_state.json: cannot write (\((error as NSError).localizedDescription))")
        }
    }

    /// Restores the optimizer, sampler position and step from a directory `save` wrote (the model
    /// weights must already be loaded from it). Returns the options the run was started with.
    public func restore(from directory: URL) throws {
        let url = directory.appendingPathComponent("trainer_state.json")
        guard let data = FileManager.default.contents(atPath: url.path),
              let state = try? JSONDecoder().decode(State.self, from: data) else {
            throw ModelError("\(url.path): missing or unreadable; cannot resume from \(directory.path)")
        }
        let file = try SafetensorsFile(url: directory.appendingPathComponent("optimizer.safetensors"))
        try file.read("exp_avg", into: optimizer.firstMoment)
        try file.read("exp_avg_sq", into: optimizer.secondMoment)
        optimizer.step = state.optimizerStep
        sampler.generator = SplitMix64(seed: state.samplerState)
        step = state.step
    }

    /// The options saved in a checkpoint directory's trainer_state.json.
    public static func savedOptions(in directory: URL) throws -> TrainingOptions {
        let url = directory.appendingPathComponent("trainer_state.json")
        guard let data = FileManager.default.contents(atPath: url.path),
              let state = try? JSONDecoder().decode(State.self, from: data) else {
            throw ModelError("\(url.path): missing or unreadable; cannot resume from \(directory.path)")
        }
        return state.options
    }
}
