/// An error answered in OpenAI's shape, with its HTTP status:
///
///     HTTP 401
///     {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
///                "param": null, "code": "invalid_api_key"}}
public struct APIError: Error, Sendable, Equatable {
    public var status: Int
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    /// 400: a field is missing, of the wrong type, or out of range; `param` names it.
    public static func invalidRequest(_ message: String, param: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param)
    }

    /// 401: no key or a wrong key.
    public static let invalidAPIKey = APIError(
        status: 401, message: "Incorrect API key provided.", type: "invalid_request_error",
        code: "invalid_api_key")

    /// 404: the model (or route) does not exist.
    public static func modelNotFound(_ model: String) -> APIError {
        APIError(status: 404, message: "The model '\(model)' does not exist.",
                 type: "invalid_request_error", param: "model", code: "model_not_found")
    }

    /// 413: the body is larger than the server accepts.
    public static func bodyTooLarge(limit: Int) -> APIError {
        APIError(status: 413, message: "Request body exceeds \(limit) bytes.",
                 type: "invalid_request_error")
    }

    /// 429: too many requests from this client or in flight.
    public static let rateLimited = APIError(
        status: 429, message: "Too many requests; retry later.", type: "rate_limit_exceeded",
        code: "rate_limit_exceeded")

    /// 503: the server is shutting down or its queue is full.
    public static let overloaded = APIError(
        status: 503, message: "The server is overloaded; retry later.", type: "server_error")

    /// The JSON body.
    public var body: Body { Body(error: .init(message: message, type: type, param: param, code: code)) }

    public struct Body: Codable, Sendable, Equatable {
        public struct Detail: Codable, Sendable, Equatable {
            public var message: String
            public var type: String
            public var param: String?
            public var code: String?

            public func encode(to encoder: any Encoder) throws {
                // OpenAI sends param and code as explicit nulls.
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(message, forKey: .message)
                try container.encode(type, forKey: .type)
                try container.encode(param, forKey: .param)
                try container.encode(code, forKey: .code)
            }
        }

        public var error: Detail
    }
}
