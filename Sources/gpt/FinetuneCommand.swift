import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt finetune`: fine-tune a pretrained model (checkpoint directory or GGUF file) on JSONL
/// examples, every weight (`--method full`, GGUF matrices dequantised) or LoRA adapters over a
/// frozen base (`--method lora`; from GGUF the base stays quantised in place, QLoRA-style).
///
///     gpt finetune --model SmolLM2-135M-Instruct.Q4_1.gguf --data train.jsonl --val val.jsonl --out run --epochs 3
///     gpt chat --model SmolLM2-135M-Instruct.Q4_1.gguf --lora run
struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a model on JSONL examples ({prompt, completion}, {text} or {messages}): LoRA adapters (PEFT layout) or all weights.")

    enum Method: String, ExpressibleByArgument, CaseIterable, Codable { case full, lora }
    enum Augmentation: String, ExpressibleByArgument, CaseIterable, Codable { case counterfactual }

    @Option(help: "The base model: a .gguf file or a checkpoint directory.") var model: String?
    @Option(help: "Training examples, JSONL.") var data: String?
    @Option(help: "Validation examples, JSONL.") var val: String?
    @Option(help: "The directory to write (LoRA: adapter_config.json + adapter_model.safetensors; full: a checkpoint).") var out: String
    @Option(help: "full (every weight) or lora (adapters over a frozen base).") var method: Method = .lora
    @Option(help: "LoRA rank.") var loraRank = 8
    @Option(help: "LoRA alpha (the update is scaled by alpha / rank).") var loraAlpha: Float = 16
    @Option(help: "Dropout on the adapters' inputs.") var loraDropout: Float = 0.05
    @Option(help: "Comma-separated projections to adapt (llama: q,k,v,o,gate,up,down; gpt2: c_attn,c_proj,c_fc,mlp.c_proj); default all.")
    var loraTargets: String?
    @Option(help: "Passes over the training data (default 1, unless --steps).") var epochs: Int?
    @Option(help: "Optimisation steps (instead of --epochs).") var steps: Int?
    @Option(help: "Peak learning rate (default 2e-4 for LoRA, 2e-5 for full).") var lr: Float?
    @Option(help: "Warmup steps (default a tenth of the steps, at most 100).") var warmup: Int?
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0
    @Option(help: "Rows per micro-batch.") var batchSize = 8
    @Option(help: "Micro-batches per step.") var gradAccum = 1
    @Option(help: "Tokens per row (examples are packed into rows).") var seqLen = 256
    @Option(help: "Random seed (adapters, shuffling, dropout).") var seed: UInt64 = 1337
    @Option(help: "Add a mirrored copy of each example: counterfactual (gendered words and names swapped).") var augment: Augmentation?
    @Option(help: "Steps between validation losses (0: only at the end).") var evalInterval = 50
    @Option(help: "Steps between checkpoints (0: only at the end and on Ctrl-C).") var checkpointInterval = 0
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Continue the run saved in --out (its model, data and settings).") var resume = false

    /// What a run needs to resume, saved as finetune.json beside its checkpoint.
    struct Run: Codable {
        var model: String
        var data: String
        var validation: String?
        var method: Method
        var lora: LoRASettings?
        var augment: Augmentation?
    }

    func validate() throws {
        guard batchSize > 0, gradAccum > 0, seqLen > 1 else { throw ValidationError("--batch-size and --grad-accum must be positive, --seq-len above 1") }
        if let epochs, epochs <= 0 { throw ValidationError("--epochs must be positive") }
        if let steps, steps <= 0 { throw ValidationError("--steps must be positive") }
        guard epochs == nil || steps == nil else { throw ValidationError("give --epochs or --steps, not both") }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
        guard loraRank > 0 else { throw ValidationError("--lora-rank must be positive") }
        guard loraDropout >= 0 && loraDropout < 1 else { throw ValidationError("--lora-dropout must be in [0, 1)") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
        if !resume {
            guard model != nil else { throw ValidationError("--model is required (unless --resume)") }
            guard data != nil else { throw ValidationError("--data is required (unless --resume)") }
        }
    }

    func run() throws {
        let outURL = URL(fileURLWithPath: out)
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        let runURL = outURL.appendingPathComponent("finetune.json")
        let run: Run
        if resume {
            guard let data = FileManager.default.contents(atPath: runURL.path), let saved = try? JSONDecoder().decode(Run.self, from: data) else {
                throw ValidationError("\(runURL.path): missing or unreadable; nothing to resume in \(out)")
            }
            run = saved
        } else {
            run = Run(model: model!, data: data!, validation: val, method: method,
                      lora: method == .lora ? LoRASettings(rank: loraRank, alpha: loraAlpha, dropout: loraDropout,
                                                           targets: loraTargets.map(parseTargets)) : nil,
                      augment: augment)
        }

        // The model: all weights training, or a frozen base (quantised in place from GGUF) with adapters.
        let loaded = try ModelLoader.load(path: run.model, pool: pool, trainable: run.method == .full,
                                          ggufWeights: run.method == .full ? .dequantized : .inPlace)
        var model = loaded.model
        if resume && run.method == .full {
            // The run's weights, with q and k rows in the base's RoPE order as the optimizer moments are.
            model = try Checkpoint.load(outURL, pool: pool, rotaryPairing: loaded.model.config.rotaryPairing)
        }
        if let settings = run.lora {
            let adapters = resume ? try LoRAAdapters.load(outURL, config: model.config) : try LoRAAdapters(config: model.config, settings: settings)
            if !resume { adapters.initialize(seed: seed) }
            try model.attach(adapters)
        }
        let template = loaded.chatTemplate

        // The data: examples (and their mirrored copies), packed into rows.
        let tokenizer = loaded.tokenizer
        var examples = try FinetuneData.read(URL(fileURLWithPath: run.data), tokenizer: tokenizer, chatTemplate: template)
        var note = "\(examples.count) examples"
        if run.augment == .counterfactual {
            let mirrored = try FinetuneData.read(URL(fileURLWithPath: run.data), tokenizer: tokenizer, chatTemplate: template,
                                                 transform: CounterfactualAugmentation.swap)
            let added = zip(examples, mirrored).filter { $0 != $1 }.map(\.1)
            examples += added
            note += " + \(added.count) counterfactual copies"
        }
        let padding = Int32(["<|endoftext|>", "</s>", "<|end_of_text|>"].lazy.compactMap { tokenizer.specialTokens[$0] }.first ?? 0)
        var options = resume ? try Trainer.savedOptions(in: outURL) : TrainingOptions()
        let length = resume ? options.sequenceLength : min(seqLen, model.config.contextLength)
        let batches = try FinetuneBatches(examples, length: length, padding: padding, seed: resume ? options.seed : seed)
        let validation = try run.validation.map {
            try FinetuneBatches(try FinetuneData.read(URL(fileURLWithPath: $0), tokenizer: tokenizer, chatTemplate: template),
                                length: length, padding: padding, seed: 0).evaluationBatches(batch: resume ? options.batchSize : batchSize)
        } ?? []
        if resume {
            if let steps { options.steps = steps }
        } else {
            let stepsPerEpoch = (batches.rows.count + batchSize * gradAccum - 1) / (batchSize * gradAccum)
            options.batchSize = batchSize
            options.gradientAccumulation = gradAccum
            options.sequenceLength = length
            options.steps = steps ?? (epochs ?? 1) * stepsPerEpoch
            options.learningRate = lr ?? (method == .lora ? 2e-4 : 2e-5)
            options.minimumLearningRate = options.learningRate / 10
            options.warmupSteps = warmup ?? min(100, options.steps / 10)
            options.weightDecay = weightDecay
            options.evaluationInterval = evalInterval > 0 ? evalInterval : options.steps
            options.evaluationBatches = validation.count
            options.checkpointInterval = checkpointInterval
            options.seed = seed
        }
        let trainer = try Trainer(model: model, tokenizer: tokenizer, batches: batches, validation: validation, options: options)
        trainer.chatTemplate = loaded.chatTemplateSource
        if resume { try trainer.restore(from: outURL) }
        let trained = model.trainedTensors.layout.totalCount, config = model.config
        FileHandle.standardError.write(Data("""
            model: \(config.family), \(config.layerCount) layers, width \(config.embeddingSize), \(config.parameterCount.formatted()) parameters; \
            training \(trained.formatted()) (\(run.method.rawValue)\(run.lora.map { ", rank \($0.rank), alpha \(Int($0.alpha))" } ?? "")); \(pool.threadCount) threads
            data: \(note); \(batches.rows.count) rows of \(length) tokens\(batches.truncated > 0 ? ", \(batches.truncated) examples cut to fit" : ""); \
            \(options.steps) steps of \(options.batchSize * options.gradientAccumulation) rows\(validation.isEmpty ? "" : "; \(validation.count) validation batches")

            """.utf8))
        if !resume {
            try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(run).write(to: runURL, options: .atomic)
        }
        guard try runTraining(trainer, out: outURL) else { return }
        let files = run.method == .lora ? "adapter_config.json, adapter_model.safetensors" : "model.safetensors, config.json, tokenizer"
        FileHandle.standardError.write(Data("\ndone: \(out) (\(files), metrics.jsonl, loss.svg)\n".utf8))
    }

    func parseTargets(_ list: String) -> [String] {
        list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}
