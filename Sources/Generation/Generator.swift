import BPE
import Foundation
import Transformer

/// What to generate and when to stop.
public struct GenerationOptions: Sendable {
    public var maxTokens = 256
    public var sampling = SamplingOptions()
    /// Text that ends the generation where it first appears (it is not returned).
    public var stop: [String] = []
    /// Stop at the tokenizer's end-of-sequence / end-of-turn tokens.
    public var stopAtEndOfSequence = true
    /// How many top alternatives to report with each token's log-probability (0: none).
    public var logprobAlternatives = 0
    /// Score the prompt too: each prompt token's log-probability after the tokens before it
    /// (with `logprobAlternatives` alternatives), as OpenAI's `echo` with `logprobs` reports.
    /// The batch scheduler computes these; the one-sequence generator does not.
    public var promptLogprobs = false

    public init(maxTokens: Int = 256, sampling: SamplingOptions = SamplingOptions(), stop: [String] = []) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
    }
}

public enum FinishReason: String, Sendable, Codable {
    /// A stop sequence or an end-of-sequence token.
    case stop
    /// maxTokens were generated, or the context is full.
    case length
}

/// One step of output: the token and the text it completed (empty while a UTF-8 character or a
/// possible stop sequence is held back).
public struct GenerationEvent: Sendable {
    public var token: SampledToken
    public var text: String
    /// On a sequence's first event, with `promptLogprobs`: the scored prompt.
    public var promptLogprobs: [SampledToken]?

    public init(token: SampledToken, text: String, promptLogprobs: [SampledToken]? = nil) {
        self.token = token
        self.text = text
        self.promptLogprobs = promptLogprobs
    }
}

public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [Int]
    public var finishReason: FinishReason
    public var promptTokens: Int
    public var promptSeconds: Double
    public var generationSeconds: Double
    /// With `promptLogprobs`: the prompt's tokens after the first, each with its log-probability.
    public var promptLogprobs: [SampledToken] = []
}

/// Prefill then decode with the KV cache, sampling, stop sequences and streaming text that never
/// splits a UTF-8 character or shows part of a stop sequence.
public final class Generator: @unchecked Sendable {
    public let model: LanguageModel
    public let tokenizer: Tokenizer
    /// Ids that end generation (EOS and end-of-turn tokens).
    public var endTokens: Set<Int>
    /// Samples from self-debiased probabilities when set: the prompt also runs behind each of
    /// its prefixes, every step one batched forward pass over all of them.
    public var debiasing: SelfDebiasing?
    /// The sequence's keys and values, kept between calls to reuse its memory.
    private var cache: KVCache?

    public init(model: LanguageModel, tokenizer: Tokenizer, endTokens: Set<Int>? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.endTokens = endTokens ?? SequenceState.endTokens(of: tokenizer)
    }

    /// Generates from `prompt` (token ids), calling `onEvent` for every token; return false from it
    /// to stop early. A thin loop over `SequenceState` with this generator's own KV cache.
    @discardableResult
    public func generate(prompt: [Int], options: GenerationOptions,
                         onEvent: (GenerationEvent) -> Bool = { _ in true }) throws -> GenerationResult {
        var sequence = try SequenceState(prompt: prompt, options: options, tokenizer: tokenizer,
                                         contextLength: model.config.contextLength, endTokens: endTokens)
        if let debiasing { return try generateDebiased(prompt: prompt, sequence: &sequence, debiasing: debiasing, onEvent: onEvent) }
        let capacity = max(sequence.limit, prompt.count + 1)
        if let cache, cache.capacity >= capacity { cache.reset() } else { cache = try KVCache(model, capacity: capacity) }
        let cache = self.cache!
        let promptStart = Date()
        var logits = try model.forward(prompt, cache: cache)
        let promptSeconds = Date().timeIntervalSince(promptStart)
        let start = Date()
        while !sequence.isFinished {
            if let event = try sequence.advance(logits), !onEvent(event) { sequence.finish(.stop) }
            guard !sequence.isFinished, let next = sequence.tokens.last else { break }
            logits = try model.forward([next], cache: cache)
        }
        return GenerationResult(text: sequence.text, tokens: sequence.tokens, finishReason: sequence.finishReason ?? .length,
                                promptTokens: prompt.count, promptSeconds: promptSeconds,
                                generationSeconds: Date().timeIntervalSince(start))
    }

