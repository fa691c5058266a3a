import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ServerHTTP
import SwiftGPT

/// `gpt-bench serve`: the server under load, measured from outside through HTTP. It starts
/// `gpt serve`'s server in this process on a loopback port; C clients each send streaming
/// completions one after another; every completion is exactly `--max-tokens` long (end tokens
/// biased away). Aggregate generated tokens/s, requests/s, and time to first token and latency
/// (p50, p99) per client count. `--mixed N` instead sends N requests of mixed valid and invalid
/// input from 32 clients, checks every answer's status, and compares resident memory after the
/// run with its warmed-up baseline.
struct ServeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Throughput, time to first token and latency of gpt serve under concurrent clients (loopback HTTP).")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "Concurrent clients, comma-separated.") var clients = ThreadList(argument: "1,4,16")!
    @Option(help: "Requests each client sends per measurement.") var requests = 3
    @Option(help: "Rounds over the client counts (each count's median round is reported; its ratio to one client is the median of same-round ratios).") var repetitions = 3
    @Option(help: "Tokens per completion.") var maxTokens = 64
    @Option(help: "The server's largest batch.") var maxBatch = 16
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "How the KV cache stores keys and values: f32, or f16 (half the memory and attention reads; rounded to fp16).") var kvType: KVStorage = .f32
    @Option(help: "Instead: N requests of mixed valid and invalid input from 32 clients.") var mixed: Int?
    @Flag(help: "One JSON object per measurement.") var json = false

    func run() async throws {
        guard requests > 0, maxTokens > 0, maxBatch > 0, repetitions > 0 else {
            throw ValidationError("--requests, --max-tokens, --max-batch, --repetitions must be positive")
        }
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        let loaded = try ModelLoader.load(path: model, pool: pool)
        loaded.model.keyValueStorage = kvType
        let server = OpenAIHTTPServer(configuration: .init(port: 0, handlesSignals: false))
        let engine = try ServingEngine(model: loaded.model, tokenizer: loaded.tokenizer,
                                       limits: .init(maxBatch: maxBatch, maxQueue: 64, chunkTokens: 256, contextLength: 1024),
                                       metrics: server.metrics)
        server.serve(OpenAIService(engine: engine, modelName: "bench", chatTemplate: loaded.chatTemplate))
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let serving = Task { try await server.run { portContinuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw ValidationError("the server did not start") }
        // Every completion the same length: the end tokens may not be sampled.
        let bias = Dictionary(uniqueKeysWithValues: SequenceState.endTokens(of: loaded.tokenizer).map { (String($0), -100) })
        let client = LoadClient(port: port, bias: bias, maxTokens: maxTokens)
        defer { serving.cancel() }
        if !json {
            print("\(model): \(threads ?? pool.threadCount) threads, batch \(maxBatch), \(maxTokens)-token completions, loopback HTTP; \(InstructionSet.best); KV cache \(kvType.rawValue)")
        }
        if let mixed {
            try await runMixed(client, count: mixed)
            await server.shutdown()
            return
        }
        _ = try await client.complete(prompt: "Warm up.")
        // The client counts take turns within each round, so that a ratio compares the same minutes
        // of a shared machine.
        let counts = clients.counts
        var rounds = counts.map { _ in [LoadClient.Measurement]() }
        for _ in 0..<repetitions {
            for (index, count) in counts.enumerated() {
                rounds[index].append(try await client.measure(clients: count, requestsEach: requests))
            }
        }
        let single = counts.firstIndex(of: 1)
        for (index, count) in counts.enumerated() {
            let result = rounds[index].sorted { $0.tokensPerSecond < $1.tokensPerSecond }[repetitions / 2]
            let ratio = single.map { medianRatio(rounds[index].map(\.tokensPerSecond), to: rounds[$0].map(\.tokensPerSecond)) }
            if json {
                print(jsonLine(["bench": "serve", "isa": "\(InstructionSet.best)", "kv": kvType.rawValue, "clients": count, "requests": result.requests, "failed": result.failed,
                                "tokens_per_sec": result.tokensPerSecond, "vs_one_client": ratio,
                                "requests_per_sec": result.requestsPerSecond,
                                "ttft_p50_ms": result.ttft.p50 * 1000, "ttft_p99_ms": result.ttft.p99 * 1000,
                                "latency_p50_ms": result.latency.p50 * 1000, "latency_p99_ms": result.latency.p99 * 1000]))
            } else {
                let versus = ratio.map { String(format: " (%.2fx one client)", $0) } ?? ""
                print(String(format: "%2d clients: %4d requests (%d failed), %.1f tok/s%@, %.2f req/s, TTFT p50 %.0f ms p99 %.0f ms, latency p50 %.0f ms p99 %.0f ms",
                             count, result.requests, result.failed, result.tokensPerSecond, versus, result.requestsPerSecond,
                             result.ttft.p50 * 1000, result.ttft.p99 * 1000, result.latency.p50 * 1000, result.latency.p99 * 1000))
            }
        }
        let failed = rounds.joined().reduce(0) { $0 + $1.failed }
        if failed > 0 { print("\(failed) requests failed over all rounds") }
        await server.shutdown()
        _ = try? await serving.value
    }

    /// 1,000 (or N) requests, one in three invalid in one of several ways, from 32 clients.
    private func runMixed(_ client: LoadClient, count: Int) async throws {
        let cases = MixedCase.all(maxTokens: 8)
        // Warm-up: the same load, a fifth as long (the batch, KV blocks and buffers reach their
        // working size), then the baseline memory.
        _ = try await sendMixed(client, cases: cases, count: max(cases.count, count / 5))
        let baseline = residentBytes()
        let start = ContinuousClock.now
        let tally = try await sendMixed(client, cases: cases, count: count)
        let seconds = (ContinuousClock.now - start).seconds
        let health = try await client.status(of: "/health")
        let after = residentBytes()
        let change = baseline > 0 ? Double(after - baseline) / Double(baseline) : 0  // /proc is Linux's
        if json {
            print(jsonLine(["bench": "serve-mixed", "isa": "\(InstructionSet.best)", "requests": count, "valid": tally.valid, "invalid": tally.invalid,
                            "wrong_status": tally.wrong, "seconds": seconds, "health_after": health,
                            "rss_baseline_mb": Double(baseline) / 1e6, "rss_after_mb": Double(after) / 1e6, "rss_change": change]))
        } else {
            print(String(format: "mixed: %d requests (%d valid, %d invalid) from 32 clients in %.1f s; %d answered with the wrong status; /health after: %d; resident memory %.1f MB -> %.1f MB (%+.1f%%)",
                         count, tally.valid, tally.invalid, seconds, tally.wrong, health, Double(baseline) / 1e6,
                         Double(after) / 1e6, change * 100))
            for line in tally.wrongExamples { print("  " + line) }
        }
    }

    /// `count` requests from 32 clients, each answer's status checked against the case's.
    private func sendMixed(_ client: LoadClient, cases: [MixedCase], count: Int) async throws -> Tally.Snapshot {
        let answered = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<32 {
                group.addTask {
                    for i in stride(from: worker, to: count, by: 32) {
                        let item = cases[i % cases.count]
                        let status = await client.send(item)
                        answered.add(expected: item.status, got: status, valid: item.status == 200)
                    }
                }
            }
            try await group.waitForAll()
        }
        return answered.snapshot
    }

    private func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kilobytes * 1024
    }
}

