import AsyncHTTPClient
import BPE
import Foundation
import NIOHTTP1
import Generation
import NIOCore
import Server
import ServerHTTP
import Transformer
import XCTest

/// A tiny random Llama (2 layers, 64 wide) with a byte-level tokenizer that has ChatML's special
/// tokens, built once: fast enough in debug builds, and a real model path through the server.
enum TinyModel {
    static let shared: (model: LanguageModel, tokenizer: Tokenizer) = {
        let text = String(repeating: "the quick brown fox jumps over the lazy dog. a tiny corpus for a tiny model. ", count: 20)
        let tokenizer = try! BPETrainer(vocabularySize: 320, specialTokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
            .train(texts: [text])
        let config = ModelConfig.llama(layers: 2, heads: 4, keyValueHeads: 2, embedding: 64, hidden: 128,
                                       vocabularySize: tokenizer.vocabularySize, contextLength: 256)
        let model = try! LanguageModel(config: config, trainable: false)
        model.initializeWeights(seed: 7)
        return (model, tokenizer)
    }()

    static let template = ChatTemplate(format: .chatML)

    /// logit_bias that keeps the random weights from ending a sequence early (special tokens) or
    /// writing part of a character (bytes past ASCII), so that texts compare token by token.
    static let plainTextBias: [String: Int] = {
        let tokenizer = shared.tokenizer
        var bias: [String: Int] = [:]
        for id in 0..<tokenizer.vocabularySize {
            let bytes = (try? tokenizer.bytes(of: id)) ?? []
            if tokenizer.specialTokens.values.contains(id) || bytes.isEmpty || bytes.contains(where: { $0 >= 128 || $0 < 32 }) {
                bias[String(id)] = -100
            }
        }
        return bias
    }()
}

/// A server on a free loopback port, and requests to it through async-http-client.
final class ServerHarness: @unchecked Sendable {
    let server: OpenAIHTTPServer
    let engine: ServingEngine
    let port: Int
    let apiKey: String?
    private let task: Task<Void, Error>

    /// Room for many connections at once (async-http-client's default is 8 per host).
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    init(limits: ServingEngine.Limits = .init(maxBatch: 16, maxQueue: 32, chunkTokens: 64), apiKey: String? = nil,
         maxBodyBytes: Int = 1 << 20, gracePeriod: Duration = .seconds(30),
         model: (model: LanguageModel, tokenizer: Tokenizer, template: ChatTemplate?)? = nil, modelName: String = "tiny") async throws {
        let (languageModel, tokenizer, template) = model ?? (TinyModel.shared.model, TinyModel.shared.tokenizer, TinyModel.template)
        let server = OpenAIHTTPServer(configuration: .init(port: 0, apiKey: apiKey, maxBodyBytes: maxBodyBytes,
                                                           gracePeriod: gracePeriod, handlesSignals: false))
        let engine = try ServingEngine(model: languageModel, tokenizer: tokenizer, limits: limits, metrics: server.metrics)
        server.serve(OpenAIService(engine: engine, modelName: modelName, chatTemplate: template))
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        task = Task { try await server.run { port in continuation.yield(port) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        self.server = server
        self.engine = engine
        self.port = port
        self.apiKey = apiKey
    }

    /// Drains and stops the server (what SIGTERM does); the engine's thread ends with it.
    func stop() async {
        await server.shutdown()
        _ = try? await task.value
    }

    /// Waits for a drain (`server.shutdown()`) to finish.
    func waitForExit() async throws { try await task.value }

    struct Reply {
        let status: Int
        let headers: [(String, String)]
        let body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        /// The OpenAI error object's `param`.
        var errorParam: String? { (json["error"] as? [String: Any])?["param"] as? String }
    }

    func request(_ method: HTTPMethod, _ path: String, body: String? = nil, key: String?? = .none) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let key = key ?? apiKey
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        return request
    }

    func send(_ method: HTTPMethod, _ path: String, body: String? = nil, key: String?? = .none) async throws -> Reply {
        let response = try await Self.client.execute(request(method, path, body: body, key: key), timeout: .seconds(120))
        let data = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                     body: Data(buffer: data))
    }

    func post(_ path: String, _ object: [String: Any]) async throws -> Reply {
        try await send(.POST, path, body: Self.json(object))
    }

    /// A streamed request's events: every `data:` payload in order (the last should be `[DONE]`).
    func events(_ path: String, _ object: [String: Any]) async throws -> (status: Int, contentType: String?, payloads: [String]) {
        try await events(path, body: Self.json(object))
    }

    func events(_ path: String, body: String) async throws -> (status: Int, contentType: String?, payloads: [String]) {
        let response = try await Self.client.execute(request(.POST, path, body: body), timeout: .seconds(120))
        var text = ""
        for try await buffer in response.body { text += String(buffer: buffer) }
        let payloads = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { frame in
            frame.hasPrefix("data: ") ? String(frame.dropFirst(6)) : "not an event: " + frame
        }
        return (Int(response.status.code), response.headers.first(name: "Content-Type"), payloads)
    }

    static func json(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// The text of a streamed completion's chunks (its first choice).
    static func streamedText(_ payloads: [String]) -> String {
        payloads.dropLast().map(object).compactMap { ($0["choices"] as? [[String: Any]])?.first?["text"] as? String }.joined()
    }

    static func object(_ payload: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(payload.utf8))) as? [String: Any] ?? [:]
    }

    /// Polls `condition` until it holds or `seconds` pass.
    static func eventually(seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}
