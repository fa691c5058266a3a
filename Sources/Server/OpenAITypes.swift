import Foundation

// OpenAI's `/v1` request and response bodies (https://platform.openai.com/docs/api-reference),
// the fields SwiftGPT serves. Unknown fields are ignored, as OpenAI's own server does for most.

/// `prompt` of a completion: a string, an array of strings, an array of token ids, or an array
/// of such arrays. Each element is one prompt of the batch.
public enum PromptInput: Decodable, Sendable, Equatable {
    case texts([String])
    case tokens([[Int]])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .texts([text])
        } else if let texts = try? container.decode([String].self) {
            self = .texts(texts)
        } else if let ids = try? container.decode([Int].self) {
            self = .tokens([ids])
        } else if let batches = try? container.decode([[Int]].self) {
            self = .tokens(batches)
        } else {
            throw DecodingError.typeMismatch(PromptInput.self, .init(
                codingPath: decoder.codingPath,
                debugDescription: "expected a string, an array of strings, an array of token ids, or an array of token id arrays"))
        }
    }
}

/// `stop`: one string or up to four.
public struct StopInput: Decodable, Sendable, Equatable {
    public var values: [String]

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            values = []
        } else if let one = try? container.decode(String.self) {
            values = [one]
        } else if let many = try? container.decode([String].self) {
            values = many
        } else {
            throw DecodingError.typeMismatch(StopInput.self, .init(
                codingPath: decoder.codingPath, debugDescription: "expected a string or an array of strings"))
        }
    }
}

public struct StreamOptions: Codable, Sendable, Equatable {
    public var includeUsage: Bool?
    enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
}

/// The sampling fields both endpoints share.
public struct SamplingFields: Decodable, Sendable {
    public var temperature: Double?
    public var topP: Double?
    public var n: Int?
    public var stop: StopInput?
    public var seed: Int64?
    public var presencePenalty: Double?
    public var frequencyPenalty: Double?
    public var logitBias: [String: Double]?
    public var stream: Bool?
    public var streamOptions: StreamOptions?
    // Extensions that llama.cpp's and vLLM's servers accept too.
    public var topK: Int?
    public var minP: Double?
    public var repetitionPenalty: Double?

    enum CodingKeys: String, CodingKey {
        case temperature, n, stop, seed, stream
        case topP = "top_p", presencePenalty = "presence_penalty", frequencyPenalty = "frequency_penalty"
        case logitBias = "logit_bias", streamOptions = "stream_options", topK = "top_k", minP = "min_p"
        case repetitionPenalty = "repetition_penalty"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        temperature = try container.decodeIfPresent(Double.self, forKey: .temperature)
        topP = try container.decodeIfPresent(Double.self, forKey: .topP)
        n = try container.decodeInteger(Int.self, forKey: .n)
        stop = try container.decodeIfPresent(StopInput.self, forKey: .stop)
        seed = try container.decodeInteger(Int64.self, forKey: .seed)
        presencePenalty = try container.decodeIfPresent(Double.self, forKey: .presencePenalty)
        frequencyPenalty = try container.decodeIfPresent(Double.self, forKey: .frequencyPenalty)
        logitBias = try container.decodeIfPresent([String: Double].self, forKey: .logitBias)
        stream = try container.decodeIfPresent(Bool.self, forKey: .stream)
        streamOptions = try container.decodeIfPresent(StreamOptions.self, forKey: .streamOptions)
        topK = try container.decodeInteger(Int.self, forKey: .topK)
        minP = try container.decodeIfPresent(Double.self, forKey: .minP)
        repetitionPenalty = try container.decodeIfPresent(Double.self, forKey: .repetitionPenalty)
    }
}

extension KeyedDecodingContainer {
    /// An optional integer field. Foundation on Linux reports `1.5` for an `Int` as "not valid
    /// JSON" with no field; this names the field instead.
    func decodeInteger<T: FixedWidthInteger & Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard contains(key), !(try decodeNil(forKey: key)) else { return nil }
        if let value = try? decode(T.self, forKey: key) { return value }
        throw DecodingError.typeMismatch(T.self, .init(codingPath: codingPath + [key],
                                                       debugDescription: "expected an integer in the range of \(T.self)"))
    }

    /// A required array of integers (token ids), with the same care.
    func decodeIntegers(forKey key: Key) throws -> [Int] {
        if let values = try? decode([Int].self, forKey: key) { return values }
        _ = try decode([Double].self, forKey: key)  // missing or not an array of numbers: its own error
        throw DecodingError.typeMismatch([Int].self, .init(codingPath: codingPath + [key], debugDescription: "expected integers"))
    }
}

