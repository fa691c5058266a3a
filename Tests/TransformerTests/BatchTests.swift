import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// The ragged batched forward and the paged KV caches.
final class BatchTests: XCTestCase {
    func maxDifference(_ a: UnsafeBufferPointer<Float>, _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }

    /// Sequences run together (prefill chunks beside decoding rows, each at its own position)
    /// give the logits each gets alone, for both families.
    func testABatchGivesEachSequenceItsOwnLogits() throws {
        for name in ["gpt-gelu", "llama-untied"] {
            let model = try ParityFixture(name).model
            let prompts: [[Int]] = [[5, 9, 33, 2, 60, 17], [8], [41, 12, 3, 7, 7, 1, 0, 63, 22, 5, 11], [2, 2]]
            // Alone: each prompt, then two more tokens one at a time.
            var alone: [[[Float]]] = []
            for prompt in prompts {
                let cache = try KVCache(model, capacity: 16)
                var steps = [Array(try model.forward(prompt, cache: cache))]
                for token in [3, 4] { steps.append(Array(try model.forward([token], cache: cache))) }
                alone.append(steps)
            }
            // Together: one pool of 4-position blocks; the third prompt in two chunks while the others decode.
            let pool = try KVBlockPool(config: model.config, budget: .tokens(64), blockSize: 4)
            let caches = prompts.map { _ in KVCache(pool: pool, capacity: 16) }
            let workspace = InferenceWorkspace()
            var result = try model.forward(batch: [
                BatchEntry(cache: caches[0], tokens: prompts[0]), BatchEntry(cache: caches[1], tokens: prompts[1]),
                BatchEntry(cache: caches[2], tokens: Array(prompts[2][..<5]), logits: .none),
                BatchEntry(cache: caches[3], tokens: prompts[3]),
            ], workspace: workspace)
            XCTAssertEqual(result.ranges.map(\.count), [1, 1, 0, 1])
            for (entry, sequence) in [(0, 0), (1, 1), (3, 3)] {
                XCTAssertLessThan(maxDifference(result.logits(entry: entry), alone[sequence][0]), 1e-4, "\(name) prompt \(sequence)")
            }
            result = try model.forward(batch: [
                BatchEntry(cache: caches[0], tokens: [3]), BatchEntry(cache: caches[2], tokens: Array(prompts[2][5...])),
                BatchEntry(cache: caches[1], tokens: [3]), BatchEntry(cache: caches[3], tokens: [3]),
            ], workspace: workspace)
            for (entry, sequence, step) in [(0, 0, 1), (1, 2, 0), (2, 1, 1), (3, 3, 1)] {
                XCTAssertLessThan(maxDifference(result.logits(entry: entry), alone[sequence][step]), 1e-4, "\(name) \(sequence) step \(step)")
            }
            XCTAssertEqual(caches.map(\.count), [7, 2, 11, 3])
            XCTAssertThrowsError(try model.forward(batch: [BatchEntry(cache: caches[0], tokens: [1]), BatchEntry(cache: caches[0], tokens: [2])],
                                                   workspace: workspace)) {
                XCTAssertTrue("\($0)".contains("already in the batch"), "\($0)")
            }
        }
    }

    /// An fp16 cache: sequences in one batch (a prompt's second chunk gathering its first from
    /// fp16 blocks, decoding rows reading them, a fork copying a shared block) give what each
    /// gets alone with an fp16 cache; the logits stay within fp16's rounding of the fp32 cache's
    /// and differ from them (the keys really are rounded); half the bytes per block.
    func testHalfPrecisionCache() throws {
        for name in ["gpt-gelu", "llama-untied"] {
            let model = try ParityFixture(name).model
            let prompt = [41, 12, 3, 7, 7, 1, 0, 63, 22, 5, 11], other = [5, 9, 33, 2, 60, 17]
            func alone(_ storage: KVStorage, _ tokens: [Int], then next: [Int]) throws -> [[Float]] {
                model.keyValueStorage = storage
                defer { model.keyValueStorage = .f32 }
                let cache = try KVCache(model, capacity: 16)
                var steps = [Array(try model.forward(tokens, cache: cache))]
                for token in next { steps.append(Array(try model.forward([token], cache: cache))) }
                return steps
            }
            let half = try alone(.f16, prompt, then: [3, 4]), exact = try alone(.f32, prompt, then: [3, 4])
            let halfOther = try alone(.f16, other, then: [8])
            let pool = try KVBlockPool(config: model.config, budget: .tokens(64), blockSize: 4, storage: .f16)
            let a = KVCache(pool: pool, capacity: 16), b = KVCache(pool: pool, capacity: 16)
            let workspace = InferenceWorkspace()
            var result = try model.forward(batch: [BatchEntry(cache: a, tokens: Array(prompt[..<5]), logits: .none),
                                                   BatchEntry(cache: b, tokens: other)], workspace: workspace)
            let forked = b.fork()
            result = try model.forward(batch: [BatchEntry(cache: a, tokens: Array(prompt[5...])), BatchEntry(cache: forked, tokens: [8])],
                                       workspace: workspace)
            XCTAssertLessThan(maxDifference(result.logits(entry: 0), half[0]), 1e-4, "\(name): the chunked prompt")
            XCTAssertLessThan(maxDifference(result.logits(entry: 1), halfOther[1]), 1e-4, "\(name): the fork's first step")
            for (step, token) in [3, 4].enumerated() {
                result = try model.forward(batch: [BatchEntry(cache: a, tokens: [token])], workspace: workspace)
                XCTAssertLessThan(maxDifference(result.logits(entry: 0), half[step + 1]), 1e-4, "\(name): decoding step \(step)")
            }
            let rounding = zip(half.joined(), exact.joined()).map { abs($0 - $1) }.max()!
            XCTAssertGreaterThan(rounding, 0, "\(name): the fp16 cache rounds")
            XCTAssertLessThan(rounding, 2e-2, "\(name): within fp16's rounding")
            let f32 = try KVBlockPool(config: model.config, budget: .bytes(1 << 20), blockSize: 4)
            let f16 = try KVBlockPool(config: model.config, budget: .bytes(1 << 20), blockSize: 4, storage: .f16)
            XCTAssertEqual(f16.blockCount, 2 * f32.blockCount)
            XCTAssertEqual(f16.byteCount, f32.byteCount)
        }
    }

