import BPE
import Foundation
import Kernels
import Transformer

/// One fine-tuning example as token ids, with which of them the loss counts (completion and
/// assistant tokens; prompt, system and user tokens only condition).
public struct FinetuneExample: Sendable, Equatable {
    public var tokens: [Int32]
    /// trains[i]: predicting tokens[i] (from what comes before it) counts in the loss.
    public var trains: [Bool]

    public init(tokens: [Int32], trains: [Bool]) {
        self.tokens = tokens
        self.trains = trains
    }

    mutating func append(_ ids: [Int], trains: Bool) {
        tokens += ids.map(Int32.init)
        self.trains += [Bool](repeating: trains, count: ids.count)
    }
}

/// Fine-tuning data in JSONL, one example a line, in any of three shapes:
///
///     {"prompt": "Q: 2+2?", "completion": " 4"}        loss on the completion and the end-of-text token
///     {"text": "Once upon a time"}                      loss on every token
///     {"messages": [{"role": "user", "content": "Hi"},  the model's chat template rendered to ids
///                   {"role": "assistant", "content": "Hello"}]}   (content never parsed for special
///                                                       tokens); loss on the assistant turns only
public enum FinetuneData {
    /// The examples of a JSONL file. Malformed lines are all reported in one error, each with its
    /// line number; blank lines are skipped.
    public static func read(_ url: URL, tokenizer: Tokenizer, chatTemplate: ChatTemplate?,
                            transform: ((String) -> String)? = nil) throws -> [FinetuneExample] {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError("\(url.path): no such file or unreadable")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ModelError("\(url.path): not UTF-8 text") }
        var examples: [FinetuneExample] = [], problems: [String] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard !line.allSatisfy(\.isWhitespace) else { continue }
            do {
                examples.append(try example(String(line), tokenizer: tokenizer, chatTemplate: chatTemplate, transform: transform))
            } catch {
                problems.append("\(url.lastPathComponent):\(index + 1): \(error)")
            }
        }
        guard problems.isEmpty else {
            let shown = problems.prefix(10).joined(separator: "\n  ")
            throw ModelError("\(url.path): \(problems.count) malformed line\(problems.count == 1 ? "" : "s"):\n  \(shown)"
                             + (problems.count > 10 ? "\n  ..." : ""))
        }
        guard !examples.isEmpty else { throw ModelError("\(url.path): no examples") }
        return examples
    }

    struct LineError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// The end-of-text token text and other examples follow (the tokenizer's own).
    static func endOfText(_ tokenizer: Tokenizer) -> Int? {
        ["<|endoftext|>", "</s>", "<|end_of_text|>"].lazy.compactMap { tokenizer.specialTokens[$0] }.first
    }

    /// One JSONL line as an example; `transform` rewrites every text field first (augmentation).
    public static func example(_ line: String, tokenizer: Tokenizer, chatTemplate: ChatTemplate?,
                               transform: ((String) -> String)? = nil) throws -> FinetuneExample {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LineError("not a JSON object")
        }
        let rewrite = transform ?? { $0 }
        func string(_ key: String) throws -> String? {
            guard let value = object[key] else { return nil }
            guard let text = value as? String else { throw LineError("\"\(key)\" must be a string") }
            return rewrite(text)
        }
        let end = endOfText(tokenizer)
        var example = FinetuneExample(tokens: [], trains: [])
        if let messages = object["messages"] {
            guard let list = messages as? [[String: Any]], !list.isEmpty else {
                throw LineError("\"messages\" must be a non-empty array of {\"role\", \"content\"} objects")
            }
            let parsed = try list.enumerated().map { index, message -> ChatTemplate.Message in
                guard let role = message["role"] as? String, let content = message["content"] as? String else {
                    throw LineError("message \(index + 1) needs string \"role\" and \"content\"")
                }
                return ChatTemplate.Message(role: role, content: rewrite(content))
            }
            guard parsed.contains(where: { $0.role == "assistant" }) else { throw LineError("no assistant message to learn") }
            guard let chatTemplate, chatTemplate.format != .unknown else {
                throw LineError("\"messages\" need a chat template the model has and SwiftGPT recognises (ChatML, Llama 3, Zephyr)")
            }
            return try chat(parsed, template: chatTemplate, tokenizer: tokenizer)
        } else if let completion = try string("completion") {
            guard let prompt = try string("prompt") else { throw LineError("\"completion\" without \"prompt\"") }
            example.append(tokenizer.encodeOrdinary(prompt), trains: false)
            example.append(tokenizer.encodeOrdinary(completion) + (end.map { [$0] } ?? []), trains: true)
        } else if let text = try string("text") {
            example.append(tokenizer.encodeOrdinary(text) + (end.map { [$0] } ?? []), trains: true)
        } else {
            throw LineError("expected {\"prompt\", \"completion\"}, {\"text\"} or {\"messages\"}")
        }
        guard example.tokens.count > 1 else { throw LineError("too short to learn from (fewer than 2 tokens)") }
        if !example.trains.isEmpty { example.trains[0] = false }  // nothing before it in the example
        return example
    }

    /// A conversation rendered by its template; each assistant turn (its text and end-of-turn
    /// marker) trains: the ids past the rendering of the conversation before it with the
    /// assistant's opening, up to the rendering that includes it.
    static func chat(_ messages: [ChatTemplate.Message], template: ChatTemplate, tokenizer: Tokenizer) throws -> FinetuneExample {
        let all = try template.tokens(messages, tokenizer: tokenizer, addGenerationPrompt: false)
        var trains = [Bool](repeating: false, count: all.count)
        func common(_ ids: [Int]) -> Int { zip(ids, all).prefix { $0 == $1 }.count }
        for (index, message) in messages.enumerated() where message.role == "assistant" {
            let start = common(try template.tokens(Array(messages[..<index]), tokenizer: tokenizer, addGenerationPrompt: true))
            let end = common(try template.tokens(Array(messages[...index]), tokenizer: tokenizer, addGenerationPrompt: false))
            for i in start..<max(start, end) { trains[i] = true }
        }
        return FinetuneExample(tokens: all.map(Int32.init), trains: trains)
    }
}

