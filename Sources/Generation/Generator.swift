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
}

public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [Int]
    public var finishReason: FinishReason
    public var promptTokens: Int
    public var promptSeconds: Double
    public var generationSeconds: Double
}

/// Prefill then decode with the KV cache, sampling, stop sequences and streaming text that never
/// splits a UTF-8 character or shows part of a stop sequence.
public final class Generator: @unchecked Sendable {
    public let model: LanguageModel
    public let tokenizer: Tokenizer
    /// Ids that end generation (EOS and end-of-turn tokens).
    public var endTokens: Set<Int>
    /// The sequence's keys and values, kept between calls to reuse its memory.
    private var cache: KVCache?

    public init(model: LanguageModel, tokenizer: Tokenizer, endTokens: Set<Int>? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.endTokens = endTokens ?? Set(["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "</s>", "<|end_of_text|>"]
            .compactMap { tokenizer.specialTokens[$0] })
    }

    /// Generates from `prompt` (token ids), calling `onEvent` for every token; return false from it
    /// to stop early.
    @discardableResult
    public func generate(prompt: [Int], options: GenerationOptions,
                         onEvent: (GenerationEvent) -> Bool = { _ in true }) throws -> GenerationResult {
        let problems = options.sampling.problems
        guard problems.isEmpty else { throw ModelError(problems.joined(separator: "; ")) }
        guard !prompt.isEmpty else { throw ModelError("the prompt is empty") }
        guard options.maxTokens >= 0 else { throw ModelError("max tokens must be >= 0") }
        let context = model.config.contextLength
        guard prompt.count < context else {
            throw ModelError("the prompt has \(prompt.count) tokens; the model's context is \(context)")
        }
        let capacity = min(context, prompt.count + max(1, options.maxTokens))
        if let cache, cache.capacity >= capacity { cache.reset() } else { cache = try KVCache(model, capacity: capacity) }
        let cache = self.cache!
        var sampler = Sampler(options: options.sampling)
        sampler.observe(prompt)
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        var stopper = StopSequenceFilter(stops: options.stop)

        let promptStart = Date()
        var logits = try model.forward(prompt, cache: cache)
        let promptSeconds = Date().timeIntervalSince(promptStart)
        let start = Date()
        var tokens: [Int] = []
        var text = ""
        var reason = FinishReason.length
        while tokens.count < options.maxTokens {
            let sampled = sampler.sample(logits, alternatives: options.logprobAlternatives)
            if options.stopAtEndOfSequence && endTokens.contains(sampled.id) {
                reason = .stop
                break
            }
            tokens.append(sampled.id)
            let (visible, stopped) = stopper.push(try decoder.append(sampled.id))
            text += visible
            if !onEvent(GenerationEvent(token: sampled, text: visible)) || stopped {
                reason = .stop
                break
            }
            if cache.count >= capacity { break }
            logits = try model.forward([sampled.id], cache: cache)
        }
        if reason == .length || !stopper.stopped {
            let rest = stopper.finish(decoder.finish())
            text += rest
            if !rest.isEmpty, let last = tokens.last {
                _ = onEvent(GenerationEvent(token: SampledToken(id: last, logprob: 0, topAlternatives: []), text: rest))
            }
        }
        return GenerationResult(text: text, tokens: tokens, finishReason: reason, promptTokens: prompt.count,
                                promptSeconds: promptSeconds, generationSeconds: Date().timeIntervalSince(start))
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
struct StopSequenceFilter {
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
