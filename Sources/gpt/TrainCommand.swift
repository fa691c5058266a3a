import ArgumentParser
import Dispatch
import Foundation
import SwiftGPT
import Synchronization

/// `gpt train`: train a GPT-2 or Llama family model on token shards, from scratch or from a
/// pretrained model (`--init`: a checkpoint directory or a GGUF file, dequantised to fp32).
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a GPT-2 or Llama model on shards from gpt prepare; writes checkpoints, metrics.jsonl and loss.svg.")

    enum Architecture: String, ExpressibleByArgument, CaseIterable { case gpt2, llama }

    enum Preset: String, ExpressibleByArgument, CaseIterable {
        case tiny, small, gpt2
        /// (layers, heads, embedding, sequence length)
        var shape: (Int, Int, Int, Int) {
            switch self {
            case .tiny: (4, 4, 128, 128)
            case .small: (6, 6, 384, 256)
            case .gpt2: (12, 12, 768, 1024)
            }
        }
    }

    @Option(help: "The directory gpt prepare wrote (shards and tokenizer).") var data: String
    @Option(help: "The checkpoint directory to write.") var out: String
    @Option(help: "Architecture: gpt2 (learned positions, LayerNorm, GELU/ReLU) or llama (RoPE, RMSNorm, SwiGLU, grouped-query attention).")
    var arch: Architecture = .gpt2
    @Option(help: "Start from this pretrained model (checkpoint directory or .gguf) instead of random weights.") var initFrom: String?
    @Option(help: "Model size: tiny (4x128), small (6x384), gpt2 (12x768).") var preset: Preset = .tiny
    @Option(help: "Layers (overrides the preset).") var nLayer: Int?
    @Option(help: "Attention heads.") var nHead: Int?
    @Option(help: "Key/value heads (llama; default: a third of the heads when they divide, else all).") var nKvHead: Int?
    @Option(help: "Embedding width.") var nEmbd: Int?
    @Option(help: "MLP hidden width (default 4x width for gpt2, 8/3x rounded up to 64 for llama).") var nHidden: Int?
    @Option(help: "Context length of the model and of each training row.") var seqLen: Int?
    @Option(help: "MLP activation (gpt2): gelu or relu.") var activation: String = "gelu"
    @Option(help: "Rows per micro-batch.") var batchSize = 16
    @Option(help: "Micro-batches per step.") var gradAccum = 1
    @Option(help: "Optimisation steps (default 1000; with --resume, the saved run's).") var steps: Int?
    @Option(help: "Peak learning rate.") var lr: Float = 1e-3
    @Option(help: "Warmup steps.") var warmup = 100
    @Option(help: "AdamW weight decay (matrices only).") var weightDecay: Float = 0.1
    @Option(help: "Dropout probability.") var dropout: Float = 0
    @Option(help: "Random seed (weights, batches, dropout).") var seed: UInt64 = 1337
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Steps between validation losses and samples (0: never).") var evalInterval = 100
    @Option(help: "Steps between checkpoints (0: only at the end and on Ctrl-C).") var checkpointInterval = 0
    @Flag(help: "Continue the run saved in --out.") var resume = false

    func validate() throws {
        guard batchSize > 0, gradAccum > 0, (steps ?? 1) > 0 else { throw ValidationError("--batch-size, --grad-accum and --steps must be positive") }
        guard lr > 0 else { throw ValidationError("--lr must be positive") }
        guard dropout >= 0 && dropout < 1 else { throw ValidationError("--dropout must be in [0, 1)") }
        guard ["gelu", "relu"].contains(activation) else { throw ValidationError("--activation must be gelu or relu") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let dataURL = URL(fileURLWithPath: data), outURL = URL(fileURLWithPath: out)
        let tokenizer = try Tokenizer.load(path: data)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: data)) ?? []
        let train = try files.filter { $0.hasPrefix("train_") && $0.hasSuffix(".bin") }.sorted()
            .map { try TokenShard.Reader(url: dataURL.appendingPathComponent($0)) }
        let validation = try files.filter { $0.hasPrefix("val_") && $0.hasSuffix(".bin") }.sorted()
            .map { try TokenShard.Reader(url: dataURL.appendingPathComponent($0)) }
        guard !train.isEmpty else { throw ValidationError("\(data): no train_*.bin shards (run gpt prepare first)") }
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared

        let model: LanguageModel
        var options: TrainingOptions
        var chatTemplate: String?
        if resume {
            model = try Checkpoint.load(outURL, pool: pool)
            chatTemplate = Checkpoint.chatTemplate(in: outURL)
            options = try Trainer.savedOptions(in: outURL)
            if let steps { options.steps = steps }
        } else {
            if let initFrom {
                let loaded = try ModelLoader.load(path: initFrom, pool: pool, trainable: true, ggufWeights: .dequantized)
                model = loaded.model
                chatTemplate = loaded.chatTemplateSource
            } else {
                model = try LanguageModel(config: try newConfig(vocabularySize: tokenizer.vocabularySize), pool: pool)
                model.initializeWeights(seed: seed)
            }
            options = TrainingOptions()
            options.batchSize = batchSize
            options.sequenceLength = min(seqLen ?? preset.shape.3, model.config.contextLength)
            options.gradientAccumulation = gradAccum
            options.steps = steps ?? 1000
            options.learningRate = lr
            options.minimumLearningRate = lr / 10
            options.warmupSteps = warmup
            options.weightDecay = weightDecay
            options.evaluationInterval = evalInterval
            options.checkpointInterval = checkpointInterval
            options.seed = seed
        }
        if resume { model.pool = pool }
        let trainer = try Trainer(model: model, tokenizer: tokenizer, train: train, validation: validation, options: options)
        trainer.chatTemplate = chatTemplate
        if resume { try trainer.restore(from: outURL) }
        let config = model.config
        FileHandle.standardError.write(Data("model: \(config.family), \(config.layerCount) layers, \(config.headCount) heads, width \(config.embeddingSize), context \(config.contextLength), \(config.parameterCount.formatted()) parameters; \(pool.threadCount) threads\n".utf8))

        let finished = try runTraining(trainer, out: outURL) { step in
            let sample = try sampleText(model: model, tokenizer: tokenizer, prompt: "\n", maxTokens: 48, seed: UInt64(step))
            return "sample: " + sample.replacingOccurrences(of: "\r", with: "").replacingOccurrences(of: "\n", with: "⏎ ")
        }
        guard finished else { return }
        FileHandle.standardError.write(Data("\ndone: \(out) (model.safetensors, config.json, tokenizer, metrics.jsonl, loss.svg)\n".utf8))
    }

    /// The config of a new model from the preset and the size options.
    func newConfig(vocabularySize: Int) throws -> ModelConfig {
        let (layers, heads, embedding, length) = preset.shape
        let width = nEmbd ?? embedding, headCount = nHead ?? heads
        var config: ModelConfig
        switch arch {
        case .gpt2:
            config = ModelConfig.gpt2(layers: nLayer ?? layers, heads: headCount, embedding: width,
                                      vocabularySize: vocabularySize, contextLength: seqLen ?? length,
                                      activation: activation == "relu" ? .relu : .gelu, dropout: dropout)
            if let nHidden { config.hiddenSize = nHidden }
        case .llama:
            let hidden = nHidden ?? (8 * width / 3 + 63) / 64 * 64
            config = ModelConfig.llama(layers: nLayer ?? layers, heads: headCount,
                                       keyValueHeads: nKvHead ?? (headCount % 3 == 0 ? headCount / 3 : headCount),
                                       embedding: width, hidden: hidden, vocabularySize: vocabularySize,
                                       contextLength: seqLen ?? length, dropout: dropout)
        }
        let problems = config.problems
        guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "; ")) }
        return config
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds)
    return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
}

