import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Generation
import Server
import ServerHTTP
import TestSupport
import Transformer
import XCTest

/// Errors and limits (400, 401, 404, 413, 429, 503), concurrent requests batched together,
/// cancellation and the drain.
final class LimitsAndBatchingTests: XCTestCase {
    func testBadRequestsNameTheField() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let cases: [(body: String, param: String?, path: String)] = [
            (#"{"prompt": "x", "max_tokens": 5"#, nil, "/v1/completions"),                  // malformed JSON
            (#"[1, 2]"#, nil, "/v1/completions"),                                           // not an object
            (#"{"max_tokens": 5}"#, "prompt", "/v1/completions"),                           // missing
            (#"{"prompt": "x", "max_tokens": "five"}"#, "max_tokens", "/v1/completions"),   // wrong type
            (#"{"prompt": "x", "max_tokens": 1.5}"#, "max_tokens", "/v1/completions"),
            (#"{"prompt": "x", "max_tokens": 1e30}"#, "max_tokens", "/v1/completions"),
            (#"{"prompt": "x", "seed": "1"}"#, "seed", "/v1/completions"),
            (#"{"prompt": "x", "n": 2.5}"#, "n", "/v1/completions"),
            (#"{"prompt": [1, 2.5]}"#, "prompt", "/v1/completions"),
            (#"{"prompt": {"a": 1}}"#, "prompt", "/v1/completions"),
            (#"{"prompt": [1, 99999]}"#, "prompt", "/v1/completions"),                     // not a token id
            (#"{"prompt": ""}"#, "prompt", "/v1/completions"),
            (#"{"prompt": "x", "temperature": 3}"#, "temperature", "/v1/completions"),      // out of range
            (#"{"prompt": "x", "top_p": 0}"#, "top_p", "/v1/completions"),
            (#"{"prompt": "x", "n": 0}"#, "n", "/v1/completions"),
            (#"{"prompt": "x", "max_tokens": -1}"#, "max_tokens", "/v1/completions"),
            (#"{"prompt": "x", "presence_penalty": 2.5}"#, "presence_penalty", "/v1/completions"),
            (#"{"prompt": "x", "frequency_penalty": -3}"#, "frequency_penalty", "/v1/completions"),
            (#"{"prompt": "x", "logit_bias": {"abc": 1}}"#, "logit_bias", "/v1/completions"),
            (#"{"prompt": "x", "logit_bias": {"5": 101}}"#, "logit_bias", "/v1/completions"),
            (#"{"prompt": "x", "logprobs": 21}"#, "logprobs", "/v1/completions"),
            (#"{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}"#, "stop", "/v1/completions"),
            (#"{"prompt": "x", "stop": 5}"#, "stop", "/v1/completions"),
            (#"{"prompt": "x", "stream": "yes"}"#, "stream", "/v1/completions"),
            (#"{"prompt": "x", "max_tokens": 300}"#, "max_tokens", "/v1/completions"),     // past the context
            (#"{"messages": []}"#, "messages", "/v1/chat/completions"),
            (#"{"messages": [{"role": "robot", "content": "hi"}]}"#, "messages[0].role", "/v1/chat/completions"),
            (#"{"messages": [{"content": "hi"}]}"#, "messages[0].role", "/v1/chat/completions"),
            (#"{"messages": [{"role": "user", "content": 5}]}"#, "messages[0].content", "/v1/chat/completions"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}"#, "max_completion_tokens",
             "/v1/chat/completions"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}"#, "top_logprobs", "/v1/chat/completions"),
            (#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}"#, "max_tokens", "/v1/chat/completions"),
            (#"{"tokens": "abc"}"#, "tokens", "/detokenize"),
            (#"{"tokens": [1.5]}"#, "tokens", "/detokenize"),
            (#"{}"#, "prompt", "/tokenize"),
        ]
        for (body, param, path) in cases {
            let reply = try await harness.send(.POST, path, body: body)
            XCTAssertEqual(reply.status, 400, "\(path) \(body): \(reply.text)")
            let error = try XCTUnwrap(reply.json["error"] as? [String: Any], "\(body): \(reply.text)")
            XCTAssertEqual(error["type"] as? String, "invalid_request_error")
            XCTAssertFalse((error["message"] as? String ?? "").isEmpty)
            XCTAssertEqual(reply.errorParam, param, "\(body): \(reply.text)")
            if param == nil { XCTAssertTrue(error["param"] is NSNull, "param is an explicit null") }
        }
        let wrongModel = try await harness.post("/v1/completions", ["model": "gpt-4", "prompt": "x"])
        XCTAssertEqual(wrongModel.status, 404)
        XCTAssertEqual((wrongModel.json["error"] as? [String: Any])?["code"] as? String, "model_not_found")
        let noRoute = try await harness.send(.GET, "/v1/nothing")
        XCTAssertEqual(noRoute.status, 404)
        XCTAssertNotNil(noRoute.json["error"])
        // The server is still up and answers.
        let fine = try await harness.post("/v1/completions", ["prompt": "x", "max_tokens": 2])
        XCTAssertEqual(fine.status, 200)
        XCTAssertEqual(harness.engine.outstandingCount, 0)
    }

    func testAPIKeyAndBodyLimit() async throws {
        let harness = try await ServerHarness(apiKey: "sesame", maxBodyBytes: 2_000)
        defer { Task { await harness.stop() } }
        let missing = try await harness.send(.GET, "/v1/models", key: .some(nil))
        XCTAssertEqual(missing.status, 401)
        XCTAssertEqual((missing.json["error"] as? [String: Any])?["code"] as? String, "invalid_api_key")
        let wrong = try await harness.send(.POST, "/v1/completions", body: #"{"prompt": "x"}"#, key: "sesamE")
        XCTAssertEqual(wrong.status, 401)
        let metrics = try await harness.send(.GET, "/metrics", key: .some(nil))
        XCTAssertEqual(metrics.status, 401)
        let health = try await harness.send(.GET, "/health", key: .some(nil))
        XCTAssertEqual(health.status, 200, "/health stays public")
        let right = try await harness.send(.GET, "/v1/models")
        XCTAssertEqual(right.status, 200)

        let big = ServerHarness.json(["prompt": String(repeating: "a", count: 3_000)])
        let tooLarge = try await harness.send(.POST, "/v1/completions", body: big)
        XCTAssertEqual(tooLarge.status, 413)
        XCTAssertEqual((tooLarge.json["error"] as? [String: Any])?["type"] as? String, "invalid_request_error")
        let after = try await harness.send(.POST, "/v1/completions", body: #"{"prompt": "x", "max_tokens": 1}"#)
        XCTAssertEqual(after.status, 200)
    }

    /// One sequence in the batch and none waiting: a second request while the first runs gets 429
    /// with Retry-After; once the first ends, requests are taken again.
    func testFullQueueAnswers429() async throws {
        let harness = try await ServerHarness(limits: .init(maxBatch: 1, maxQueue: 0))
        defer { Task { await harness.stop() } }
        let long = Task {
            try await harness.events("/v1/completions", ["prompt": "the", "max_tokens": 200, "stream": true, "logit_bias": TinyModel.plainTextBias])
        }
        let busy = await ServerHarness.eventually { harness.engine.outstandingCount == 1 }
        XCTAssertTrue(busy)
        let refused = try await harness.post("/v1/completions", ["prompt": "x", "max_tokens": 2])
        XCTAssertEqual(refused.status, 429)
        XCTAssertEqual(refused.header("Retry-After"), "1")
        XCTAssertEqual((refused.json["error"] as? [String: Any])?["type"] as? String, "rate_limit_exceeded")
        let twoChoices = try await harness.post("/v1/completions", ["prompt": "x", "n": 2])
        XCTAssertEqual(twoChoices.status, 400, "more sequences than the server ever holds")
        let first = try await long.value
        XCTAssertEqual(first.payloads.last, "[DONE]")
        let accepted = try await harness.post("/v1/completions", ["prompt": "x", "max_tokens": 2])
        XCTAssertEqual(accepted.status, 200)
    }

    /// 16 streaming requests at once (different prompts, lengths and seeds) each get what the same
    /// request gets alone, while they ran in one batch.
    func testSimultaneousStreamsEqualEachAlone() async throws {
        let harness = try await ServerHarness(limits: .init(maxBatch: 16, maxQueue: 16, chunkTokens: 32))
        defer { Task { await harness.stop() } }
        let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
        let requests: [[String: Any]] = (0..<16).map { i in
            ["prompt": (0...(i % 5)).map { words[($0 + i) % words.count] }.joined(separator: " "),
             "max_tokens": 6 + i % 7, "temperature": i % 4 == 0 ? 0 : 0.9, "seed": i, "stream": true, "logit_bias": TinyModel.plainTextBias]
        }
        let bodies = requests.map(ServerHarness.json)
        var alone: [String] = []
        for body in bodies {
            alone.append(ServerHarness.streamedText(try await harness.events("/v1/completions", body: body).payloads))
        }

        let largest = LargestBatch()
        let watcher = Task {
            while !Task.isCancelled {
                largest.see(harness.engine.snapshot.active)
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        let together = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, body) in bodies.enumerated() {
                group.addTask { (i, ServerHarness.streamedText(try await harness.events("/v1/completions", body: body).payloads)) }
            }
            var texts = [String](repeating: "", count: requests.count)
            for try await (i, text) in group { texts[i] = text }
            return texts
        }
        watcher.cancel()
        for i in requests.indices { XCTAssertEqual(together[i], alone[i], "request \(i)") }
        XCTAssertGreaterThan(largest.value, 8, "the requests shared steps (more than a default connection pool's 8)")
        XCTAssertTrue(alone.allSatisfy { !$0.isEmpty })
    }

    /// A client that goes away mid-stream: its sequence ends and its KV blocks return to the pool.
    func testDisconnectCancelsTheSequence() async throws {
        try await checkDisconnectCancels(path: "/v1/completions", body: ["prompt": "the quick", "max_tokens": 230, "stream": true])
    }

    /// The same for a client waiting for a whole (not streamed) reply.
    func testDisconnectCancelsAWholeReply() async throws {
        try await checkDisconnectCancels(path: "/v1/chat/completions", body: ["messages": [["role": "user", "content": "hi"]], "max_tokens": 230])
    }

    /// Sends a 230-token request, drops it once its sequence holds KV blocks, and checks that
    /// the sequence ended early with every block back in the pool.
    private func checkDisconnectCancels(path: String, body: [String: Any]) async throws {
        let harness = try await ServerHarness(limits: .init(maxBatch: 4, maxQueue: 4))
        defer { Task { await harness.stop() } }
        var body = body
        body["logit_bias"] = TinyModel.plainTextBias
        let request = harness.request(.POST, path, body: ServerHarness.json(body))
        let client = Task {
            let response = try await ServerHarness.client.execute(request, timeout: .seconds(60))
            for try await _ in response.body {}
        }
        let started = await ServerHarness.eventually { harness.engine.snapshot.kvBlocksInUse > 0 }
        XCTAssertTrue(started)
        client.cancel()
        _ = try? await client.value
        let freed = await ServerHarness.eventually {
            harness.engine.outstandingCount == 0 && harness.engine.snapshot.kvBlocksInUse == 0
        }
        XCTAssertTrue(freed, "\(harness.engine.snapshot), outstanding \(harness.engine.outstandingCount)")
        let metrics = try await harness.send(.GET, "/metrics")
        let generated = metrics.text.split(separator: "\n").first { $0.hasPrefix("swiftgpt_generated_tokens_total ") }
        let count = generated.flatMap { Int($0.split(separator: " ")[1]) } ?? -1
        XCTAssertGreaterThan(count, 0)
        XCTAssertLessThan(count, 230, "the sequence stopped early")
    }

    /// Until the model is served, /health and the model routes answer 503; then 200.
    func testUnavailableWhileLoading() async throws {
        let server = OpenAIHTTPServer(configuration: .init(port: 0, handlesSignals: false))
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let running = Task { try await server.run { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        let listening = await iterator.next()
        let port = try XCTUnwrap(listening)
        func status(_ path: String) async throws -> Int {
            let response = try await ServerHarness.client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"),
                                                                  timeout: .seconds(30))
            _ = try await response.body.collect(upTo: 1 << 20)
            return Int(response.status.code)
        }
        let loadingHealth = try await status("/health")
        let loadingModels = try await status("/v1/models")
        XCTAssertEqual(loadingHealth, 503)
        XCTAssertEqual(loadingModels, 503)
        let engine = try ServingEngine(model: TinyModel.shared.model, tokenizer: TinyModel.shared.tokenizer, metrics: server.metrics)
        server.serve(OpenAIService(engine: engine, modelName: "tiny", chatTemplate: TinyModel.template))
        let readyHealth = try await status("/health")
        let readyModels = try await status("/v1/models")
        XCTAssertEqual(readyHealth, 200)
        XCTAssertEqual(readyModels, 200)
        await server.shutdown()
        try await running.value
    }

    /// Requests that reach an idle engine close together prefill in one step: the second comes
    /// 50 ms after the first, within the gap (300 ms here), and both one-token requests end in
    /// the first step; with no gap the first runs alone.
    func testABurstPrefillsInOneStep() async throws {
        func stepsForTwo(gap: Duration) async throws -> Int {
            let engine = try ServingEngine(model: TinyModel.shared.model, tokenizer: TinyModel.shared.tokenizer,
                                           limits: .init(burstGap: gap, burstWindow: .seconds(5)))
            defer { engine.beginDraining() }
            var options = GenerationOptions(maxTokens: 1, sampling: SamplingOptions(temperature: 0))
            options.stopAtEndOfSequence = false
            let first = try engine.submit(prompt: [1, 2, 3], options: options)
            try await Task.sleep(for: .milliseconds(50))
            let second = try engine.submit(prompt: [4, 5], options: options)
            for stream in [first, second] {
                var finished = false
                for await event in stream { if case .finished = event { finished = true } }
                XCTAssertTrue(finished)
            }
            return engine.snapshot.steps
        }
        let gathered = try await stepsForTwo(gap: .milliseconds(300))
        XCTAssertEqual(gathered, 1)
        let apart = try await stepsForTwo(gap: .zero)
        XCTAssertEqual(apart, 2)
    }

    /// A drain (what SIGTERM does): requests in flight finish, new ones get 503, then run returns.
    func testDrainFinishesWhatIsInFlight() async throws {
        let harness = try await ServerHarness(limits: .init(maxBatch: 4, maxQueue: 4), gracePeriod: .seconds(60))
        let inFlight = Task {
            try await harness.events("/v1/completions", ["prompt": "the", "max_tokens": 120, "stream": true, "logit_bias": TinyModel.plainTextBias])
        }
        let started = await ServerHarness.eventually { harness.engine.outstandingCount == 1 }
        XCTAssertTrue(started)
        // The listener stays open while the drain waits for the engine: new requests get 503.
        let shutdown = Task { await harness.server.shutdown() }
        let draining = await ServerHarness.eventually { harness.engine.isDraining }
        XCTAssertTrue(draining)
        let refused = try await harness.post("/v1/completions", ["prompt": "x", "max_tokens": 2])
        XCTAssertEqual(refused.status, 503)
        let health = try await harness.send(.GET, "/health")
        XCTAssertEqual(health.status, 503)
        let result = try await inFlight.value
        XCTAssertEqual(result.payloads.last, "[DONE]")
        let chunks = result.payloads.dropLast().map(ServerHarness.object)
        let finish = chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
        XCTAssertEqual(finish, ["length"], "the request in flight ran to its end")
        await shutdown.value
        try await harness.waitForExit()
    }

    /// SmolLM2 through the server: a chat answer, and the streamed answer is the same text.
    func testSmolLM2Chat() async throws {
        let loaded = try ModelLoader.load(path: try smolLM2Path())
        let harness = try await ServerHarness(limits: .init(maxBatch: 4, maxQueue: 4, contextLength: 512),
                                              model: (loaded.model, loaded.tokenizer, loaded.chatTemplate), modelName: "smollm2")
        defer { Task { await harness.stop() } }
        let request: [String: Any] = ["model": "smollm2", "messages": [["role": "user", "content": "What is the capital of France?"]],
                                      "max_tokens": 12, "temperature": 0]
        let reply = try await harness.post("/v1/chat/completions", request)
        XCTAssertEqual(reply.status, 200, reply.text)
        let content = try XCTUnwrap(((reply.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String)
        XCTAssertTrue(content.contains("Paris"), content)
        var streamed = request
        streamed["stream"] = true
        let events = try await harness.events("/v1/chat/completions", streamed)
        let text = events.payloads.dropLast().map(ServerHarness.object).compactMap {
            (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String
        }.joined()
        XCTAssertEqual(text, content)
    }
}

/// The largest count seen, from any task.
final class LargestBatch: @unchecked Sendable {
    private let lock = NSLock()
    private var largest = 0
    func see(_ count: Int) { lock.withLock { largest = max(largest, count) } }
    var value: Int { lock.withLock { largest } }
}
