import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench tokenizer`: encode speed of SwiftGPT's BPE next to tiktoken's, same file, same run.
struct TokenizerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Encode MB/s, one thread and several, against tiktoken in the same run.")

    @Option(help: "A tokenizer: .tiktoken file, tokenizer.json, or a directory (see gpt tokenizer).")
    var tokenizer: String

    @Option(help: "The pre-tokenizer for a .tiktoken file: gpt2, cl100k or o200k.")
    var pattern: PreTokenizer?

    @Option(help: "A UTF-8 text file to encode.")
    var input: String

    @Option(help: "Threads for the multi-threaded figure (documents split at newlines).")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Skip the tiktoken reference (python3 with tiktoken is needed for it).")
    var noReference = false

    @Flag(help: "One JSON object per measurement.")
    var json = false

    func run() throws {
        var loadTimes: [Double] = []
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try Tokenizer.load(path: tokenizer, pattern: pattern)
            loadTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let load = loadTimes.sorted()[1]
        let encoder = try Tokenizer.load(path: tokenizer, pattern: pattern)
        let data = try Data(contentsOf: URL(fileURLWithPath: input))
        let text = String(decoding: data, as: UTF8.self)
        let megabytes = Double(data.count) / 1e6
        let chunks = splitAtNewlines(text, pieces: threads)

        var tokenCount = 0
        // Cold: a fresh session, so every distinct piece goes through BPE once.
        let coldStart = DispatchTime.now().uptimeNanoseconds
        var coldIds: [Int] = []
        coldIds.reserveCapacity(data.count / 3)  // as Tokenizer.encodeOrdinary does
        EncodingSession(tokenizer: encoder).encodeOrdinary(text, into: &coldIds)
        let cold = Double(DispatchTime.now().uptimeNanoseconds - coldStart) / 1e9
        // Held out: a fresh session that has encoded the first half, timed on the second half
        // (new text, as a long-running server sees it: most pieces cached, rare words not).
        let halves = splitAtNewlines(text, pieces: 2)
        let heldOutSession = EncodingSession(tokenizer: encoder)
        var heldOutIds: [Int] = []
        heldOutIds.reserveCapacity(data.count / 3)
        heldOutSession.encodeOrdinary(halves[0], into: &heldOutIds)
        heldOutIds.removeAll(keepingCapacity: true)
        let heldOutStart = DispatchTime.now().uptimeNanoseconds
        heldOutSession.encodeOrdinary(halves.last!, into: &heldOutIds)
        let heldOut = Double(halves.last!.utf8.count) / 1e6
            / (Double(DispatchTime.now().uptimeNanoseconds - heldOutStart) / 1e9)
        // Warm: the tokenizer's pooled sessions keep their piece caches between calls.
        let single = measure(minimumRuns: 3, budget: 2) { tokenCount = encoder.encodeOrdinary(text).count }
        let pool = ThreadPool(threadCount: threads)
        let multi = measure(minimumRuns: 3, budget: 2) {
            pool.parallelFor(chunks.count) { i in _ = encoder.encodeOrdinary(chunks[i]) }
        }
        let reference = noReference || !tokenizer.hasSuffix(".tiktoken") ? nil
            : try tiktokenSpeed(rankFile: tokenizer, pattern: pattern ?? encoder.preTokenizer)
        let ours = (single: megabytes / single, multi: megabytes / multi)
        let endToEnd = try endToEnd()
        if json {
            print(jsonLine(["bench": "tokenizer", "bytes": data.count, "tokens": tokenCount,
                            "pattern": encoder.preTokenizer.rawValue, "threads": threads,
                            "swift_mbps_1": ours.single, "swift_mbps_n": ours.multi,
                            "swift_mbps_1_cold": megabytes / cold, "swift_mbps_1_held_out": heldOut,
                            "tiktoken_mbps_1": reference?.single, "tiktoken_mbps_n": reference?.multi,
                            "ratio_1": reference.map { ours.single / $0.single },
                            "ratio_n": reference.map { ours.multi / $0.multi },
                            "swift_load_seconds": load, "swift_end_to_end_seconds": endToEnd?.swift, "tiktoken_end_to_end_seconds": endToEnd?.tiktoken]))
        } else {
            print(String(format: "%@: %.1f MB, %d tokens (%.2f bytes/token), pattern %@", input, megabytes,
                         tokenCount, Double(data.count) / Double(max(1, tokenCount)), encoder.preTokenizer.rawValue))
            func row(_ label: String, _ swift: Double, _ ref: Double?) {
                let refText = ref.map { String(format: "%8.1f MB/s", $0) } ?? "           -"
                let ratio = ref.map { String(format: "%6.1fx", swift / $0) } ?? "      -"
                print(label.padding(toLength: 19, withPad: " ", startingAt: 0)
                      + String(format: " SwiftGPT %8.1f MB/s   tiktoken %@   %@", swift, refText, ratio))
            }
            print("load".padding(toLength: 19, withPad: " ", startingAt: 0) + String(format: " SwiftGPT %8.1f ms (median of 3, in process)", load * 1e3))
            if let (swift, tiktoken) = endToEnd {
                print("end to end".padding(toLength: 19, withPad: " ", startingAt: 0) + String(format: " SwiftGPT %8.2f s      tiktoken %@   %@", swift,
                             tiktoken.map { String(format: "%8.2f s   ", $0) } ?? "           -",
                             tiktoken.map { String(format: "%6.1fx", $0 / swift) } ?? "      -"))
            }
            row("1 thread, cold", megabytes / cold, reference?.single)
            row("1 thread, new text", heldOut, reference?.single)
            row("1 thread, warm", ours.single, reference?.single)
            row("\(threads) threads, warm", ours.multi, reference?.multi)
        }
    }

    /// Seconds from process start to the last id written, median of 3: `gpt tokenizer encode`
    /// (the binary beside this one) and a tiktoken script that loads the same rank file, reads
    /// the file, encodes it and prints the ids the same way. Nil when `gpt` is not beside us.
    func endToEnd() throws -> (swift: Double, tiktoken: Double?)? {
        guard let gpt = Bundle.main.executableURL?.deletingLastPathComponent().appendingPathComponent("gpt"),
              FileManager.default.isExecutableFile(atPath: gpt.path) else { return nil }
        func seconds(_ executable: String, _ arguments: [String]) -> Double? {
            var times: [Double] = []
            for _ in 0..<3 {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = arguments
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                let start = DispatchTime.now().uptimeNanoseconds
                guard (try? process.run()) != nil else { return nil }
                process.waitUntilExit()
                guard process.terminationStatus == 0 else { return nil }
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            return times.sorted()[1]
        }
        var arguments = ["tokenizer", "encode", "--tokenizer", tokenizer, input]
        if let pattern { arguments += ["--pattern", pattern.rawValue] }
        guard let swift = seconds(gpt.path, arguments) else { return nil }
        guard !noReference, tokenizer.hasSuffix(".tiktoken") else { return (swift, nil) }
        let script = """
        import sys, tiktoken
        from tiktoken.load import load_tiktoken_bpe
        enc = tiktoken.Encoding("bench", pat_str=sys.argv[3], mergeable_ranks=load_tiktoken_bpe(sys.argv[1]), special_tokens={})
        text = open(sys.argv[2], encoding="utf-8", newline="").read()
        sys.stdout.write(" ".join(map(str, enc.encode_ordinary(text))) + "\\n")
        """
        let encoder = try Tokenizer.load(path: tokenizer, pattern: pattern)
        return (swift, seconds("/usr/bin/env", ["python3", "-c", script, tokenizer, input, encoder.preTokenizer.pattern]))
    }

    /// `text` cut at newlines into about `pieces` parts of similar size.
    func splitAtNewlines(_ text: String, pieces: Int) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let target = max(1, text.utf8.count / max(1, pieces))
        var chunks: [String] = [], current = ""
        for (index, line) in lines.enumerated() {
            current += line
            if index < lines.count - 1 { current += "\n" }
            if current.utf8.count >= target && chunks.count < pieces - 1 {
                chunks.append(current)
                current = ""
            }
        }
        chunks.append(current)
        return chunks
    }

    /// tiktoken's MB/s on the same file: encode_ordinary, and encode_ordinary_batch over the
    /// same newline-split documents with `threads` threads.
    func tiktokenSpeed(rankFile: String, pattern: PreTokenizer) throws -> (single: Double, multi: Double)? {
        let script = """
        import sys, time, tiktoken
        from tiktoken.load import load_tiktoken_bpe
        path, pattern, input_path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        enc = tiktoken.Encoding("bench", pat_str=pattern, mergeable_ranks=load_tiktoken_bpe(path), special_tokens={})
        text = open(input_path, "rb").read().decode("utf-8")
        lines = text.split("\\n")
        step = max(1, len(lines) // threads)
        docs = ["\\n".join(lines[i:i + step]) for i in range(0, len(lines), step)]
        def best(f):
            f(); times = []
            start = time.perf_counter()
            while len(times) < 3 or (time.perf_counter() - start < 2 and len(times) < 50):
                t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
            return sorted(times)[len(times) // 2]
        mb = len(text.encode()) / 1e6
        print(mb / best(lambda: enc.encode_ordinary(text)), mb / best(lambda: enc.encode_ordinary_batch(docs, num_threads=threads)))
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, rankFile, pattern.pattern, input, String(threads)]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let numbers = String(decoding: data, as: UTF8.self).split(separator: " ").compactMap {
            Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard process.terminationStatus == 0, numbers.count == 2 else {
            FileHandle.standardError.write(Data("gpt-bench: tiktoken reference unavailable (pip install tiktoken==0.14.0)\n".utf8))
            return nil
        }
        return (numbers[0], numbers[1])
    }
}

extension PreTokenizer: ExpressibleByArgument {}
