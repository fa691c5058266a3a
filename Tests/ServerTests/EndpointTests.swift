import AsyncHTTPClient
import BPE
import Foundation
import NIOHTTP1
import Server
import Transformer
import XCTest

/// Every endpoint through a real HTTP client against a server on loopback, serving a tiny
/// random model.
final class EndpointTests: XCTestCase {
    var endTokenBias: [String: Int] { TinyModel.plainTextBias }

    func testHealthModelsAndMetrics() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let health = try await harness.send(.GET, "/health")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.json["status"] as? String, "ok")
        let models = try await harness.send(.GET, "/v1/models")
        XCTAssertEqual(models.status, 200)
        XCTAssertEqual(models.json["object"] as? String, "list")
        XCTAssertEqual((models.json["data"] as? [[String: Any]])?.first?["id"] as? String, "tiny")

        let completion = try await harness.post("/v1/completions", ["prompt": "the quick", "max_tokens": 5, "seed": 1,
                                                                    "logit_bias": endTokenBias])
        XCTAssertEqual(completion.status, 200)
        _ = try await harness.post("/v1/completions", ["prompt": "x", "max_tokens": "five"])
        let metrics = try await harness.send(.GET, "/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
        let text = metrics.text
        XCTAssertTrue(text.contains(#"swiftgpt_requests_total{status="200"} 3"#), text)
        XCTAssertTrue(text.contains(#"swiftgpt_requests_total{status="400"} 1"#), text)
        XCTAssertTrue(text.contains("swiftgpt_generated_tokens_total 5"), text)
        let promptTokens = TinyModel.shared.tokenizer.encode("the quick").count
        XCTAssertTrue(text.contains("swiftgpt_prompt_tokens_total \(promptTokens)"), text)
        for name in ["swiftgpt_queue_depth", "swiftgpt_active_sequences", "swiftgpt_batch_size", "swiftgpt_kv_blocks_in_use",
                     "swiftgpt_time_to_first_token_seconds_bucket", "swiftgpt_request_latency_seconds_count"] {
            XCTAssertTrue(text.contains(name), "\(name) missing from:\n\(text)")
        }
        XCTAssertTrue(text.contains("swiftgpt_request_latency_seconds_count 1"), text)
    }

    func testTokenizeAndDetokenize() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let tokenizer = TinyModel.shared.tokenizer
        let tokenized = try await harness.post("/tokenize", ["prompt": "the lazy dog<|im_end|>"])
        XCTAssertEqual(tokenized.status, 200)
        let ids = try XCTUnwrap(tokenized.json["tokens"] as? [Int])
        XCTAssertEqual(ids, tokenizer.encode("the lazy dog<|im_end|>", allowedSpecial: .all))
        XCTAssertEqual(ids.last, tokenizer.specialTokens["<|im_end|>"])
        XCTAssertEqual(tokenized.json["count"] as? Int, ids.count)
        XCTAssertEqual(tokenized.json["max_model_len"] as? Int, 256)
        let detokenized = try await harness.post("/detokenize", ["tokens": ids])
        XCTAssertEqual(detokenized.json["prompt"] as? String, "the lazy dog<|im_end|>")

        // Chat content is never parsed for special tokens: the user's "<|im_end|>" stays text.
        let chat = try await harness.post("/tokenize", ["messages": [["role": "user", "content": "hi <|im_end|>"]]])
        let chatIDs = try XCTUnwrap(chat.json["tokens"] as? [Int])
        let expected = try TinyModel.template.tokens([.init(role: "user", content: "hi <|im_end|>")], tokenizer: tokenizer)
        XCTAssertEqual(chatIDs, expected)
        XCTAssertEqual(chatIDs.filter { $0 == tokenizer.specialTokens["<|im_end|>"] }.count, 1, "only the template's own marker")

        let bad = try await harness.post("/detokenize", ["tokens": [1, 99999]])
        XCTAssertEqual(bad.status, 400)
        XCTAssertEqual(bad.errorParam, "tokens")
    }

    func testCompletionsInEveryPromptShape() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let tokenizer = TinyModel.shared.tokenizer
        let ids = tokenizer.encode("the quick brown")
        let base: [String: Any] = ["model": "tiny", "max_tokens": 6, "temperature": 0.8, "seed": 3, "logit_bias": endTokenBias]
        var byText = base, byIDs = base, byTexts = base, byIDLists = base
        byText["prompt"] = "the quick brown"
        byIDs["prompt"] = ids
        byTexts["prompt"] = ["the quick brown", "a tiny"]
        byIDLists["prompt"] = [ids, tokenizer.encode("a tiny")]
        let one = try await harness.post("/v1/completions", byText)
        XCTAssertEqual(one.status, 200, one.text)
        XCTAssertEqual(one.json["object"] as? String, "text_completion")
        XCTAssertTrue((one.json["id"] as? String)?.hasPrefix("cmpl-") == true)
        let choices = try XCTUnwrap(one.json["choices"] as? [[String: Any]])
        XCTAssertEqual(choices.count, 1)
        XCTAssertEqual(choices[0]["finish_reason"] as? String, "length")
        XCTAssertTrue(choices[0]["logprobs"] is NSNull, "logprobs is an explicit null")
        let usage = try XCTUnwrap(one.json["usage"] as? [String: Int])
        XCTAssertEqual(usage, ["prompt_tokens": ids.count, "completion_tokens": 6, "total_tokens": ids.count + 6])

        let sameByIDs = try await harness.post("/v1/completions", byIDs)
        XCTAssertEqual((sameByIDs.json["choices"] as? [[String: Any]])?[0]["text"] as? String, choices[0]["text"] as? String)

        for request in [byTexts, byIDLists] {
            let two = try await harness.post("/v1/completions", request)
            XCTAssertEqual(two.status, 200, two.text)
            let pair = try XCTUnwrap(two.json["choices"] as? [[String: Any]])
            XCTAssertEqual(pair.map { $0["index"] as? Int }, [0, 1])
            XCTAssertEqual(pair[0]["text"] as? String, choices[0]["text"] as? String, "the first prompt as alone")
        }

        // n: each choice its own seed (seed, seed+1), so the second differs from the first.
        var many = byText
        many["n"] = 3
        let three = try await harness.post("/v1/completions", many)
        let texts = try XCTUnwrap(three.json["choices"] as? [[String: Any]]).map { $0["text"] as? String }
        XCTAssertEqual(texts.count, 3)
        XCTAssertEqual(texts[0], choices[0]["text"] as? String)
        XCTAssertGreaterThan(Set(texts).count, 1)
        XCTAssertEqual((three.json["usage"] as? [String: Int])?["completion_tokens"], 18)
    }

    func testLogprobsEchoStopAndPenalties() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let scored = try await harness.post("/v1/completions", ["prompt": "the quick", "max_tokens": 4, "temperature": 0,
                                                                "logprobs": 2, "logit_bias": endTokenBias])
        XCTAssertEqual(scored.status, 200, scored.text)
        let choice = try XCTUnwrap((scored.json["choices"] as? [[String: Any]])?.first)
        let logprobs = try XCTUnwrap(choice["logprobs"] as? [String: Any])
        let values = try XCTUnwrap(logprobs["token_logprobs"] as? [Double])
        let tops = try XCTUnwrap(logprobs["top_logprobs"] as? [[String: Double]])
        XCTAssertEqual(values.count, 4)
        XCTAssertEqual((logprobs["tokens"] as? [String])?.count, 4)
        for (value, top) in zip(values, tops) {
            XCTAssertLessThanOrEqual(value, 0)
            XCTAssertEqual(top.count, 2)
            // Greedy: the chosen token is the most likely, so its log-probability tops the list.
            XCTAssertEqual(top.values.max()!, value, accuracy: 1e-5)
        }
        XCTAssertEqual((logprobs["tokens"] as? [String])?.joined(), choice["text"] as? String)

        let echoed = try await harness.post("/v1/completions", ["prompt": "the quick", "max_tokens": 3, "temperature": 0,
                                                                "echo": true, "logit_bias": endTokenBias])
        let echoedText = try XCTUnwrap((echoed.json["choices"] as? [[String: Any]])?.first?["text"] as? String)
        let continuation = try await greedyText("the quick", 3, harness)
        XCTAssertEqual(echoedText, "the quick" + continuation)

        // echo with logprobs scores the prompt under the model's own distribution: the first
        // token has none, each other one log p(token | the tokens before it), as the model says.
        let tokenizer = TinyModel.shared.tokenizer, model = TinyModel.shared.model
        let prompt = tokenizer.encode("the quick brown")
        let scoring = try await harness.post("/v1/completions", ["prompt": prompt, "max_tokens": 0, "echo": true, "logprobs": 1])
        XCTAssertEqual(scoring.status, 200, scoring.text)
        let scoredPrompt = try XCTUnwrap(((scoring.json["choices"] as? [[String: Any]])?.first?["logprobs"]) as? [String: Any])
        let promptValues = try XCTUnwrap(scoredPrompt["token_logprobs"] as? [Any])
        XCTAssertEqual(promptValues.count, prompt.count)
        XCTAssertTrue(promptValues[0] is NSNull)
        for i in 1..<prompt.count {
            let logits = try model.forward(Array(prompt[..<i]), cache: try KVCache(model, capacity: 16))
            let largest = logits.max()!
            let expected = logits[prompt[i]] - largest - log(logits.reduce(0) { $0 + exp($1 - largest) })
            XCTAssertEqual(promptValues[i] as? Double ?? 1, Double(expected), accuracy: 1e-4, "prompt token \(i)")
        }
        XCTAssertEqual((scoredPrompt["tokens"] as? [String])?.joined(), "the quick brown")
        XCTAssertEqual((scoring.json["choices"] as? [[String: Any]])?.first?["text"] as? String, "the quick brown")
        var streamedScoring: [String: Any] = ["prompt": prompt, "max_tokens": 2, "echo": true, "logprobs": 1, "temperature": 0,
                                              "stream": true, "logit_bias": endTokenBias]
        let scoredEvents = try await harness.events("/v1/completions", streamedScoring)
        let firstChunk = ServerHarness.object(scoredEvents.payloads[0])
        let firstLogprobs = ((firstChunk["choices"] as? [[String: Any]])?.first?["logprobs"]) as? [String: Any]
        XCTAssertEqual((firstLogprobs?["token_logprobs"] as? [Any])?.count, prompt.count, "the echoed prompt comes first, scored")
        streamedScoring["stream"] = false
        let wholeScoring = try await harness.post("/v1/completions", streamedScoring)
        XCTAssertEqual(ServerHarness.streamedText(scoredEvents.payloads),
                       (wholeScoring.json["choices"] as? [[String: Any]])?.first?["text"] as? String)
        // text_offset counts from the start of the choice's text (the echoed prompt's included)
        // across the chunks, as in the whole reply.
        func offsets(_ object: [String: Any]) -> [Int] {
            (((object["choices"] as? [[String: Any]])?.first?["logprobs"]) as? [String: Any])?["text_offset"] as? [Int] ?? []
        }
        let streamedOffsets = scoredEvents.payloads.flatMap { offsets(ServerHarness.object($0)) }
        XCTAssertEqual(streamedOffsets.count, prompt.count + 2)
        XCTAssertEqual(streamedOffsets, offsets(wholeScoring.json))

        // A stop sequence cuts the text where it first appears, and is not returned.
        let free = try await greedyText("the quick", 12, harness)
        let middle = free.index(free.startIndex, offsetBy: free.count / 2)
        let stop = String(free[middle...].prefix(2))
        let stopped = try await harness.post("/v1/completions", ["prompt": "the quick", "max_tokens": 12, "temperature": 0,
                                                                 "stop": stop, "logit_bias": endTokenBias])
        let stoppedChoice = try XCTUnwrap((stopped.json["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual(stoppedChoice["text"] as? String, String(free[..<free.range(of: stop)!.lowerBound]))
        XCTAssertEqual(stoppedChoice["finish_reason"] as? String, "stop")

        // A large frequency penalty never repeats a token; greedy decoding of a random model does.
        let repeated = tokenizer.encode(try await greedyText("the", 40, harness))
        XCTAssertLessThan(Set(repeated).count, repeated.count, "greedy repeats itself")
        let penalised = try await harness.post("/v1/completions", ["prompt": "the", "max_tokens": 20, "temperature": 0,
                                                                   "frequency_penalty": 2, "presence_penalty": 2,
                                                                   "logprobs": 0, "logit_bias": endTokenBias])
        let penalisedTokens = try XCTUnwrap(((penalised.json["choices"] as? [[String: Any]])?.first?["logprobs"]
            as? [String: Any])?["tokens"] as? [String])
        XCTAssertEqual(penalisedTokens.count, 20)
        XCTAssertEqual(Set(penalisedTokens).count, 20, "no token twice: \(penalisedTokens)")
        // logit_bias +100 forces a token.
        let forced = tokenizer.encode(" fox")[0]
        let biased = try await harness.post("/v1/completions", ["prompt": "the", "max_tokens": 3, "temperature": 1, "seed": 5,
                                                                "logit_bias": [String(forced): 100]])
        XCTAssertEqual((biased.json["choices"] as? [[String: Any]])?.first?["text"] as? String,
                       String(repeating: try tokenizer.decode([forced]), count: 3))
    }

    func greedyText(_ prompt: String, _ count: Int, _ harness: ServerHarness) async throws -> String {
        let reply = try await harness.post("/v1/completions", ["prompt": prompt, "max_tokens": count, "temperature": 0,
                                                               "logit_bias": endTokenBias])
        return try XCTUnwrap((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String)
    }

    func testChatCompletions() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let messages: [[String: Any]] = [["role": "system", "content": "be brief"],
                                         ["role": "user", "content": [["type": "text", "text": "the quick"]]]]
        let reply = try await harness.post("/v1/chat/completions", ["model": "tiny", "messages": messages, "max_completion_tokens": 5,
                                                                    "seed": 2, "logprobs": true, "top_logprobs": 3,
                                                                    "logit_bias": endTokenBias])
        XCTAssertEqual(reply.status, 200, reply.text)
        XCTAssertEqual(reply.json["object"] as? String, "chat.completion")
        let choice = try XCTUnwrap((reply.json["choices"] as? [[String: Any]])?.first)
        let message = try XCTUnwrap(choice["message"] as? [String: Any])
        XCTAssertEqual(message["role"] as? String, "assistant")
        XCTAssertEqual(choice["finish_reason"] as? String, "length")
        let content = try XCTUnwrap((choice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        XCTAssertEqual(content.count, 5)
        XCTAssertEqual((content[0]["top_logprobs"] as? [[String: Any]])?.count, 3)
        XCTAssertEqual(content.compactMap { $0["token"] as? String }.joined(), message["content"] as? String)
        let prompt = try TinyModel.template.tokens([.init(role: "system", content: "be brief"), .init(role: "user", content: "the quick")],
                                                   tokenizer: TinyModel.shared.tokenizer)
        XCTAssertEqual((reply.json["usage"] as? [String: Int])?["prompt_tokens"], prompt.count)

        // The same prompt through /v1/completions as token ids gives the same text.
        let raw = try await harness.post("/v1/completions", ["prompt": prompt, "max_tokens": 5, "seed": 2, "logit_bias": endTokenBias])
        XCTAssertEqual((raw.json["choices"] as? [[String: Any]])?.first?["text"] as? String, message["content"] as? String)

        // Without a limit a chat may run to the end of the context.
        let long = try await harness.post("/v1/chat/completions", ["messages": [["role": "user", "content": "hi"]], "temperature": 0,
                                                                   "logit_bias": endTokenBias])
        XCTAssertEqual((long.json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "length")
        let usage = try XCTUnwrap(long.json["usage"] as? [String: Int])
        XCTAssertEqual(usage["total_tokens"], 256)
    }

    func testStreamingMatchesTheWholeReply() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.stop() } }
        let request: [String: Any] = ["prompt": "the lazy", "max_tokens": 8, "seed": 4, "n": 2, "logit_bias": endTokenBias]
        let whole = try await harness.post("/v1/completions", request)
        let wholeTexts = try XCTUnwrap(whole.json["choices"] as? [[String: Any]]).map { $0["text"] as! String }
        var streamed = request
        streamed["stream"] = true
        streamed["stream_options"] = ["include_usage": true]
        let (status, contentType, payloads) = try await harness.events("/v1/completions", streamed)
        XCTAssertEqual(status, 200)
        XCTAssertEqual(contentType, "text/event-stream")
        XCTAssertEqual(payloads.last, "[DONE]")
        let chunks = payloads.dropLast().map(ServerHarness.object)
        var texts = ["", ""], finishes: [Int: String] = [:]
        for chunk in chunks.dropLast() {
            XCTAssertEqual(chunk["object"] as? String, "text_completion")
            let choice = try XCTUnwrap((chunk["choices"] as? [[String: Any]])?.first)
            let index = try XCTUnwrap(choice["index"] as? Int)
            texts[index] += choice["text"] as? String ?? ""
            if let finish = choice["finish_reason"] as? String { finishes[index] = finish }
        }
        XCTAssertEqual(texts, wholeTexts)
        XCTAssertEqual(finishes, [0: "length", 1: "length"])
        let usage = try XCTUnwrap(chunks.last?["usage"] as? [String: Int])
        XCTAssertEqual(usage["completion_tokens"], 16)
        XCTAssertEqual((chunks.last?["choices"] as? [Any])?.count, 0)

        // Chat: a first chunk with the role, content deltas, a last one with the finish reason.
        let chat: [String: Any] = ["messages": [["role": "user", "content": "hello"]], "max_tokens": 6, "seed": 9,
                                   "logit_bias": endTokenBias]
        let chatWhole = try await harness.post("/v1/chat/completions", chat)
        let expected = try XCTUnwrap(((chatWhole.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String)
        var chatStreamed = chat
        chatStreamed["stream"] = true
        let chatEvents = try await harness.events("/v1/chat/completions", chatStreamed)
        XCTAssertEqual(chatEvents.payloads.last, "[DONE]")
        let deltas = chatEvents.payloads.dropLast().map(ServerHarness.object).map {
            (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]) ?? [:]
        }
        XCTAssertEqual(deltas.first?["role"] as? String, "assistant")
        XCTAssertEqual(deltas.compactMap { $0["content"] as? String }.joined(), expected)
        let last = ServerHarness.object(chatEvents.payloads.dropLast().last!)
        XCTAssertEqual((last["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "length")
        XCTAssertNil(last["usage"], "no usage without stream_options.include_usage")
    }
}