/// Set by Ctrl-C (SIGINT) so the loop can save a checkpoint before it exits.
final class InterruptFlag: @unchecked Sendable {
    private let flag = Atomic<Bool>(false)
    private var source: DispatchSourceSignal?

    init() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [weak self] in self?.flag.store(true, ordering: .relaxed) }
        source.resume()
        self.source = source
    }

    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// metrics.jsonl: one JSON object per step.
final class MetricsLog {
    let handle: FileHandle

    /// Opens the log, dropping lines past `step` (a resumed run rewrites what follows).
    init(url: URL, truncateAfter step: Int) throws {
        var kept = ""
        if step > 0, let text = try? String(contentsOf: url, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                   let lineStep = object["step"] as? Int, lineStep <= step {
                    kept += line + "\n"
                }
            }
        }
        try Data(kept.utf8).write(to: url, options: .atomic)
        handle = try FileHandle(forWritingTo: url)
        handle.seekToEndOfFile()
    }

    func append(_ report: StepReport) throws {
        var fields = [
            "\"step\":\(report.step)", "\"train_loss\":\(report.trainLoss)", "\"lr\":\(report.learningRate)",
            "\"grad_norm\":\(report.gradientNorm)", String(format: "\"tokens_per_sec\":%.1f", report.tokensPerSecond),
        ]
        if let validationLoss = report.validationLoss { fields.append("\"val_loss\":\(validationLoss)") }
        try handle.write(contentsOf: Data(("{" + fields.joined(separator: ",") + "}\n").utf8))
    }

    static func read(_ url: URL) throws -> (train: [(step: Int, loss: Float)], validation: [(step: Int, loss: Float)]) {
        var train: [(step: Int, loss: Float)] = [], validation: [(step: Int, loss: Float)] = []
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = object["step"] as? Int else { continue }
            if let loss = object["train_loss"] as? Double { train.append((step, Float(loss))) }
            if let loss = object["val_loss"] as? Double { validation.append((step, Float(loss))) }
        }
        return (train, validation)
    }
}
