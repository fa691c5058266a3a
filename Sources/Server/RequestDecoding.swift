import Foundation
import Generation

extension APIError {
    /// A JSON body that does not decode: the field it names, or the body as a whole.
    ///
    ///     {"max_tokens": "ten"}  ->  400, param "max_tokens", "Invalid type for 'max_tokens': expected Int ..."
    ///     {}                     ->  400, param "prompt", "Missing required parameter: 'prompt'."
    init(_ error: DecodingError) {
        func path(_ keys: [any CodingKey]) -> String? {
            var text = ""
            for key in keys {
                if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
            }
            return text.isEmpty ? nil : text
        }
        switch error {
        case .keyNotFound(let key, let context):
            let param = path(context.codingPath + [key]) ?? key.stringValue
            self = .invalidRequest("Missing required parameter: '\(param)'.", param: param)
        case .valueNotFound(_, let context):
            let param = path(context.codingPath)
            self = .invalidRequest("'\(param ?? "body")' must not be null.", param: param)
        case .typeMismatch(let type, let context):
            guard let param = path(context.codingPath) else {
                self = .invalidRequest("The request body must be a JSON object.")
                return
            }
            let detail = context.debugDescription.hasPrefix("Expected to decode")
                ? "expected \(type)" : context.debugDescription
            self = .invalidRequest("Invalid type for '\(param)': \(detail).", param: param)
        case .dataCorrupted(let context):
            if let param = path(context.codingPath) {
                self = .invalidRequest("Invalid value for '\(param)': \(context.debugDescription)", param: param)
            } else {
                self = .invalidRequest("We could not parse the JSON body of your request: it is not valid JSON.")
            }
        @unknown default:
            self = .invalidRequest("We could not parse the JSON body of your request.")
        }
    }

    /// 500: the engine failed while generating.
    static func engineFailure(_ message: String) -> APIError {
        APIError(status: 500, message: message, type: "server_error")
    }

    /// 503: the server is shutting down (or still loading).
    static let unavailable = APIError(status: 503, message: "The server is shutting down; retry on another instance.",
                                      type: "server_error", code: "service_unavailable")
}

/// Decodes a request body, answering a malformed one with an error that names its field.
func decodeBody<Request: Decodable>(_ type: Request.Type, from body: Data) throws(APIError) -> Request {
    do {
        return try JSONDecoder().decode(Request.self, from: body)
    } catch let error as DecodingError {
        throw APIError(error)
    } catch {
        throw APIError.invalidRequest("We could not parse the JSON body of your request: \(error)")
    }
}

/// Range checks of the sampling fields, each failure naming its field, into the engine's options.
extension SamplingFields {
    func options(maxTokens: Int, alternatives: Int, vocabularySize: Int) throws(APIError) -> GenerationOptions {
        func check(_ ok: Bool, _ param: String, _ message: String) throws(APIError) {
            if !ok { throw APIError.invalidRequest("Invalid '\(param)': \(message)", param: param) }
        }
        var sampling = SamplingOptions()
        if let temperature {
            try check(temperature >= 0 && temperature <= 2, "temperature", "\(temperature) is outside [0, 2].")
            sampling.temperature = Float(temperature)
        }
        if let topP {
            try check(topP > 0 && topP <= 1, "top_p", "\(topP) is outside (0, 1].")
            sampling.topP = Float(topP)
        }
        if let topK, topK > 0 { sampling.topK = topK }
        if let minP {
            try check(minP >= 0 && minP <= 1, "min_p", "\(minP) is outside [0, 1].")
            sampling.minP = Float(minP)
        }
        if let repetitionPenalty {
            try check(repetitionPenalty > 0 && repetitionPenalty.isFinite, "repetition_penalty", "must be > 0.")
            sampling.repetitionPenalty = Float(repetitionPenalty)
        }
        if let presencePenalty {
            try check(presencePenalty >= -2 && presencePenalty <= 2, "presence_penalty", "\(presencePenalty) is outside [-2, 2].")
            sampling.presencePenalty = Float(presencePenalty)
        }
        if let frequencyPenalty {
            try check(frequencyPenalty >= -2 && frequencyPenalty <= 2, "frequency_penalty", "\(frequencyPenalty) is outside [-2, 2].")
            sampling.frequencyPenalty = Float(frequencyPenalty)
        }
        for (key, bias) in logitBias ?? [:] {
            guard let id = Int(key), id >= 0, id < vocabularySize else {
                throw APIError.invalidRequest("Invalid 'logit_bias': key '\(key)' is not a token id in [0, \(vocabularySize)).",
                                              param: "logit_bias")
            }
            try check(bias >= -100 && bias <= 100, "logit_bias", "the bias of token \(key), \(bias), is outside [-100, 100].")
            sampling.logitBias[id] = Float(bias)
        }
        if let seed { sampling.seed = UInt64(bitPattern: seed) } else { sampling.seed = UInt64.random(in: 0...UInt64.max) }
        let stops = stop?.values ?? []
        try check(stops.count <= 4, "stop", "at most 4 stop sequences, got \(stops.count).")
        try check(maxTokens >= 0, "max_tokens", "\(maxTokens) is negative.")
        var options = GenerationOptions(maxTokens: maxTokens, sampling: sampling, stop: stops)
        options.logprobAlternatives = alternatives
        return options
    }

    /// `n`, checked: 1 up to `limit`.
    func choiceCount(limit: Int) throws(APIError) -> Int {
        let count = n ?? 1
        guard count >= 1 && count <= limit else {
            throw APIError.invalidRequest("Invalid 'n': \(count) is outside [1, \(limit)].", param: "n")
        }
        return count
    }
}