/// One request of the mixed run and the status it must get.
struct MixedCase: Sendable {
    let path: String
    let body: String
    let status: Int

    static func all(maxTokens: Int) -> [MixedCase] {
        let valid = [
            MixedCase(path: "/v1/completions", body: #"{"prompt": "Once upon a time", "max_tokens": \#(maxTokens)}"#, status: 200),
            MixedCase(path: "/v1/chat/completions",
                      body: #"{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": \#(maxTokens), "stream": true}"#, status: 200),
            MixedCase(path: "/v1/completions", body: #"{"prompt": [1, 2, 3], "max_tokens": \#(maxTokens), "n": 2, "seed": 1}"#, status: 200),
            MixedCase(path: "/tokenize", body: #"{"prompt": "hello world"}"#, status: 200),
        ]
        let invalid = [
            MixedCase(path: "/v1/completions", body: #"{"prompt": "x", "max_tokens": 5"#, status: 400),
            MixedCase(path: "/v1/completions", body: #"{"prompt": "x", "temperature": -1}"#, status: 400),
            MixedCase(path: "/v1/completions", body: #"{"prompt": [1, 99999999]}"#, status: 400),
            MixedCase(path: "/v1/chat/completions", body: #"{"messages": [{"role": "user"}], "max_tokens": "many"}"#, status: 400),
            MixedCase(path: "/v1/completions", body: #"{"prompt": "x", "max_tokens": 100000}"#, status: 400),
            MixedCase(path: "/v1/completions", body: #"{"model": "nope", "prompt": "x"}"#, status: 404),
            MixedCase(path: "/v1/nowhere", body: "{}", status: 404),
            MixedCase(path: "/v1/completions", body: #"{"prompt": "\#(String(repeating: "a", count: 1_100_000))"}"#, status: 413),
        ]
        // One invalid request in three.
        var cases: [MixedCase] = []
        for i in 0..<max(valid.count, invalid.count) * 2 {
            cases.append(valid[i % valid.count])
            if i % 2 == 1 { cases.append(invalid[(i / 2) % invalid.count]) }
        }
        return cases
    }
}

/// Counts of the mixed run, from any task.
final class Tally: @unchecked Sendable {
    struct Snapshot { var valid = 0, invalid = 0, wrong = 0, wrongExamples: [String] = [] }
    private let lock = NSLock()
    private var counts = Snapshot()
    var snapshot: Snapshot { lock.withLock { counts } }

    func add(expected: Int, got: Int, valid: Bool) {
        lock.withLock {
            if valid { counts.valid += 1 } else { counts.invalid += 1 }
            if expected != got {
                counts.wrong += 1
                if counts.wrongExamples.count < 5 { counts.wrongExamples.append("expected \(expected), got \(got)") }
            }
        }
    }
}

/// Streaming completions against the server, timed.
struct LoadClient: Sendable {
    let port: Int
    let bias: [String: Int]
    let maxTokens: Int

    /// Room for every client's connection at once (async-http-client's default is 8 per host).
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    struct Percentiles {
        var p50: Double, p99: Double
        init(_ values: [Double]) {
            let sorted = values.sorted()
            func at(_ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded()))] }
            p50 = at(0.5)
            p99 = at(0.99)
        }
    }

    struct Measurement {
        var requests: Int, failed: Int
        var tokensPerSecond: Double, requestsPerSecond: Double
        var ttft: Percentiles, latency: Percentiles
    }

    struct Completion: Sendable {
        var tokens: Int
        var ttft: Double
        var latency: Double
    }

    func measure(clients: Int, requestsEach: Int) async throws -> Measurement {
        let start = ContinuousClock.now
        let results = await withTaskGroup(of: [Completion?].self) { group in
            for c in 0..<clients {
                group.addTask {
                    var done: [Completion?] = []
                    for r in 0..<requestsEach {
                        done.append(try? await complete(prompt: "Story \(c)-\(r): Once upon a time, in a land far away,"))
                    }
                    return done
                }
            }
            return await group.reduce(into: [Completion?]()) { $0 += $1 }
        }
        let seconds = (ContinuousClock.now - start).seconds
        let completed = results.compactMap { $0 }
        let tokens = completed.reduce(0) { $0 + $1.tokens }
        return Measurement(requests: results.count, failed: results.count - completed.count,
                           tokensPerSecond: Double(tokens) / seconds, requestsPerSecond: Double(completed.count) / seconds,
                           ttft: Percentiles(completed.map(\.ttft)), latency: Percentiles(completed.map(\.latency)))
    }

    /// One streamed completion: time to the first token's chunk, to `[DONE]`, and the tokens counted by usage.
    func complete(prompt: String) async throws -> Completion {
        let body: [String: Any] = ["prompt": prompt, "max_tokens": maxTokens, "temperature": 0.7, "seed": 1, "stream": true,
                                   "stream_options": ["include_usage": true], "logit_bias": bias]
        let start = ContinuousClock.now
        let response = try await Self.client.execute(request("/v1/completions", body: try JSONSerialization.data(withJSONObject: body)),
                                                           timeout: .seconds(600))
        guard response.status == .ok else { throw ValidationError("status \(response.status.code)") }
        var text = "", ttft: Double?
        for try await buffer in response.body {
            if ttft == nil { ttft = (ContinuousClock.now - start).seconds }
            text += String(buffer: buffer)
        }
        let latency = (ContinuousClock.now - start).seconds
        guard text.hasSuffix("data: [DONE]\n\n"),
              let usageFrame = text.components(separatedBy: "\n\n").last(where: { $0.contains("\"usage\"") }),
              let usage = (try? JSONSerialization.jsonObject(with: Data(usageFrame.dropFirst(6).utf8))) as? [String: Any],
              let tokens = (usage["usage"] as? [String: Any])?["completion_tokens"] as? Int else {
            throw ValidationError("an incomplete stream")
        }
        return Completion(tokens: tokens, ttft: ttft ?? latency, latency: latency)
    }

    /// The status a request got; -1 when the connection failed before an answer.
    func send(_ item: MixedCase) async -> Int {
        do {
            let response = try await Self.client.execute(request(item.path, body: Data(item.body.utf8)), timeout: .seconds(600))
            for try await _ in response.body {}
            return Int(response.status.code)
        } catch {
            return -1
        }
    }

    func status(of path: String) async throws -> Int {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .GET
        let response = try await Self.client.execute(request, timeout: .seconds(30))
        for try await _ in response.body {}
        return Int(response.status.code)
    }

    private func request(_ path: String, body: Data) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        return request
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
