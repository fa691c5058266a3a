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

/// Where training batches come from. `position` is the whole state: a resumed run that sets it
/// draws the batches a run that never stopped would have drawn.
public protocol TrainingBatches: Sendable {
    mutating func next(batch: Int, length: Int) throws -> (inputs: [Int32], targets: [Int32])
    var position: UInt64 { get set }
}

extension BatchSampler: TrainingBatches {
    public var position: UInt64 {
        get { generator.state }
        set { generator = SplitMix64(seed: newValue) }
    }
}

/// The training loop: gradient accumulation over micro-batches, global-norm clipping, AdamW with
/// warmup and cosine decay, periodic validation, and checkpoints that resume exactly (same seed,
/// same thread count: the same bits as a run that never stopped). It trains what the model
/// trains (`LanguageModel.trainedTensors`): every weight, or the LoRA adapters when attached.
public final class Trainer {
    public let model: LanguageModel
    public let optimizer: AdamWOptimizer
    public let options: TrainingOptions
    public let tokenizer: Tokenizer?
    /// Saved with the tokenizer in each checkpoint (a chat model's template).
    public var chatTemplate: String?
    public private(set) var sampler: any TrainingBatches
    public let validation: [(inputs: [Int32], targets: [Int32])]
    public let schedule: LearningRateSchedule
    public private(set) var step = 0
    public private(set) var history: [StepReport] = []

    /// Pre-training on token shards: random windows, validation on evenly spaced ones.
    public convenience init(model: LanguageModel, tokenizer: Tokenizer?, train: [TokenShard.Reader], validation: [TokenShard.Reader],
                            options: TrainingOptions) throws {
        let maxToken = train.map { $0.maximumToken() }.max() ?? 0
        guard maxToken < model.config.vocabularySize else {
            throw ModelError("the data holds token id \(maxToken) but the model's vocabulary has \(model.config.vocabularySize) ids")
        }
        try self.init(model: model, tokenizer: tokenizer, batches: try BatchSampler(shards: train, seed: options.seed),
                      validation: BatchSampler.evaluationBatches(validation, batch: options.batchSize, length: options.sequenceLength,
                                                                 maximumBatches: options.evaluationBatches),
                      options: options)
    }

    /// Training on any batches (fine-tuning data), validated on fixed `validation` batches.
    public init(model: LanguageModel, tokenizer: Tokenizer?, batches: any TrainingBatches,
                validation: [(inputs: [Int32], targets: [Int32])], options: TrainingOptions) throws {
        guard options.batchSize > 0, options.sequenceLength > 0, options.gradientAccumulation > 0, options.steps > 0 else {
            throw ModelError("batch size, sequence length, gradient accumulation and steps must be positive")
        }
        guard options.sequenceLength <= model.config.contextLength else {
            throw ModelError("--seq-len \(options.sequenceLength) exceeds the model's context length \(model.config.contextLength)")
        }
        guard model.trainable || model.adapters != nil else { throw ModelError("the model has neither gradients nor LoRA adapters to train") }
        self.model = model
        self.tokenizer = tokenizer
        self.options = options
        optimizer = AdamWOptimizer(parameterCount: model.trainedTensors.layout.totalCount,
                                   settings: AdamWSettings(learningRate: options.learningRate, weightDecay: options.weightDecay))
        sampler = batches
        self.validation = validation
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
        let gradients = model.trainedTensors.gradients
        if options.gradientAccumulation > 1 {
            let scale = 1 / Float(options.gradientAccumulation)
            for i in gradients.indices { gradients[i] *= scale }
        }
        let norm = clipGradientNorm(gradients, maxNorm: options.gradientClip, pool: model.pool)
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

    /// Saves the model (or, with adapters, the adapters in PEFT's layout), tokenizer, optimizer
    /// moments and trainer state into `directory`.
    public func save(to directory: URL) throws {
        if let adapters = model.adapters {
            try adapters.save(to: directory)
        } else {
            try Checkpoint.save(model, tokenizer: tokenizer, chatTemplate: chatTemplate, to: directory)
        }
        try SafetensorsFile.write([
            (name: "exp_avg", shape: [optimizer.firstMoment.count], values: UnsafeBufferPointer(optimizer.firstMoment)),
            (name: "exp_avg_sq", shape: [optimizer.secondMoment.count], values: UnsafeBufferPointer(optimizer.secondMoment)),
        ], to: directory.appendingPathComponent("optimizer.safetensors"))
        let state = State(step: step, samplerState: sampler.position, optimizerStep: optimizer.step,
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
        sampler.position = state.samplerState
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