/// Training rows of T + 1 tokens packed from examples in order (an example that does not fit
/// in what is left of a row starts the next one; longer ones are cut to T + 1), shuffled anew
/// each epoch from the seed. `position` counts rows handed out, so it is the whole state a
/// resumed run needs.
public struct FinetuneBatches: TrainingBatches {
    public let rows: [(inputs: [Int32], targets: [Int32])]
    public let seed: UInt64
    public var position: UInt64 = 0
    /// Examples longer than a row, cut.
    public let truncated: Int

    /// Packs `examples` into rows of `length` inputs; `padding` fills what is left of a row.
    public init(_ examples: [FinetuneExample], length: Int, padding: Int32, seed: UInt64) throws {
        var rows: [(inputs: [Int32], targets: [Int32])] = []
        var tokens: [Int32] = [], trains: [Bool] = [], truncated = 0
        func flush() {
            guard !tokens.isEmpty else { return }
            while tokens.count < length + 1 { tokens.append(padding); trains.append(false) }
            rows.append((Array(tokens[0..<length]), (1...length).map { trains[$0] ? tokens[$0] : -1 }))
            tokens = []
            trains = []
        }
        for example in examples {
            if tokens.count + example.tokens.count > length + 1 { flush() }
            if example.tokens.count > length + 1 { truncated += 1 }
            let n = min(example.tokens.count, length + 1)
            tokens += example.tokens[0..<n]
            trains += example.trains[0..<n]
        }
        flush()
        let usable = rows.filter { $0.targets.contains { $0 != -1 } }
        guard !usable.isEmpty else { throw ModelError("no example has a token to learn within \(length + 1) tokens") }
        self.rows = usable
        self.seed = seed
        self.truncated = truncated
    }

    /// The rows in epoch `epoch`'s order (a Fisher-Yates shuffle seeded by the seed and epoch).
    public func order(epoch: Int) -> [Int] {
        var generator = SplitMix64(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15)
        var order = Array(rows.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, Int(generator.next() % UInt64(i + 1)))
        }
        return order
    }

    public mutating func next(batch: Int, length: Int) throws -> (inputs: [Int32], targets: [Int32]) {
        guard rows[0].inputs.count == length else {
            throw ModelError("rows were packed for length \(rows[0].inputs.count), asked for \(length)")
        }
        var inputs: [Int32] = [], targets: [Int32] = []
        var epoch = -1, order: [Int] = []
        for _ in 0..<batch {
            let current = Int(position / UInt64(rows.count))
            if current != epoch { epoch = current; order = self.order(epoch: epoch) }
            let row = rows[order[Int(position % UInt64(rows.count))]]
            inputs += row.inputs
            targets += row.targets
            position += 1
        }
        return (inputs, targets)
    }

    /// All rows in order as batches of `batch` (the last one filled with rows from the start):
    /// validation.
    public func evaluationBatches(batch: Int) -> [(inputs: [Int32], targets: [Int32])] {
        stride(from: 0, to: rows.count, by: batch).map { start in
            let picked = (start..<(start + batch)).map { rows[$0 % rows.count] }
            return (picked.flatMap(\.inputs), picked.flatMap(\.targets))
        }
    }
}