/// POST /v1/completions.
public struct CompletionRequest: Decodable, Sendable {
    public var model: String?
    public var prompt: PromptInput
    public var maxTokens: Int?
    /// How many alternatives to report with each token's log-probability (0 reports the token's alone).
    public var logprobs: Int?
    public var echo: Bool?
    public var suffix: String?
    public var sampling: SamplingFields

    enum CodingKeys: String, CodingKey {
        case model, prompt, logprobs, echo, suffix
        case maxTokens = "max_tokens"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decodeIfPresent(String.self, forKey: .model)
        prompt = try container.decode(PromptInput.self, forKey: .prompt)
        maxTokens = try container.decodeInteger(Int.self, forKey: .maxTokens)
        logprobs = try container.decodeInteger(Int.self, forKey: .logprobs)
        echo = try container.decodeIfPresent(Bool.self, forKey: .echo)
        suffix = try container.decodeIfPresent(String.self, forKey: .suffix)
        sampling = try SamplingFields(from: decoder)
    }
}

/// One message of a chat: `content` is a string or an array of text parts.
public struct ChatMessage: Codable, Sendable, Equatable {
    public var role: String
    public var content: String?

    public init(role: String, content: String?) {
        self.role = role
        self.content = content
    }

    struct Part: Decodable {
        var type: String
        var text: String?
    }

    enum CodingKeys: String, CodingKey { case role, content }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(String.self, forKey: .role)
        if (try? container.decodeNil(forKey: .content)) ?? true {
            content = nil
        } else if let text = try? container.decode(String.self, forKey: .content) {
            content = text
        } else {
            let parts = try container.decode([Part].self, forKey: .content)
            if let other = parts.first(where: { $0.type != "text" }) {
                throw DecodingError.dataCorruptedError(forKey: .content, in: container,
                                                       debugDescription: "content parts of type '\(other.type)' are not supported (text only)")
            }
            content = parts.compactMap(\.text).joined()
        }
    }
}

/// POST /v1/chat/completions.
public struct ChatCompletionRequest: Decodable, Sendable {
    public var model: String?
    public var messages: [ChatMessage]
    public var maxTokens: Int?
    public var maxCompletionTokens: Int?
    public var logprobs: Bool?
    public var topLogprobs: Int?
    public var sampling: SamplingFields

    enum CodingKeys: String, CodingKey {
        case model, messages, logprobs
        case maxTokens = "max_tokens", maxCompletionTokens = "max_completion_tokens", topLogprobs = "top_logprobs"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decodeIfPresent(String.self, forKey: .model)
        messages = try container.decode([ChatMessage].self, forKey: .messages)
        maxTokens = try container.decodeInteger(Int.self, forKey: .maxTokens)
        maxCompletionTokens = try container.decodeInteger(Int.self, forKey: .maxCompletionTokens)
        logprobs = try container.decodeIfPresent(Bool.self, forKey: .logprobs)
        topLogprobs = try container.decodeInteger(Int.self, forKey: .topLogprobs)
        sampling = try SamplingFields(from: decoder)
    }
}

// MARK: Responses

public struct Usage: Codable, Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int

    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        totalTokens = promptTokens + completionTokens
    }

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
    }
}

/// Log-probabilities of a completion's tokens, in the legacy completions layout.
public struct CompletionLogprobs: Codable, Sendable, Equatable {
    public var tokens: [String] = []
    /// nil for the first token of an echoed prompt (nothing precedes it).
    public var tokenLogprobs: [Float?] = []
    public var topLogprobs: [[String: Float]?] = []
    public var textOffset: [Int] = []

    public init(tokens: [String] = [], tokenLogprobs: [Float?] = [], topLogprobs: [[String: Float]?] = [], textOffset: [Int] = []) {
        self.tokens = tokens
        self.tokenLogprobs = tokenLogprobs
        self.topLogprobs = topLogprobs
        self.textOffset = textOffset
    }

    /// `other`'s tokens after these.
    public mutating func append(_ other: CompletionLogprobs) {
        tokens += other.tokens
        tokenLogprobs += other.tokenLogprobs
        topLogprobs += other.topLogprobs
        textOffset += other.textOffset
    }