    /// Scoring: the log-probability of each next token equals log softmax of the full logits.
    func testTargetLogProbabilities() throws {
        let model = try ParityFixture("llama-tied").model
        let tokens = [5, 9, 33, 2, 60, 17, 8, 41], targets = [9, 33, 2, 60, 17, 8, 41, 12]
        let workspace = InferenceWorkspace()
        let result = try model.forward(batch: [BatchEntry(cache: try KVCache(model, capacity: 16), tokens: tokens, logits: .all,
                                                          targets: targets)], workspace: workspace)
        let scores = try XCTUnwrap(result.logProbabilities[0])
        for row in 0..<tokens.count {
            let logits = result.logits(entry: 0, row: row).map(Double.init)
            let m = logits.max()!, normalizer = log(logits.reduce(0) { $0 + exp($1 - m) }) + m
            XCTAssertEqual(Double(scores[row]), logits[targets[row]] - normalizer, accuracy: 1e-4, "row \(row)")
        }
    }

    /// Forks share their parent's blocks until they write: each continues as if alone, and a
    /// truncated sequence continues from its shorter prefix.
    func testForkAndTruncate() throws {
        let model = try ParityFixture("llama-untied").model
        let pool = try KVBlockPool(config: model.config, budget: .tokens(64), blockSize: 4)
        let parent = KVCache(pool: pool, capacity: 16)
        _ = try model.forward([5, 9, 33, 2, 60, 17], cache: parent)
        XCTAssertEqual(pool.freeBlocks, 14)
        let child = parent.fork()
        XCTAssertEqual(pool.freeBlocks, 14, "a fork copies nothing")
        let fromChild = Array(try model.forward([8], cache: child))
        XCTAssertEqual(pool.freeBlocks, 13, "the child copied the shared, partly filled block before writing")
        let fromParent = Array(try model.forward([41], cache: parent))
        let alone = try KVCache(model, capacity: 16)
        _ = try model.forward([5, 9, 33, 2, 60, 17], cache: alone)
        let aloneChild = Array(try model.forward([8], cache: alone))
        XCTAssertLessThan(zip(fromChild, aloneChild).map { abs($0 - $1) }.max()!, 1e-5, "the fork continues as if alone")
        alone.truncate(to: 6)
        let aloneParent = Array(try model.forward([41], cache: alone))
        XCTAssertLessThan(zip(fromParent, aloneParent).map { abs($0 - $1) }.max()!, 1e-5, "continuing after a truncation")
        parent.truncate(to: 3)
        XCTAssertEqual(parent.blocks.count, 1)
    }

    /// After 1,000 sequences of random lengths come and go (some forked, some truncated), the
    /// pool holds exactly its free blocks again; a full pool refuses with a reason.
    func testThePoolGetsEveryBlockBack() throws {
        let model = try ParityFixture("gpt-gelu").model
        let pool = try KVBlockPool(config: model.config, budget: .tokens(256), blockSize: 4)
        XCTAssertEqual(pool.freeBlocks, 64)
        var generator = SplitMix64(seed: 9)
        var live: [KVCache] = []
        for _ in 0..<1000 {
            let choice = generator.next() % 4
            if choice == 0, !live.isEmpty {
                live.remove(at: Int(generator.next() % UInt64(live.count)))
            } else if choice == 1, let some = live.randomElement(using: &generator) {
                live.append(some.fork())
            } else if choice == 2, let some = live.randomElement(using: &generator), some.count > 0 {
                some.truncate(to: Int(generator.next() % UInt64(some.count)))
            } else {
                let cache = KVCache(pool: pool, capacity: 16)
                let length = 1 + Int(generator.next() % 15)
                do {
                    _ = try model.forward((0..<length).map { _ in Int(generator.next() % 64) }, cache: cache)
                    live.append(cache)
                } catch {
                    XCTAssertTrue("\(error)".contains("the KV pool is full"), "\(error)")
                    live.removeFirst(min(live.count, 8))
                }
            }
        }
        live.removeAll()
        XCTAssertEqual(pool.freeBlocks, 64)
    }
}
