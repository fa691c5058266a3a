import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench answers`: exact-match accuracy of a chat model's greedy answers on held-out
/// conversations (JSONL {"messages": [...]}, the last message the expected assistant answer),
/// and how many parse as the expected JSON object (when answers are JSON), with or without a
/// LoRA adapter: the before/after figure of a fine-tune.
struct AnswersBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "answers",
        abstract: "Exact-match accuracy of greedy chat answers on held-out JSONL conversations (optionally with --lora).")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A LoRA adapter directory to apply.") var lora: String?
    @Option(help: "JSONL of {\"messages\": [...]}, each ending with the expected assistant message.") var test: String
    @Option(help: "Score at most this many conversations.") var limit: Int?
    @Option(help: "Print this many answers.") var show = 3
    @Option(help: "Tokens to generate at most per answer.") var maxTokens = 48

    func run() throws {
        let loaded = try ModelLoader.load(path: model, lora: lora)
        guard let template = loaded.chatTemplate, template.format != .unknown else {
            throw ValidationError("\(model): no chat template SwiftGPT recognises")
        }
        let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer)
        let options = GenerationOptions(maxTokens: maxTokens, sampling: SamplingOptions(temperature: 0),
                                        stop: template.endOfTurn.map { [$0] } ?? [])
        guard let text = try? String(contentsOfFile: test, encoding: .utf8) else { throw ValidationError("\(test): cannot read") }
        var correct = 0, sameJSON = 0, total = 0
        let started = Date()
        for (index, line) in text.split(separator: "\n").enumerated() where limit.map({ total < $0 }) ?? true {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let list = object["messages"] as? [[String: String]], let last = list.last, last["role"] == "assistant",
                  let expected = last["content"] else {
                throw ValidationError("\(test):\(index + 1): expected {\"messages\": [...]} ending with an assistant message")
            }
            let prompt = list.dropLast().map { ChatTemplate.Message(role: $0["role"] ?? "", content: $0["content"] ?? "") }
            let answer = try generator.generate(prompt: try template.tokens(Array(prompt), tokenizer: loaded.tokenizer), options: options)
                .text.trimmingCharacters(in: .whitespacesAndNewlines)
            total += 1
            if answer == expected { correct += 1 }
            if let ours = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? NSDictionary,
               let theirs = try? JSONSerialization.jsonObject(with: Data(expected.utf8)) as? NSDictionary, ours == theirs { sameJSON += 1 }
            if total <= show { print("[\(answer == expected ? "ok" : "wrong")] \(answer.replacingOccurrences(of: "\n", with: "⏎ "))") }
        }
        print(String(format: "exact match: %d/%d = %.1f%%; the same JSON object: %d/%d = %.1f%% (%@%@, %.0f s)", correct, total,
                     100 * Double(correct) / Double(max(1, total)), sameJSON, total, 100 * Double(sameJSON) / Double(max(1, total)),
                     URL(fileURLWithPath: model).lastPathComponent, lora.map { " + " + $0 } ?? "", Date().timeIntervalSince(started)))
    }
}
