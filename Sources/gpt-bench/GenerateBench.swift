import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench generate`: prompt processing and generation speed, as llama-bench reports them.
struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Prompt processing (pp512) and generation (tg128) tokens/s, like llama-bench.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "Thread counts, comma-separated.") var threads = ThreadList(argument: "1,2")!
    @Option(help: "Prompt tokens.") var prompt = 512
    @Option(help: "Generated tokens.") var generate = 128
    @Option(help: "Repetitions (the median is reported).") var repetitions = 3
    @Flag(help: "One JSON object per measurement.") var json = false

    func run() throws {
        guard prompt > 0, generate > 0, repetitions > 0 else { throw ValidationError("--prompt, --generate and --repetitions must be positive") }
        let inference = try ModelLoader.load(path: model).model
        let config = inference.config
        guard prompt + generate <= config.contextLength else { throw ValidationError("pp + tg exceed the context length \(config.contextLength)") }
        var generator = SplitMix64(seed: 1)
        let tokens = (0..<prompt).map { _ in Int(generator.next() % UInt64(config.vocabularySize)) }
        if !json {
            print("\(model): \(config.family) \(config.layerCount) layers, width \(config.embeddingSize), \(String(format: "%.1f", Double(inference.weights.bytesPerToken) / 1e6)) MB of weights per token")
        }
        for threadCount in threads.counts {
            inference.pool = ThreadPool(threadCount: threadCount)
            var pp: [Double] = [], tg: [Double] = []
            let cache = try KVCache(inference, capacity: prompt + generate)
            for _ in 0..<repetitions {
                cache.reset()
                var start = DispatchTime.now().uptimeNanoseconds
                _ = try inference.forward(tokens, cache: cache)
                pp.append(Double(prompt) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
                // tg: one token at a time after a one-token prompt, as llama-bench's tg128.
                cache.reset()
                _ = try inference.forward([tokens[0]], cache: cache)
                start = DispatchTime.now().uptimeNanoseconds
                var next = tokens[1]
                for _ in 0..<generate {
                    let logits = try inference.forward([next], cache: cache)
                    next = Sampler.argmax(logits)
                }
                tg.append(Double(generate) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
            }
            let ppMedian = pp.sorted()[pp.count / 2], tgMedian = tg.sorted()[tg.count / 2]
            let bandwidth = tgMedian * Double(inference.weights.bytesPerToken) / 1e9
            if json {
                print(jsonLine(["bench": "generate", "threads": threadCount, "pp": prompt, "tg": generate,
                                "pp_tokens_per_sec": ppMedian, "tg_tokens_per_sec": tgMedian, "weight_gb_per_sec": bandwidth]))
            } else {
                print(String(format: "threads %d: pp%d %.1f tok/s, tg%d %.1f tok/s (%.1f GB/s of weights)",
                             threadCount, prompt, ppMedian, generate, tgMedian, bandwidth))
            }
        }
    }
}
