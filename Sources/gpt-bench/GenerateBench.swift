import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench generate`: prompt processing and generation speed, as llama-bench reports them;
/// sampled generation beside greedy; aggregate decoding speed of B sequences in one batch; and
/// how long decoding sequences wait while a long prompt joins the batch.
struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Prompt processing (pp512), generation (tg128, greedy and sampled), batched decoding tokens/s.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "Thread counts, comma-separated.") var threads = ThreadList(argument: "1,2")!
    @Option(help: "Prompt tokens.") var prompt = 512
    @Option(help: "Generated tokens.") var generate = 128
    @Option(help: "Sequences decoding together, comma-separated (aggregate tokens/s).") var batch = ThreadList(argument: "1,4,16")!
    @Option(help: "Prompt tokens a batched step prefills at most (the mixed measurement).") var chunk = 64
    @Option(help: "Repetitions (the median is reported).") var repetitions = 3
    @Option(help: "How the KV cache stores keys and values: f32, or f16 (half the memory and attention reads; rounded to fp16).") var kvType: KVStorage = .f32
    @Flag(help: "One JSON object per measurement.") var json = false

    func run() throws {
        guard prompt > 0, generate > 0, repetitions > 0, chunk > 0 else {
            throw ValidationError("--prompt, --generate, --chunk and --repetitions must be positive")
        }
        let loaded = try ModelLoader.load(path: model)
        let inference = loaded.model, config = inference.config
        inference.keyValueStorage = kvType
        guard prompt + generate <= config.contextLength else { throw ValidationError("pp + tg exceed the context length \(config.contextLength)") }
        var generator = SplitMix64(seed: 1)
        let tokens = (0..<prompt).map { _ in Int(generator.next() % UInt64(config.vocabularySize)) }
        let isa = InstructionSet.best
        if !json {
            print("\(model): \(config.family) \(config.layerCount) layers, width \(config.embeddingSize), \(String(format: "%.1f", Double(inference.weights.bytesPerToken) / 1e6)) MB of weights per token; \(isa); KV cache \(kvType.rawValue)")
        }
        for threadCount in threads.counts {
            inference.pool = ThreadPool(threadCount: threadCount)
            var pp: [Double] = [], tg: [Double] = [], sampled: [Double] = []
            let cache = try KVCache(inference, capacity: prompt + generate)
            for _ in 0..<repetitions {
                cache.reset()
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try inference.forward(tokens, cache: cache)
                pp.append(Double(prompt) / seconds(since: start))
                // tg: one token at a time after a one-token prompt, as llama-bench's tg128.
                tg.append(try decode(inference, cache: cache, first: tokens[0]) { Sampler.argmax($0) })
                var sampler = Sampler(options: SamplingOptions(temperature: 0.7, topP: 0.9, seed: 7))
                sampled.append(try decode(inference, cache: cache, first: tokens[0]) { sampler.sample($0) })
            }
            let bandwidth = median(tg) * Double(inference.weights.bytesPerToken) / 1e9
            if json {
                print(jsonLine(["bench": "generate", "isa": "\(isa)", "kv": kvType.rawValue, "threads": threadCount, "pp": prompt, "tg": generate,
                                "pp_tokens_per_sec": median(pp), "tg_tokens_per_sec": median(tg),
                                "tg_sampled_tokens_per_sec": median(sampled), "weight_gb_per_sec": bandwidth]))
            } else {
                print(String(format: "threads %d: pp%d %.1f tok/s, tg%d %.1f tok/s greedy (%.1f GB/s of weights), %.1f tok/s sampled (T 0.7, top-p 0.9)",
                             threadCount, prompt, median(pp), generate, median(tg), bandwidth, median(sampled)))
            }
            try measureBatches(inference, threads: threadCount, tokens: tokens)
            try measureMixed(inference, tokenizer: loaded.tokenizer, threads: threadCount, tokens: tokens)
        }
    }

    private func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// Tokens/s of `generate` tokens decoded one at a time after a one-token prompt.
    private func decode(_ model: LanguageModel, cache: KVCache, first: Int, pick: (UnsafeBufferPointer<Float>) -> Int) throws -> Double {
        cache.reset()
        var next = pick(try model.forward([first], cache: cache))
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<generate { next = pick(try model.forward([next], cache: cache)) }
        return Double(generate) / seconds(since: start)
    }

    /// Aggregate decoding tokens/s with B sequences stepping together (each after a 16-token
    /// prompt), and the share of a step spent outside the linear layers' gemms. The batch sizes
    /// take turns within each repetition, so that their ratios compare the same minutes of a
    /// shared machine.
    private func measureBatches(_ model: LanguageModel, threads: Int, tokens: [Int]) throws {
        let counts = batch.counts
        let pools = try counts.map { b in
            try KVBlockPool(config: model.config, budget: .tokens(b * (16 + generate + 16)), storage: model.keyValueStorage)
        }
        let workspace = InferenceWorkspace(pool: model.pool)
        var rates = counts.map { _ in [Double]() }, outside = rates, attentionShares = rates
        for _ in 0..<repetitions {
            for (index, b) in counts.enumerated() {
                let caches = (0..<b).map { _ in KVCache(pool: pools[index], capacity: 16 + generate + 1) }
                var result = try model.forward(batch: caches.enumerated().map { i, cache in
                    BatchEntry(cache: cache, tokens: (0..<16).map { tokens[(i * 16 + $0) % tokens.count] })
                }, workspace: workspace)
                var next = (0..<b).map { Sampler.argmax(result.logits(entry: $0)) }
                workspace.measuring = true
                var linear = 0.0, attention = 0.0
                let start = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<generate {
                    result = try model.forward(batch: caches.enumerated().map { BatchEntry(cache: $1, tokens: [next[$0]]) },
                                               workspace: workspace)
                    linear += workspace.linearSeconds
                    attention += workspace.attentionSeconds
                    next = (0..<b).map { Sampler.argmax(result.logits(entry: $0)) }
                }
                let elapsed = seconds(since: start)
                workspace.measuring = false
                rates[index].append(Double(b * generate) / elapsed)
                outside[index].append(1 - linear / elapsed)
                attentionShares[index].append(attention / elapsed)
            }
        }
        let single = counts.firstIndex(of: 1)
        for (index, b) in counts.enumerated() {
            let rate = median(rates[index]), share = median(outside[index]), attentionShare = median(attentionShares[index])
            let ratio = single.map { medianRatio(rates[index], to: rates[$0]) }
            if json {
                print(jsonLine(["bench": "generate-batch", "isa": "\(InstructionSet.best)", "kv": kvType.rawValue, "threads": threads, "batch": b,
                                "tokens_per_sec": rate, "ratio_to_batch_1": ratio, "outside_gemm_share": share, "attention_share": attentionShare]))
            } else {
                let versus = ratio.map { String(format: " = %.2fx batch 1", $0) } ?? ""
                print(String(format: "  batch %2d: %.1f tok/s aggregate%@ (%.1f per sequence), %.0f%% of a step outside the gemms (attention %.0f%%)",
                             b, rate, versus, rate / Double(b), share * 100, attentionShare * 100))
            }
        }
    }

    /// 15 sequences decoding while one with a `prompt`-token prompt joins: the scheduler's
    /// chunked prefill keeps every decoding sequence advancing each step. Reports the longest
    /// gap between two tokens of a decoding sequence, against the gap with no prompt joining.
    private func measureMixed(_ model: LanguageModel, tokenizer: Tokenizer, threads: Int, tokens: [Int]) throws {
        func longestGap(withPrompt: Bool) throws -> (gap: Double, mean: Double) {
            let scheduler = try BatchScheduler(model: model, tokenizer: tokenizer, budget: .tokens(16 * (prompt + generate + 32)),
                                               maxSequences: 16, chunkTokens: chunk)
            var options = GenerationOptions(maxTokens: 48, sampling: SamplingOptions(temperature: 0))
            options.stopAtEndOfSequence = false
            var last: [Int: UInt64] = [:], gaps: [Double] = []
            for i in 0..<15 {
                try scheduler.submit(prompt: (0..<8).map { tokens[(i * 8 + $0) % tokens.count] }, options: options) { _ in
                    let now = DispatchTime.now().uptimeNanoseconds
                    if let previous = last[i] { gaps.append(Double(now - previous) / 1e9) }
                    last[i] = now
                    return true
                }
            }
            // Every sequence decoding, then the long prompt joins.
            for _ in 0..<4 { try scheduler.step() }
            gaps.removeAll()
            if withPrompt {
                var longOptions = options
                longOptions.maxTokens = 4
                try scheduler.submit(prompt: tokens, options: longOptions)
            }
            for _ in 0..<((prompt + chunk - 1) / chunk + 2) { try scheduler.step() }
            return (gaps.max() ?? 0, gaps.reduce(0, +) / Double(max(1, gaps.count)))
        }
        let quiet = try longestGap(withPrompt: false), mixed = try longestGap(withPrompt: true)
        if json {
            print(jsonLine(["bench": "generate-mixed", "isa": "\(InstructionSet.best)", "threads": threads, "prompt": prompt,
                            "chunk": chunk, "longest_gap_ms": mixed.gap * 1000, "longest_gap_without_prompt_ms": quiet.gap * 1000]))
        } else {
            print(String(format: "  15 decoding + a %d-token prompt in chunks of %d: longest gap between two tokens %.0f ms (mean %.0f; %.0f ms with no prompt joining)",
                         prompt, chunk, mixed.gap * 1000, mixed.mean * 1000, quiet.gap * 1000))
        }
    }
}
