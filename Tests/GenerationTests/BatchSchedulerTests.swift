import BPE
import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Generation
@testable import Transformer

/// Continuous batching: requests that join, prefill in chunks, decode together and leave give
/// the tokens each gets alone with the same seed.
final class BatchSchedulerTests: XCTestCase {
    /// A byte-level tokenizer whose first 64 ids are bytes, for the 64-token fixture models.
    func smallTokenizer() throws -> Tokenizer {
        try BPETrainer(vocabularySize: 300).train(texts: [String(repeating: "a tiny corpus for a tiny tokenizer. ", count: 30)])
    }

    func testBatchedRequestsGiveTheirTokensAlone() throws {
        let model = try ParityFixture("llama-untied").model, tokenizer = try smallTokenizer()
        var generator = SplitMix64(seed: 21)
        let requests: [(prompt: [Int], options: GenerationOptions)] = (0..<7).map { i in
            let prompt = (0..<(1 + i * 2)).map { _ in Int(generator.next() % 64) }
            var options = GenerationOptions(maxTokens: 6 + i * 2,
                                            sampling: SamplingOptions(temperature: i % 3 == 0 ? 0 : 0.9, topP: i % 2 == 0 ? 0.9 : nil,
                                                                      seed: UInt64(i)))
            options.stopAtEndOfSequence = false
            return (prompt, options)
        }
        let alone = try requests.map { try Generator(model: model, tokenizer: tokenizer).generate(prompt: $0.prompt, options: $0.options) }
        // At most 3 sequences at once and 5 prompt tokens a step: requests wait, prompts come in chunks.
        let scheduler = try BatchScheduler(model: model, tokenizer: tokenizer, budget: .tokens(512), blockSize: 4, maxSequences: 3,
                                           chunkTokens: 5)
        var events: [Int: [Int]] = [:]
        let ids = try requests.map { request in
            try scheduler.submit(prompt: request.prompt, options: request.options)
        }
        for id in ids { events[id] = [] }
        var results: [Int: GenerationResult] = [:]
        var steps = 0, largestBatch = 0
        while !scheduler.isIdle {
            largestBatch = max(largestBatch, scheduler.activeCount)
            for finished in try scheduler.step() { results[finished.id] = finished.result }
            steps += 1
        }
        XCTAssertEqual(largestBatch, 3)
        for (i, id) in ids.enumerated() {
            XCTAssertEqual(results[id]?.tokens, alone[i].tokens, "request \(i)")
            XCTAssertEqual(results[id]?.finishReason, .length)
        }
        XCTAssertEqual(scheduler.pool.freeBlocks, scheduler.pool.blockCount, "every block back")
    }

    /// n completions of one prompt: each gives its tokens alone, while the prompt's blocks are
    /// stored once. 12 prompt positions in blocks of 4: the followers fork the first 11 (blocks
    /// 0 and 1 whole, block 2 until each writes position 11 into its own copy), and the leader's
    /// next token opens its block 3: 6 blocks in use where three separate sequences hold 12.
    func testCompletionsOfOnePromptShareItsBlocks() throws {
        let model = try ParityFixture("llama-untied").model, tokenizer = try smallTokenizer()
        let prompt = [5, 9, 2, 33, 17, 8, 1, 40, 12, 3, 7, 21]
        let options: [GenerationOptions] = (0..<3).map { i in
            var options = GenerationOptions(maxTokens: 5, sampling: SamplingOptions(temperature: 0.9, seed: UInt64(i)))
            options.stopAtEndOfSequence = false
            return options
        }
        let alone = try options.map { try Generator(model: model, tokenizer: tokenizer).generate(prompt: prompt, options: $0) }
        let scheduler = try BatchScheduler(model: model, tokenizer: tokenizer, budget: .tokens(256), blockSize: 4)
        let ids = try scheduler.submit(prompt: prompt, choices: options.map { ($0, { _ in true }) })
        XCTAssertEqual(scheduler.waitingCount, 3)
        var results: [Int: GenerationResult] = [:]
        try scheduler.step()  // the leader prefills all 12 positions (3 blocks) and forks
        XCTAssertEqual(scheduler.pool.blockCount - scheduler.pool.freeBlocks, 3)
        XCTAssertEqual(scheduler.activeCount, 3)
        try scheduler.step()  // the followers run position 11, each into a copy of block 2; the leader decodes
        XCTAssertEqual(scheduler.pool.blockCount - scheduler.pool.freeBlocks, 6)
        while !scheduler.isIdle { for f in try scheduler.step() { results[f.id] = f.result } }
        for (i, id) in ids.enumerated() { XCTAssertEqual(results[id]?.tokens, alone[i].tokens, "choice \(i)") }
        XCTAssertEqual(scheduler.pool.freeBlocks, scheduler.pool.blockCount)

        // A leader cancelled before its prompt is in: its followers run on their own.
        let again = try scheduler.submit(prompt: prompt, choices: options.map { ($0, { _ in true }) })
        scheduler.cancel(again[0])
        results = [:]
        while !scheduler.isIdle { for f in try scheduler.step() { results[f.id] = f.result } }
        XCTAssertEqual(results[again[0]]?.tokens, [])
        XCTAssertEqual(results[again[1]]?.tokens, alone[1].tokens)
        XCTAssertEqual(results[again[2]]?.tokens, alone[2].tokens)
        XCTAssertEqual(scheduler.pool.freeBlocks, scheduler.pool.blockCount)
    }

