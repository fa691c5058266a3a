import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench logits`: the last position's logits for given token ids, as raw little-endian
/// float32, for comparing against other implementations (scripts/compare-llama-cpp.py).
struct LogitsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Write the last-position logits of a token sequence as raw float32 (for comparisons).")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "Token ids, space-separated.") var tokens: String
    @Option(help: "The output file (V little-endian float32).") var out: String

    func run() throws {
        let ids = try tokens.split(separator: " ").map { field -> Int in
            guard let id = Int(field) else { throw ValidationError("'\(field)' is not a token id") }
            return id
        }
        guard !ids.isEmpty else { throw ValidationError("--tokens is empty") }
        let inference = try ModelLoader.load(path: model).model
        let logits = try inference.forward(ids, cache: try KVCache(inference, capacity: ids.count))
        try Data(buffer: logits).write(to: URL(fileURLWithPath: out), options: .atomic)
    }
}
