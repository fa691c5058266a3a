import ArgumentParser
import Foundation
import SwiftGPT

/// Sampling options shared by `gpt generate` and `gpt chat`.
struct SamplingArguments: ParsableArguments {
    @Option(help: "Tokens to generate at most.") var maxTokens = 256
    @Option(help: "Temperature (0: greedy).") var temperature: Float = 0.7
    @Option(help: "Keep the K most likely tokens.") var topK: Int?
    @Option(help: "Keep the most likely tokens up to this total probability.") var topP: Float?
    @Option(help: "Drop tokens below this fraction of the most likely one.") var minP: Float?
    @Option(help: "Penalty > 1 for tokens already seen.") var repetitionPenalty: Float = 1
    @Option(help: "Random seed (same seed, same output).") var seed: UInt64 = 0
    @Option(name: .long, parsing: .upToNextOption, help: "Stop where this text appears (repeatable).") var stop: [String] = []
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Self-debiasing (Schick et al. 2021) against a bias type: race, gender, religion, socioeconomic, nationality, ... or all.")
    var debias: String?
    @Option(help: "Self-debiasing's decay constant lambda.") var debiasDecay: Float = 50
    @Option(help: "How the KV cache stores keys and values: f32, or f16 (half the memory and attention reads; rounded to fp16).") var kvType: KVStorage = .f32

    /// A generator for the model, self-debiasing with --debias.
    func generator(_ loaded: ModelLoader.Loaded) throws -> Generator {
        guard debiasDecay > 0 else { throw ValidationError("--debias-decay must be positive") }
        if let debias, debias != "all", !SelfDebiasing.biasTypes.contains(debias.lowercased()) {
            throw ValidationError("--debias \(debias): not one of all, \(SelfDebiasing.biasTypes.joined(separator: ", "))")
        }
        loaded.model.keyValueStorage = kvType
        let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer)
        generator.debiasing = debias.map { SelfDebiasing(prefixes: SelfDebiasing.prefixes(for: $0 == "all" ? nil : $0), decay: debiasDecay) }
        return generator
    }

    func options() throws -> GenerationOptions {
        var sampling = SamplingOptions(temperature: temperature, topK: topK, topP: topP, minP: minP, seed: seed)
        sampling.repetitionPenalty = repetitionPenalty
        if let problem = sampling.problems.first { throw ValidationError(problem) }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must be >= 0") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
        return GenerationOptions(maxTokens: maxTokens, sampling: sampling, stop: stop)
    }

    var pool: ThreadPool { threads.map { ThreadPool(threadCount: $0) } ?? .shared }
}

/// `gpt generate`: continue a prompt, printing the text as it comes.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt with a model (.gguf file or checkpoint directory), streaming the text.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "The text to continue.") var prompt: String
    @Option(help: "A LoRA adapter directory (PEFT layout, from gpt finetune) to apply to the model.") var lora: String?
    @OptionGroup var sampling: SamplingArguments
    @Flag(help: "Print timings on stderr.") var verbose = false

    func run() throws {
        let options = try sampling.options()
        let loaded = try ModelLoader.load(path: model, lora: lora, pool: sampling.pool)
        let tokenizer = loaded.tokenizer
        let generator = try sampling.generator(loaded)
        let ids = tokenizer.encode(prompt, allowedSpecial: .all)
        let result = try generator.generate(prompt: ids, options: options) { event in
            FileHandle.standardOutput.write(Data(event.text.utf8))
            return true
        }
        print()
        if verbose {
            FileHandle.standardError.write(Data(String(
                format: "prompt: %d tokens in %.2f s (%.1f tok/s); generated %d tokens in %.2f s (%.1f tok/s); finish: %@\n",
                result.promptTokens, result.promptSeconds, Double(result.promptTokens) / max(result.promptSeconds, 1e-9),
                result.tokens.count, result.generationSeconds, Double(result.tokens.count) / max(result.generationSeconds, 1e-9),
                result.finishReason.rawValue).utf8))
        }
    }
}

/// `gpt chat`: a conversation in the model's chat format, from a terminal or a pipe.
struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model using its chat template; one user turn per line of input.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A system message (default: the template's own, if any).") var system: String?
    @Option(help: "A LoRA adapter directory (PEFT layout, from gpt finetune) to apply to the model.") var lora: String?
    @OptionGroup var sampling: SamplingArguments

    func run() throws {
        var options = try sampling.options()
        let loaded = try ModelLoader.load(path: model, lora: lora, pool: sampling.pool)
        let (tokenizer, template) = (loaded.tokenizer, loaded.chatTemplate)
        guard let template, template.format != .unknown else {
            throw ValidationError("the model has no chat template SwiftGPT recognises (ChatML, Llama 3, Zephyr); use gpt generate")
        }
        if let end = template.endOfTurn { options.stop.append(end) }
        let generator = try sampling.generator(loaded)
        var messages: [ChatTemplate.Message] = system.map { [.init(role: "system", content: $0)] } ?? []
        let interactive = isatty(STDIN_FILENO) != 0
        while true {
            if interactive { FileHandle.standardOutput.write(Data("> ".utf8)) }
            guard let line = readLine() else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            messages.append(.init(role: "user", content: input))
            let ids = try template.tokens(messages, tokenizer: tokenizer)
            let result = try generator.generate(prompt: ids, options: options) { event in
                FileHandle.standardOutput.write(Data(event.text.utf8))
                return true
            }
            print()
            messages.append(.init(role: "assistant", content: result.text))
        }
    }
}

extension KVStorage: ExpressibleByArgument {}