    func testCancellingFreesTheSequence() throws {
        let model = try ParityFixture("gpt-gelu").model, tokenizer = try smallTokenizer()
        let scheduler = try BatchScheduler(model: model, tokenizer: tokenizer, budget: .tokens(256), blockSize: 4)
        var options = GenerationOptions(maxTokens: 12, sampling: SamplingOptions(temperature: 0))
        options.stopAtEndOfSequence = false
        var seen = 0
        let stopped = try scheduler.submit(prompt: [1, 2, 3], options: options) { _ in seen += 1; return seen < 3 }
        let other = try scheduler.submit(prompt: [4, 5], options: options)
        var results: [Int: GenerationResult] = [:]
        try scheduler.step()
        XCTAssertLessThan(scheduler.pool.freeBlocks, scheduler.pool.blockCount)
        while !scheduler.isIdle { for f in try scheduler.step() { results[f.id] = f.result } }
        XCTAssertEqual(results[stopped]?.tokens.count, 3)
        XCTAssertEqual(results[stopped]?.finishReason, .stop)
        XCTAssertEqual(results[other]?.tokens.count, 12)
        XCTAssertEqual(scheduler.pool.freeBlocks, scheduler.pool.blockCount)
        XCTAssertThrowsError(try scheduler.submit(prompt: [], options: options)) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
        XCTAssertThrowsError(try scheduler.submit(prompt: [99], options: options)) { XCTAssertTrue("\($0)".contains("token id 99"), "\($0)") }
    }

    /// SmolLM2, greedy: four chat requests batched give the tokens each gets alone, wherever the
    /// alone run's top-1 margin exceeds 0.05 (below it, the batch's other summation order may
    /// legitimately pick the runner-up; the comparison stops there).
    func testSmolLM2BatchedGreedyMatchesAlone() throws {
        let loaded = try ModelLoader.load(path: try smolLM2Path())
        let template = try XCTUnwrap(loaded.chatTemplate)
        let questions = ["What is the capital of France?", "Name three colors.", "What is 2 + 2?", "Say hello in Spanish."]
        var options = GenerationOptions(maxTokens: 16, sampling: SamplingOptions(temperature: 0))
        options.logprobAlternatives = 2
        let prompts = try questions.map { try template.tokens([.init(role: "user", content: $0)], tokenizer: loaded.tokenizer) }
        let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer)
        var alone: [(tokens: [Int], margins: [Float])] = []
        for prompt in prompts {
            var margins: [Float] = []
            let result = try generator.generate(prompt: prompt, options: options) { event in
                let top = event.token.topAlternatives
                if top.count == 2 { margins.append(top[0].logprob - top[1].logprob) }
                return true
            }
            alone.append((result.tokens, margins))
        }
        let scheduler = try BatchScheduler(model: loaded.model, tokenizer: loaded.tokenizer, budget: .tokens(4096), chunkTokens: 32)
        let ids = try prompts.map { try scheduler.submit(prompt: $0, options: options) }
        var results: [Int: GenerationResult] = [:]
        while !scheduler.isIdle { for f in try scheduler.step() { results[f.id] = f.result } }
        for (i, id) in ids.enumerated() {
            let batched = try XCTUnwrap(results[id]).tokens
            for (step, token) in alone[i].tokens.enumerated() {
                guard step < batched.count, batched[step] == token else {
                    XCTAssertLessThan(alone[i].margins[step], 0.05, "request \(i) differs at step \(step) with a clear margin")
                    break
                }
            }
        }
        XCTAssertTrue(try loaded.tokenizer.decode(XCTUnwrap(results[ids[0]]).tokens).contains("Paris"))
    }
}
