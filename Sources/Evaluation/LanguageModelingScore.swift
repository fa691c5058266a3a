import Foundation

/// The summed negative log-likelihood of a text under a model, and the figures derived from it.
///
/// Perplexity is per token, so it depends on the tokenizer; bits per byte divides by the UTF-8
/// bytes of the text and compares models with different tokenizers.
///
///     let score = LanguageModelingScore(negativeLogLikelihood: 2 * 100 * log(2), tokens: 100, bytes: 400)
///     score.perplexity   // 4
///     score.bitsPerByte  // 0.5
public struct LanguageModelingScore: Sendable, Equatable {
    /// Sum over the predicted tokens of -ln p(token | context), in nats.
    public var negativeLogLikelihood: Double
    public var tokens: Int
    public var bytes: Int

    public init(negativeLogLikelihood: Double = 0, tokens: Int = 0, bytes: Int = 0) {
        self.negativeLogLikelihood = negativeLogLikelihood
        self.tokens = tokens
        self.bytes = bytes
    }

    /// Mean loss per token in nats (what training prints).
    public var meanLoss: Double { tokens > 0 ? negativeLogLikelihood / Double(tokens) : .nan }
    public var perplexity: Double { exp(meanLoss) }
    public var bitsPerByte: Double {
        bytes > 0 ? negativeLogLikelihood / (Double(bytes) * log(2)) : .nan
    }

    /// Adds another stretch of text (scores of documents combine by summing).
    public mutating func add(_ other: LanguageModelingScore) {
        negativeLogLikelihood += other.negativeLogLikelihood
        tokens += other.tokens
        bytes += other.bytes
    }
}
