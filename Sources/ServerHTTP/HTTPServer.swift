import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import Server
import ServiceLifecycle
import Synchronization

/// The OpenAI-compatible HTTP server: Hummingbird routes over an `OpenAIService`, with an API
/// key, a body limit, Prometheus metrics and a graceful drain on SIGTERM.
///
///     POST /v1/completions, /v1/chat/completions   (JSON, or server-sent events with "stream": true)
///     GET  /v1/models          POST /tokenize, /detokenize
///     GET  /health             (public; 503 while the model loads or the server drains)
///     GET  /metrics            (Prometheus text)
///
///     let server = OpenAIHTTPServer(configuration: .init(port: 8080, apiKey: "secret"))
///     server.serve(service)                   // once the model is loaded; until then 503
///     try await server.run()                  // until SIGTERM/SIGINT, or the task's cancellation
public final class OpenAIHTTPServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        /// 0 picks a free port (`onListening` says which).
        public var port: Int
        /// Requests other than `/health` must carry `Authorization: Bearer <key>`; nil: no key.
        public var apiKey: String?
        public var maxBodyBytes: Int
        /// How long a drain waits for requests in flight before the server closes anyway.
        public var gracePeriod: Duration
        /// Handle SIGTERM and SIGINT (a command); tests stop the server by cancelling its task.
        public var handlesSignals: Bool

        public init(host: String = "127.0.0.1", port: Int = 8080, apiKey: String? = nil, maxBodyBytes: Int = 1 << 20,
                    gracePeriod: Duration = .seconds(30), handlesSignals: Bool = true) {
            self.host = host
            self.port = port
            self.apiKey = apiKey
            self.maxBodyBytes = maxBodyBytes
            self.gracePeriod = gracePeriod
            self.handlesSignals = handlesSignals
        }
    }

    public let configuration: Configuration
    /// Where `/metrics` reads from; pass `metrics` to the `ServingEngine` so it counts here.
    public let registry = PrometheusCollectorRegistry()
    public let metrics: ServerMetrics
    private let current = Mutex<OpenAIService?>(nil)
    /// The running group, and whether a shutdown came before it started.
    private let running = Mutex<(group: ServiceGroup?, stopRequested: Bool)>((nil, false))
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger = Logger(label: "swiftgpt.server")) {
        self.configuration = configuration
        self.logger = logger
        var factory = PrometheusMetricsFactory(registry: registry)
        let latencyBuckets: [Duration] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120].map { .milliseconds(Int($0 * 1000)) }
        factory.defaultDurationHistogramBuckets = latencyBuckets
        metrics = ServerMetrics(factory: factory)
    }

    /// Starts answering the model endpoints with `service` (before this they answer 503).
    public func serve(_ service: OpenAIService) { current.withLock { $0 = service } }

    var service: OpenAIService? { current.withLock { $0 } }

    /// Runs until SIGTERM or SIGINT (with `handlesSignals`), `shutdown()`, or the calling task's
    /// cancellation (which stops at once). A signal or `shutdown()` drains: new generation requests get 503, those in flight run to
    /// their end within the grace period, then the listener closes and this returns.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "swiftgpt"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        let drain = DrainService(server: self, gracePeriod: configuration.gracePeriod, logger: logger)
        // Shut down in reverse order: the drain (finish what is in flight) before the listener.
        var groupConfiguration = ServiceGroupConfiguration(
            services: [.init(service: app), .init(service: drain)],
            gracefulShutdownSignals: configuration.handlesSignals ? [.sigterm, .sigint] : [],
            cancellationSignals: [],
            logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = configuration.gracePeriod + .seconds(5)
        let group = ServiceGroup(configuration: groupConfiguration)
        let stopRequested = running.withLock { state in
            state.group = group
            return state.stopRequested
        }
        if stopRequested { await group.triggerGracefulShutdown() }
        try await group.run()
    }

    /// Drains and stops the server, as SIGTERM does (at once if it has not started yet).
    public func shutdown() async {
        let group = running.withLock { state in
            state.stopRequested = true
            return state.group
        }
        await group?.triggerGracefulShutdown()
    }

    // MARK: Routes

    private func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorsAndMetrics(metrics: metrics, logger: logger))
        if let key = configuration.apiKey { router.add(middleware: APIKeyCheck(key: key)) }
        let limit = configuration.maxBodyBytes

        router.get("/health") { [self] _, _ -> Response in
            guard let service, !service.engine.isDraining else {
                return Self.json(status: .serviceUnavailable, Data(#"{"status":"unavailable"}"#.utf8))
            }
            return Self.json(status: .ok, Data(#"{"status":"ok"}"#.utf8))
        }
        router.get("/metrics") { [self] _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        router.get("/v1/models") { [self] _, _ -> Response in
            Self.json(status: .ok, try ready().models())
        }
        // Generation runs cancelled when the client closes its connection (a whole reply's too,
        // not only a stream's), which ends its sequences at the next step. Watching the connection
        // consumes it: it closes after the reply, and the reply says so.
        router.post("/v1/completions") { [self] request, _ -> Response in
            try await Self.cancellingOnClose(request) { body in try await ready().completions(Self.collect(body, limit: limit)) }
        }
        router.post("/v1/chat/completions") { [self] request, _ -> Response in
            try await Self.cancellingOnClose(request) { body in try await ready().chatCompletions(Self.collect(body, limit: limit)) }
        }
        router.post("/tokenize") { [self] request, _ -> Response in
            let body = try await Self.body(of: request, limit: limit)
            return Self.json(status: .ok, try ready().tokenize(body))
        }
        router.post("/detokenize") { [self] request, _ -> Response in
            let body = try await Self.body(of: request, limit: limit)
            return Self.json(status: .ok, try ready().detokenize(body))
        }
        return router
    }

    /// The service, or 503 while the model loads.
    private func ready() throws(APIError) -> OpenAIService {
        guard let service else {
            throw APIError(status: 503, message: "The model is still loading; retry shortly.", type: "server_error",
                           code: "model_loading")
        }
        return service
    }

    private static func cancellingOnClose(_ request: Request,
                                          _ operation: (RequestBody) async throws -> OpenAIService.Reply) async throws -> Response {
        do {
            var response = try await request.body.consumeWithCancellationOnInboundClose { body in
                Self.response(try await operation(body))
            }
            response.headers[.connection] = "close"
            return response
        } catch let error as APIError {
            var response = ErrorsAndMetrics<BasicRequestContext>.response(error)
            response.headers[.connection] = "close"
            return response
        }
    }

    private static func body(of request: Request, limit: Int) async throws -> Data {
        try await collect(request.body, limit: limit)
    }

    private static func collect(_ body: RequestBody, limit: Int) async throws -> Data {
        do {
            return Data(buffer: try await body.collect(upTo: limit))
        } catch is NIOTooManyBytesError {
            throw APIError.bodyTooLarge(limit: limit)
        }
    }

    static func json(status: HTTPResponse.Status, _ data: Data) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    private static func response(_ reply: OpenAIService.Reply) -> Response {
        switch reply {
        case .json(let data):
            return json(status: .ok, data)
        case .events(let frames):
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            // A write that fails (the client went away) ends this loop; dropping `frames` cancels the sequences.
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                for await frame in frames { try await writer.write(ByteBuffer(string: frame)) }
                try await writer.finish(nil)
            })
        }
    }
}

/// Turns thrown errors into OpenAI error bodies (unknown routes included) and counts every
/// answer by its status.
struct ErrorsAndMetrics<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as APIError {
            response = Self.response(error)
        } catch let error as HTTPError where error.status == .notFound {
            response = Self.response(APIError(status: 404, message: "No route \(request.method) \(request.uri.path).",
                                              type: "invalid_request_error", code: "not_found"))
        } catch let error as any HTTPResponseError {
            response = Self.response(APIError(status: error.status.code, message: error.status.reasonPhrase,
                                              type: error.status.code < 500 ? "invalid_request_error" : "server_error"))
        } catch {
            logger.error("request failed: \(error)")
            response = Self.response(APIError(status: 500, message: "Internal error: \(error)", type: "server_error"))
        }
        metrics.countRequest(status: response.status.code)
        return response
    }

    static func response(_ error: APIError) -> Response {
        let data = (try? JSONEncoder().encode(error.body)) ?? Data()
        var response = OpenAIHTTPServer.json(status: .init(code: error.status), data)
        if error.status == 429 { response.headers[.retryAfter] = "1" }
        return response
    }
}

/// Every route but `/health` needs `Authorization: Bearer <key>`.
struct APIKeyCheck<Context: RequestContext>: RouterMiddleware {
    let key: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path != "/health" else { return try await next(request, context) }
        let expected = "Bearer " + key
        guard let given = request.headers[.authorization], given.utf8.count == expected.utf8.count,
              zip(given.utf8, expected.utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            throw APIError.invalidAPIKey
        }
        return try await next(request, context)
    }
}

/// On graceful shutdown: the engine refuses new sequences (503) and the drain waits for those in
/// flight, within the grace period, before the listener closes.
struct DrainService: Service {
    let server: OpenAIHTTPServer
    let gracePeriod: Duration
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        guard !Task.isCancelled, let engine = server.service?.engine else { return }
        engine.beginDraining()
        logger.notice("draining: \(engine.outstandingCount) sequences in flight")
        if await !engine.waitUntilIdle(timeout: gracePeriod) {
            logger.warning("the grace period ended with \(engine.outstandingCount) sequences in flight")
        }
    }
}
