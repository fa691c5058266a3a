import BPE
import Foundation
import Kernels
import Transformer

/// One generation request as a state that a loop or a batch scheduler advances one token at a
/// time from the logits of its last position: the sampler (seed, penalties), the stop-sequence
/// filter, the incremental decoder, the tokens so far and, once it ends, why.
///
///     var sequence = try SequenceState(prompt: ids, options: options, tokenizer: tokenizer)
///     var logits = try model.forward(ids, cache: cache)
///     while true {
///         let event = try sequence.advance(logits)
///         print(event?.text ?? "", terminator: "")
///         guard let next = sequence.tokens.last, !sequence.isFinished else { break }
///         logits = try model.forward([next], cache: cache)
///     }
public struct SequenceState: Sendable {
    public let prompt: [Int]
    public let options: GenerationOptions
    public let endTokens: Set<Int>
    /// The most positions the sequence may reach (prompt + generated), at most the context.
    public let limit: Int
    public private(set) var tokens: [Int] = []
    public private(set) var text = ""
    public private(set) var finishReason: FinishReason?
    /// With `options.promptLogprobs`: the prompt's tokens after the first, scored as they are prefilled.
    public internal(set) var promptLogprobs: [SampledToken] = []
    private var reportedPromptLogprobs = false
    public var isFinished: Bool { finishReason != nil }
    private var sampler: Sampler
    private var decoder: IncrementalDecoder
    private var stopper: StopSequenceFilter

    public init(prompt: [Int], options: GenerationOptions, tokenizer: Tokenizer, contextLength: Int,
                endTokens: Set<Int>? = nil) throws {
        let problems = options.sampling.problems
        guard problems.isEmpty else { throw ModelError(problems.joined(separator: "; ")) }
        guard !prompt.isEmpty else { throw ModelError("the prompt is empty") }
        guard options.maxTokens >= 0 else { throw ModelError("max tokens must be >= 0") }
        guard prompt.count < contextLength else {
            throw ModelError("the prompt has \(prompt.count) tokens; the model's context is \(contextLength)")
        }
        self.prompt = prompt
        self.options = options
        self.endTokens = endTokens ?? SequenceState.endTokens(of: tokenizer)
        limit = min(contextLength, prompt.count + options.maxTokens)
        sampler = Sampler(options: options.sampling)
        sampler.observe(prompt)
        decoder = IncrementalDecoder(tokenizer: tokenizer)
        stopper = StopSequenceFilter(stops: options.stop)
        if options.maxTokens == 0 { finishReason = .length }
    }

    /// EOS and end-of-turn tokens a tokenizer has.
    public static func endTokens(of tokenizer: Tokenizer) -> Set<Int> {
        Set(["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "</s>", "<|end_of_text|>"].compactMap { tokenizer.specialTokens[$0] })
    }

    /// Positions filled once the next token is fed back: when it reaches `limit`, no more tokens.
    public var positions: Int { prompt.count + tokens.count }

    /// Samples the next token from `logits` (the last position's) and returns it with the text
    /// it made visible; the sequence may finish on it (a stop sequence, the token limit, the
    /// context). An end token finishes the sequence without joining it: the event then carries
    /// only the text still held back, and is nil when there is none (or it had finished before).
    public mutating func advance(_ logits: UnsafeBufferPointer<Float>) throws -> GenerationEvent? {
        guard !isFinished else { return nil }
        var event = try sample(logits)
        if event != nil && options.promptLogprobs && !reportedPromptLogprobs {
            event?.promptLogprobs = promptLogprobs
            reportedPromptLogprobs = true
        }
        return event
    }

    private mutating func sample(_ logits: UnsafeBufferPointer<Float>) throws -> GenerationEvent? {
        let sampled = sampler.sample(logits, alternatives: options.logprobAlternatives)
        if options.stopAtEndOfSequence && endTokens.contains(sampled.id) {
            let before = text.count
            finish(.stop)
            return text.count > before ? GenerationEvent(token: sampled, text: String(text.dropFirst(before))) : nil
        }
        tokens.append(sampled.id)
        let (visible, stopped) = stopper.push(try decoder.append(sampled.id))
        var event = GenerationEvent(token: sampled, text: visible)
        if stopped {
            finishReason = .stop
        } else if tokens.count >= options.maxTokens || positions >= limit {
            finishReason = .length
            event.text += stopper.finish(decoder.finish())
        }
        text += event.text
        return event
    }

    /// Scores prompt token `next` against the logits of the position before it: its
    /// log-probability under the model's own distribution (no bias, penalties or temperature)
    /// and the most likely alternatives.
    public mutating func scorePrompt(_ logits: UnsafeBufferPointer<Float>, next: Int) {
        let logNormalizer = logSumExp(logits)
        let alternatives = options.logprobAlternatives > 0
            ? Sampler.largest(Array(logits), count: options.logprobAlternatives).map { ($0, logits[$0] - logNormalizer) } : []
        promptLogprobs.append(SampledToken(id: next, logprob: logits[next] - logNormalizer, topAlternatives: alternatives))
    }

    /// Ends the sequence (a client went away, or the caller stops early), keeping what it has.
    public mutating func finish(_ reason: FinishReason) {
        guard !isFinished else { return }
        finishReason = reason
        text += stopper.finish(decoder.finish())
    }
}
