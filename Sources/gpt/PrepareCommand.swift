import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt prepare`: text files -> llm.c token shards, plus the tokenizer beside them.
struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Tokenize text files into llm.c token shards (train_*.bin, val_*.bin) for gpt train.")

    @Option(help: "The tokenizer (see gpt tokenizer).")
    var tokenizer: String

    @Option(help: "The pre-tokenizer of a .tiktoken file: gpt2, cl100k or o200k.")
    var pattern: PreTokenizer?

    @Option(name: .long, parsing: .upToNextOption, help: "Text files (UTF-8); each is a document.")
    var input: [String]

    @Option(help: "The directory to write.")
    var output: String

    @Option(help: "The share of each document's tokens (its end) kept for validation.")
    var valFraction: Double = 0.1

    @Option(help: "Tokens per shard.")
    var shardTokens = 100_000_000

    @Option(help: "Threads (default: all cores): that many files are read and tokenized at once.")
    var threads: Int?

    func validate() throws {
        guard !input.isEmpty else { throw ValidationError("--input needs at least one file") }
        guard valFraction >= 0 && valFraction < 1 else { throw ValidationError("--val-fraction must be in [0, 1), got \(valFraction)") }
        guard shardTokens > 0 else { throw ValidationError("--shard-tokens must be positive") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let encoder = try Tokenizer.load(modelOrTokenizer: tokenizer, pattern: pattern)
        guard encoder.vocabularySize <= 65_536 else {
            throw ValidationError("the tokenizer has \(encoder.vocabularySize) ids; llm.c shards hold uint16 ids (at most 65,536)")
        }
        let separator = encoder.id(of: "<|endoftext|>")
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        var train: [Int] = [], validation: [Int] = []
        // Files in waves of one per thread (memory holds one wave's ids), kept in input order;
        // a wave of fewer files than threads shares the spare threads among them, each file
        // encoded in parts (the same ids as in one piece).
        for wave in stride(from: 0, to: input.count, by: pool.threadCount) {
            let paths = Array(input[wave..<min(input.count, wave + pool.threadCount)])
            let threadsPerFile = max(1, pool.threadCount / paths.count)
            var documents = [Result<[Int], Error>](repeating: .success([]), count: paths.count)
            documents.withUnsafeMutableBufferPointer { documents in
                pool.parallelFor(paths.count) { i in
                    documents[i] = Result {
                        try encodeInParts(try readInput(paths[i]), name: paths[i], with: encoder, threads: threadsPerFile) { $1 }.flatMap { $0 }
                    }
                }
            }
            for document in documents {
                var ids = try document.get()
                if let separator { ids.insert(separator, at: 0) }  // documents start with <|endoftext|>, as GPT-2's data
                let cut = ids.count - Int(Double(ids.count) * valFraction)
                train += ids[..<cut]
                validation += ids[cut...]
            }
        }
        let directory = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        func writeShards(_ tokens: [Int], prefix: String) throws -> Int {
            var index = 0
            for start in stride(from: 0, to: max(tokens.count, 1), by: shardTokens) {
                let chunk = Array(tokens[start..<min(tokens.count, start + shardTokens)])
                try TokenShard.write(chunk, to: directory.appendingPathComponent(String(format: "%@_%06d.bin", prefix, index)))
                index += 1
            }
            return index
        }
        let trainShards = try writeShards(train, prefix: "train")
        let valShards = validation.isEmpty ? 0 : try writeShards(validation, prefix: "val")
        try encoder.writeHuggingFaceFiles(to: directory)
        FileHandle.standardError.write(Data("wrote \(train.count) training tokens in \(trainShards) shard(s) and \(validation.count) validation tokens in \(valShards) to \(output), with the tokenizer (\(encoder.vocabularySize) ids)\n".utf8))
    }
}