    enum CodingKeys: String, CodingKey {
        case tokens, tokenLogprobs = "token_logprobs", topLogprobs = "top_logprobs", textOffset = "text_offset"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tokens, forKey: .tokens)
        try container.encode(tokenLogprobs, forKey: .tokenLogprobs)
        try container.encode(topLogprobs, forKey: .topLogprobs)
        try container.encode(textOffset, forKey: .textOffset)
    }
}

public struct CompletionChoice: Codable, Sendable {
    public var index: Int
    public var text: String
    public var logprobs: CompletionLogprobs?
    public var finishReason: String?

    enum CodingKeys: String, CodingKey { case index, text, logprobs, finishReason = "finish_reason" }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encode(text, forKey: .text)
        try container.encode(logprobs, forKey: .logprobs)
        try container.encode(finishReason, forKey: .finishReason)
    }
}

/// A whole completion, or one chunk of a streamed one (the same object, as OpenAI sends it).
public struct CompletionResponse: Codable, Sendable {
    public var id: String
    public var object = "text_completion"
    public var created: Int
    public var model: String
    public var choices: [CompletionChoice]
    public var usage: Usage?
}

/// A chat token's log-probability with its bytes (a token may be part of a character).
public struct ChatTokenLogprob: Codable, Sendable, Equatable {
    public var token: String
    public var logprob: Float
    public var bytes: [UInt8]
    public var topLogprobs: [Alternative]?

    public struct Alternative: Codable, Sendable, Equatable {
        public var token: String
        public var logprob: Float
        public var bytes: [UInt8]
    }

    enum CodingKeys: String, CodingKey { case token, logprob, bytes, topLogprobs = "top_logprobs" }
}

public struct ChatLogprobs: Codable, Sendable, Equatable {
    public var content: [ChatTokenLogprob]
}

public struct ChatChoice: Codable, Sendable {
    public var index: Int
    /// The whole message (`chat.completion`), or
    public var message: ChatMessage?
    /// what this chunk adds (`chat.completion.chunk`).
    public var delta: ChatDelta?
    public var logprobs: ChatLogprobs?
    public var finishReason: String?

    enum CodingKeys: String, CodingKey { case index, message, delta, logprobs, finishReason = "finish_reason" }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encodeIfPresent(message, forKey: .message)
        try container.encodeIfPresent(delta, forKey: .delta)
        try container.encode(logprobs, forKey: .logprobs)
        try container.encode(finishReason, forKey: .finishReason)
    }
}

public struct ChatDelta: Codable, Sendable, Equatable {
    public var role: String?
    public var content: String?
}

public struct ChatCompletionResponse: Codable, Sendable {
    public var id: String
    public var object: String
    public var created: Int
    public var model: String
    public var choices: [ChatChoice]
    public var usage: Usage?

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(object, forKey: .object)
        try container.encode(created, forKey: .created)
        try container.encode(model, forKey: .model)
        try container.encode(choices, forKey: .choices)
        try container.encodeIfPresent(usage, forKey: .usage)
    }
}

public struct ModelList: Codable, Sendable {
    public struct Model: Codable, Sendable {
        public var id: String
        public var object = "model"
        public var created: Int
        public var ownedBy = "swiftgpt"
        enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by" }
    }

    public var object = "list"
    public var data: [Model]
}

/// POST /tokenize (llama.cpp's and vLLM's extension): a text or messages to token ids.
public struct TokenizeRequest: Decodable, Sendable {
    public var model: String?
    public var prompt: String?
    public var content: String?
    public var messages: [ChatMessage]?
    /// Parse special tokens written in `prompt` (default true, as the completions endpoint does).
    public var addSpecial: Bool?
    enum CodingKeys: String, CodingKey { case model, prompt, content, messages, addSpecial = "add_special" }
}

public struct TokenizeResponse: Codable, Sendable, Equatable {
    public var tokens: [Int]
    public var count: Int
    public var maxModelLen: Int
    enum CodingKeys: String, CodingKey { case tokens, count, maxModelLen = "max_model_len" }
}

public struct DetokenizeRequest: Decodable, Sendable {
    public var model: String?
    public var tokens: [Int]

    enum CodingKeys: String, CodingKey { case model, tokens }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decodeIfPresent(String.self, forKey: .model)
        tokens = try container.decodeIntegers(forKey: .tokens)
    }
}

public struct DetokenizeResponse: Codable, Sendable, Equatable {
    public var prompt: String
}