    /// `generate` sampling from p̃: the plain sequence and one behind each prefix advance
    /// together, each step one batched forward pass, and the same token joins all of them.
    private func generateDebiased(prompt: [Int], sequence: inout SequenceState, debiasing: SelfDebiasing,
                                  onEvent: (GenerationEvent) -> Bool) throws -> GenerationResult {
        let V = model.config.vocabularySize
        let prompts = [prompt] + debiasing.prefixes.map { tokenizer.encode($0) + prompt }
        guard let longest = prompts.map(\.count).max(), longest < model.config.contextLength else {
            throw ModelError("the prompt behind its debiasing prefix fills the model's context (\(model.config.contextLength) tokens)")
        }
        let room = model.config.contextLength - longest
        let pool = try KVBlockPool(config: model.config, budget: .tokens(prompts.reduce(0) { $0 + $1.count + room + 16 }),
                                   storage: model.keyValueStorage)
        let caches = prompts.map { KVCache(pool: pool, capacity: $0.count + room) }
        let workspace = InferenceWorkspace(pool: model.pool)
        let rows = UnsafeMutableBufferPointer<Float>.allocate(capacity: prompts.count * V)
        defer { rows.deallocate() }
        var inputs = prompts
        let promptStart = Date()
        var promptSeconds: Double?, start = Date()
        while !sequence.isFinished {
            let result = try model.forward(batch: zip(caches, inputs).map { BatchEntry(cache: $0, tokens: $1) }, workspace: workspace)
            if promptSeconds == nil {
                promptSeconds = Date().timeIntervalSince(promptStart)
                start = Date()
            }
            for r in prompts.indices { (rows.baseAddress! + r * V).update(from: result.logits(entry: r).baseAddress!, count: V) }
            _ = debiasing.reweigh(rows, vocabulary: V)
            // Log-weights are logits of p̃ (the sampler normalises).
            for w in 0..<V { rows[w] = log(rows[w]) }
            if let event = try sequence.advance(UnsafeBufferPointer(rebasing: rows[0..<V])), !onEvent(event) { sequence.finish(.stop) }
            guard !sequence.isFinished, let next = sequence.tokens.last else { break }
            if caches.contains(where: { $0.count + 1 > $0.capacity }) { sequence.finish(.length); break }
            inputs = prompts.map { _ in [next] }
        }
        return GenerationResult(text: sequence.text, tokens: sequence.tokens, finishReason: sequence.finishReason ?? .length,
                                promptTokens: prompt.count, promptSeconds: promptSeconds ?? 0,
                                generationSeconds: Date().timeIntervalSince(start))
    }

    /// The same as `generate`, as an asynchronous stream of text pieces.
    public func stream(prompt: [Int], options: GenerationOptions) -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let task = Thread { [self] in
                do {
                    try generate(prompt: prompt, options: options) { event in
                        if !event.text.isEmpty { continuation.yield(event.text) }
                        return true
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            task.start()
        }
    }
}

/// Holds back text that may be the start of a stop sequence; cuts at the first full one.
struct StopSequenceFilter: Sendable {
    let stops: [String]
    private var held = ""
    private(set) var stopped = false

    init(stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// The text now safe to show, and whether a stop sequence was found.
    mutating func push(_ text: String) -> (String, Bool) {
        guard !stops.isEmpty else { return (text, false) }
        held += text
        if let cut = stops.compactMap({ held.range(of: $0)?.lowerBound }).min() {
            stopped = true
            let visible = String(held[..<cut])
            held = ""
            return (visible, true)
        }
        // Keep the longest tail that is a prefix of some stop sequence.
        var keep = 0
        for stop in stops {
            for length in stride(from: min(stop.count - 1, held.count), to: 0, by: -1) where held.hasSuffix(stop.prefix(length)) {
                keep = max(keep, length)
                break
            }
        }
        let visible = String(held.dropLast(keep))
        held = String(held.suffix(keep))
        return (visible, false)
    }

    mutating func finish(_ text: String) -> String {
        let (visible, _) = push(text)
        defer { held = "" }
        return stopped ? visible : visible + held
    }
}
