import ArgumentParser
import CommandSupport
import Foundation
import Synchronization
import SwiftGPT

/// `gpt tokenizer`: encode, decode and train byte-level BPE tokenizers.
struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Encode and decode text with a BPE tokenizer, or train one on your own text.",
        subcommands: [Encode.self, Decode.self, Train.self])

    /// Where a tokenizer comes from, shared by encode and decode.
    struct Source: ParsableArguments {
        @Option(help: "A directory (tokenizer.json, or vocab.json + merges.txt), a tokenizer.json file, a .tiktoken file, or a .gguf model.")
        var tokenizer: String

        @Option(help: "The pre-tokenizer of a .tiktoken file: gpt2, cl100k or o200k (default: from the file name).")
        var pattern: PreTokenizer?

        func load() throws -> Tokenizer {
            try Tokenizer.load(modelOrTokenizer: tokenizer, pattern: pattern)
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the token ids of a text (a file, or stdin), separated by spaces.")

        @OptionGroup var source: Source

        @Flag(help: "Match special tokens such as <|endoftext|> (otherwise they are plain text).")
        var allowSpecial = false

        @Argument(help: "The text file (stdin when absent).")
        var file: String?

        @Option(help: "Threads (default: all cores); a long text is encoded in parts at once, with the same ids.")
        var threads = ProcessInfo.processInfo.activeProcessorCount

        func validate() throws {
            guard threads > 0 else { throw ValidationError("--threads must be positive") }
        }

        func run() throws {
            // The input is read (and the pre-tokenizer's tables built) while the tokenizer loads.
            let reading = DispatchGroup()
            nonisolated(unsafe) var input: Result<Data, Error> = .success(Data())
            DispatchQueue.global().async(group: reading) {
                input = Result { try readInput(file) }
                PreTokenizer.prepareTables()
            }
            let tokenizer = try source.load()
            reading.wait()
            let data = try input.get()
            if allowSpecial {
                let text = try readUTF8(data, name: file)
                FileHandle.standardOutput.write(Data(TokenIDText.format(tokenizer.encode(text, allowedSpecial: .all))))
                return
            }
            // Parts of about 1 MB, encoded and formatted on all threads, written in order.
            let parts = try encodeInParts(data, name: file, with: tokenizer, threads: threads) { part, ids in
                TokenIDText.format(ids, leadingSpace: part > 0, newline: false)
            }
            let output = FileHandle.standardOutput
            var wroteAny = false
            for var part in parts where !part.isEmpty {
                if !wroteAny && part.first == 0x20 { part.removeFirst() }
                try output.write(contentsOf: part)
                wroteAny = true
            }
            try output.write(contentsOf: [0x0A])
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Turn whitespace-separated token ids (a file, or stdin) back into text.")

        @OptionGroup var source: Source

        @Argument(help: "The file of ids (stdin when absent).")
        var file: String?

        func run() throws {
            let tokenizer = try source.load()
            let ids: [Int]
            do { ids = try TokenIDText.parse(try readInput(file)) } catch let error as TokenIDError { throw ValidationError(error.description) }
            FileHandle.standardOutput.write(Data(try tokenizer.decodeBytes(ids)))
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Learn a byte-level BPE vocabulary from text files; writes tokenizer.json, vocab.json, merges.txt.")

        @Option(name: .long, parsing: .upToNextOption, help: "The training text files.")
        var input: [String]

        @Option(help: "Tokens in all: 256 bytes + merges + special tokens.")
        var vocabSize: Int

        @Option(help: "The directory to write.")
        var output: String

        @Option(name: .long, parsing: .upToNextOption, help: "Special tokens to reserve (the last ids).")
        var special: [String] = ["<|endoftext|>"]

        @Option(help: "The pre-tokenizer: gpt2, cl100k or o200k.")
        var pattern: PreTokenizer = .gpt2

        func validate() throws {
            guard !input.isEmpty else { throw ValidationError("--input needs at least one file") }
            guard vocabSize >= 256 + special.count else {
                throw ValidationError("--vocab-size must be at least 256 + the \(special.count) special tokens, got \(vocabSize)")
            }
        }

        func run() throws {
            let texts = try input.map { try readUTF8($0) }
            let start = Date()
            let tokenizer = try BPETrainer(vocabularySize: vocabSize, specialTokens: special,
                                           preTokenizer: pattern).train(texts: texts)
            try tokenizer.writeHuggingFaceFiles(to: URL(fileURLWithPath: output))
            let bytes = texts.reduce(0) { $0 + $1.utf8.count }
            FileHandle.standardError.write(Data(String(
                format: "trained %d tokens on %.1f MB in %.1f s; wrote %@/tokenizer.json, vocab.json, merges.txt\n",
                tokenizer.vocabularySize, Double(bytes) / 1e6, Date().timeIntervalSince(start), output).utf8))
        }
    }
}

extension PreTokenizer: ExpressibleByArgument {}

/// The bytes of a file, or of stdin when `path` is nil.
func readInput(_ path: String?) throws -> Data {
    guard let path else { return FileHandle.standardInput.readDataToEndOfFile() }
    // Mapped, not copied: the page cache's pages become the input (a 12 MB copy and its page
    // faults took 5% of gpt tokenizer encode).
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    } catch {
        throw ValidationError("\(path): cannot read the file (\((error as NSError).localizedDescription))")
    }
}

/// The ids of each part of `data` (see `Tokenizer.encodeOrdinaryConcurrently`), in order, each
/// turned into a `T` on the thread that encoded it. Invalid UTF-8 is refused with the offset of
/// the first bad byte.
func encodeInParts<T: Sendable>(_ data: Data, name path: String?, with tokenizer: Tokenizer, threads: Int,
                      _ transform: @Sendable (_ part: Int, _ ids: [Int]) -> T) throws -> [T] {
    let parts = Mutex<[Int: T]>([:])
    let count: Int
    do {
        count = try data.withUnsafeBytes { raw in
            try tokenizer.encodeOrdinaryConcurrently(raw.bindMemory(to: UInt8.self), threads: threads) { part, ids in
                let result = transform(part, ids)
                parts.withLock { $0[part] = result }
            }
        }
    } catch let error as TokenizerError {
        throw ValidationError("\(path ?? "stdin"): \(error.description)")
    }
    return parts.withLock { parts in (0..<count).compactMap { parts.removeValue(forKey: $0) } }
}

/// The text of a file (or stdin), refusing invalid UTF-8 with the offset of the first bad byte.
func readUTF8(_ path: String?) throws -> String {
    try readUTF8(try readInput(path), name: path)
}

/// `data` as text, refusing invalid UTF-8 with the offset of the first bad byte.
func readUTF8(_ data: Data, name path: String?) throws -> String {
    // The standard library's validation runs over the contiguous bytes at memory speed; the
    // offset of a bad byte is looked for only when there is one.
    if let text = data.withUnsafeBytes({ String(validating: $0.bindMemory(to: UInt8.self), as: UTF8.self) }) { return text }
    throw ValidationError("\(path ?? "stdin"): invalid UTF-8 at byte offset \(firstInvalidUTF8Offset(data) ?? 0)")
}
