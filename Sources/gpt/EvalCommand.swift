import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt eval --text`: perplexity of a text (lm-evaluation-harness's rolling windows, or
/// llama.cpp's `llama-perplexity` rule with --score-from).
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Perplexity and bits per byte of a text (lm-eval's rolling windows, or llama.cpp's rule with --score-from).")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A LoRA adapter directory (PEFT layout, from gpt finetune) to apply to the model.") var lora: String?
    @Option(help: "The UTF-8 text to score.") var text: String
    @Option(help: "Tokens per window (default: the model's context, at most 2048).") var window: Int?
    @Option(help: "Tokens between window starts; with --score-from it must equal --window (llama.cpp's rule).") var stride: Int?
    @Option(help: "llama.cpp's rule: non-overlapping windows, only positions F..W-2 predict (e.g. --window 512 --score-from 256).")
    var scoreFrom: Int?
    @Option(help: "Windows per batched step.") var batch = 4
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Write the figures as JSON here.") var output: String?

    func validate() throws {
        if let window, window < 2 { throw ValidationError("--window must be at least 2") }
        if let stride, stride != (window ?? stride) { throw ValidationError("--stride other than --window is not supported; windows do not overlap") }
        if let scoreFrom, scoreFrom < 0 { throw ValidationError("--score-from must be >= 0") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        let loaded = try ModelLoader.load(path: model, lora: lora, pool: pool)
        let content = try readUTF8(text), bytes = content.utf8.count
        let ids = loaded.tokenizer.encode(content)
        let size = window ?? min(loaded.model.config.contextLength, 2048)
        let rule: Perplexity.Rule
        if let scoreFrom {
            rule = .windows(size: size, scoreFrom: scoreFrom)
        } else {
            let prefix = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<s>"].lazy.compactMap { loaded.tokenizer.id(of: $0) }.first ?? 0
            rule = .rolling(window: size, prefixToken: prefix)
        }
        let start = Date()
        let interactive = isatty(STDERR_FILENO) != 0
        let result = try Perplexity.evaluate(loaded.model, tokens: ids, rule: rule, batch: batch) { done, total in
            guard interactive else { return }
            let elapsed = Date().timeIntervalSince(start), eta = elapsed / Double(done) * Double(total - done)
            FileHandle.standardError.write(Data(String(format: "\rwindow %d/%d  %.0f s, ETA %.0f s ", done, total, elapsed, eta).utf8))
        }
        if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
        let seconds = Date().timeIntervalSince(start)
        let score = LanguageModelingScore(negativeLogLikelihood: result.negativeLogLikelihood, tokens: result.tokens, bytes: bytes)
        let words = content.split(whereSeparator: \.isWhitespace).count
        var figures: [(String, Double)] = [("token_perplexity", score.perplexity), ("tokens_scored", Double(result.tokens)),
                                           ("seconds", seconds)]
        if scoreFrom == nil {
            // Every token is scored once: per-word and per-byte figures are the text's (lm-eval's definitions).
            figures += [("word_perplexity", exp(result.negativeLogLikelihood / Double(max(1, words)))),
                        ("byte_perplexity", exp(result.negativeLogLikelihood / Double(max(1, bytes)))),
                        ("bits_per_byte", score.bitsPerByte)]
        }
        let width = figures.map(\.0.count).max() ?? 0
        for (name, value) in figures {
            let formatted = name == "tokens_scored" ? String(Int(value)) : String(format: name == "seconds" ? "%.1f" : "%.4f", value)
            print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + formatted)
        }
        if let output {
            var object: [String: Any] = Dictionary(uniqueKeysWithValues: figures.map { ($0.0, $0.1) })
            object["model"] = model
            object["text"] = text
            object["rule"] = scoreFrom == nil ? "rolling (lm-eval)" : "windows (llama.cpp)"
            object["window"] = size
            if let scoreFrom { object["score_from"] = scoreFrom }
            let json = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            do { try json.write(to: URL(fileURLWithPath: output), options: .atomic) } catch {
                throw ValidationError("\(output): cannot write (\((error as NSError).localizedDescription))")
            }
        }
    }
}
