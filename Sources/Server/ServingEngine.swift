import BPE
import Foundation
import Generation
import Transformer

/// The model loop of a server: one dedicated thread owns a `BatchScheduler` and runs its steps;
/// requests from any thread or task join it between steps and get their tokens back as an
/// `AsyncStream`. Dropping the stream (a client that went away) cancels the sequence at the
/// next step, which returns its KV blocks to the pool.
///
///     let engine = try ServingEngine(model: model, tokenizer: tokenizer, limits: .init(maxBatch: 16, maxQueue: 64))
///     for await event in try engine.submit(prompt: ids, options: options) {
///         if case .token(let token) = event { print(token.text, terminator: "") }
///     }
///
/// The forward pass blocks on the model's `ThreadPool`, so the loop is an ordinary thread rather
/// than a task of Swift concurrency's cooperative pool, whose few threads the HTTP layer needs.
public final class ServingEngine: @unchecked Sendable {
    public struct Limits: Sendable {
        /// The most sequences in one step.
        public var maxBatch: Int
        /// The most sequences waiting to join the batch; more are refused (429).
        public var maxQueue: Int
        /// Prompt tokens one step prefills at most (all joining sequences together).
        public var chunkTokens: Int
        /// Positions one sequence may reach (prompt and generated); at most the model's context.
        public var contextLength: Int?
        /// The KV cache's budget; default: room for `maxBatch` sequences of `contextLength`.
        public var kvBudgetBytes: Int?
        /// A request that reaches an idle engine may be the first of a burst (clients that start
        /// together, or that all finished in the last step): the engine waits while requests
        /// keep arriving, each within `burstGap` of the one before, for at most `burstWindow`, so
        /// that their prompts prefill in one step, not the first alone and the rest a step
        /// (a whole prefill) later. A lone request waits `burstGap`.
        public var burstGap: Duration
        public var burstWindow: Duration

        public init(maxBatch: Int = 16, maxQueue: Int = 64, chunkTokens: Int = 256, contextLength: Int? = nil,
                    kvBudgetBytes: Int? = nil, burstGap: Duration = .milliseconds(2), burstWindow: Duration = .milliseconds(10)) {
            self.maxBatch = maxBatch
            self.maxQueue = maxQueue
            self.chunkTokens = chunkTokens
            self.contextLength = contextLength
            self.kvBudgetBytes = kvBudgetBytes
            self.burstGap = burstGap
            self.burstWindow = burstWindow
        }
    }

    /// What a sequence's stream carries: its tokens as they come, then how it ended.
    public enum Event: Sendable {
        case token(GenerationEvent)
        case finished(GenerationResult)
        /// The engine could not run the sequence (a failed step); the message says why.
        case failed(String)
    }

    /// Counts a caller may read at any time (the metrics and `/health` use them).
    public struct Snapshot: Sendable, Equatable {
        public var waiting = 0
        public var active = 0
        public var lastBatchSize = 0
        public var kvBlocksInUse = 0
        public var kvBlockCount = 0
        /// Batched steps run so far.
        public var steps = 0
    }

    public let model: LanguageModel
    public let tokenizer: Tokenizer
    public let limits: Limits
    /// Positions one sequence may reach.
    public let contextLength: Int
    /// Positions the KV budget holds (all sequences together).
    public let kvCapacity: Int
    private let metrics: ServerMetrics?

    /// The sequences of one request (n completions of one prompt), joining together.
    private struct Submission {
        let tickets: [Int]
        let prompt: [Int]
        let options: [GenerationOptions]
        let continuations: [AsyncStream<Event>.Continuation]
        let submitted: ContinuousClock.Instant
    }

    /// A sequence the loop runs: its stream and when its request arrived.
    private struct Running {
        let ticket: Int
        let continuation: AsyncStream<Event>.Continuation
        let submitted: ContinuousClock.Instant
        var firstToken: ContinuousClock.Instant?
    }

    // Shared between the loop and the callers, under `condition`.
    private let condition = NSCondition()
    private var incoming: [Submission] = []
    private var cancellations: [Int] = []
    private var outstanding = 0
    private var nextTicket = 0
    private var lastArrival = ContinuousClock.now  // the latest submission, for `gatherBurst`
    private var stopping = false
    private var snapshotValue = Snapshot()

    // The loop thread's own.
    private let scheduler: BatchScheduler
    private var running: [Int: Running] = [:]   // by scheduler id
    private var schedulerIDs: [Int: Int] = [:]  // ticket -> scheduler id
    private var steps = 0

    public init(model: LanguageModel, tokenizer: Tokenizer, limits: Limits = Limits(), metrics: ServerMetrics? = nil) throws {
        guard limits.maxBatch > 0 else { throw ModelError("the batch must hold at least one sequence, got \(limits.maxBatch)") }
        guard limits.maxQueue >= 0 else { throw ModelError("the queue length must be >= 0, got \(limits.maxQueue)") }
        guard limits.chunkTokens > 0 else { throw ModelError("the prompt chunk must be positive, got \(limits.chunkTokens)") }
        let context = min(limits.contextLength ?? model.config.contextLength, model.config.contextLength)
        guard context > 1 else { throw ModelError("the context must hold at least 2 positions, got \(context)") }
        self.model = model
        self.tokenizer = tokenizer
        self.limits = limits
        self.metrics = metrics
        contextLength = context
        let budget: KVBlockPool.Budget = limits.kvBudgetBytes.map { .bytes($0) } ?? .tokens(limits.maxBatch * context)
        scheduler = try BatchScheduler(model: model, tokenizer: tokenizer, budget: budget,
                                       maxSequences: limits.maxBatch, chunkTokens: limits.chunkTokens)
        kvCapacity = scheduler.pool.blockCount * scheduler.pool.blockSize
        snapshotValue.kvBlockCount = scheduler.pool.blockCount
        // The thread holds the engine until `beginDraining()` and the last sequence end it.
        let thread = Thread { self.loop() }
        thread.name = "swiftgpt-model-loop"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// The counts as of the last step.
    public var snapshot: Snapshot { condition.withLock { snapshotValue } }

    /// Sequences submitted and not yet finished.
    public var outstandingCount: Int { condition.withLock { outstanding } }

    /// Why a submission is refused before it reaches the loop.
    public enum Refusal: Error, Sendable, Equatable {
        /// The batch and the queue are full.
        case full
        /// The engine is shutting down.
        case stopping
        /// The sequence could never run (it needs more positions than the context or the KV budget).
        case tooLong(String)
    }

    /// Queues `count` sequences of one request (all or none), each with its options. Throws a
    /// `Refusal` when the batch and queue cannot take them all.
    public func submit(prompt: [Int], options: [GenerationOptions]) throws(Refusal) -> [AsyncStream<Event>] {
        for option in options {
            let positions = prompt.count + option.maxTokens
            if prompt.count >= contextLength || positions > contextLength {
                throw .tooLong("This model's maximum context length is \(contextLength) tokens; the request needs \(positions)")
            }
            if positions > kvCapacity {
                throw .tooLong("The server's KV cache holds \(kvCapacity) positions; the request needs \(positions)")
            }
        }
        var streams: [AsyncStream<Event>] = [], continuations: [AsyncStream<Event>.Continuation] = [], tickets: [Int] = []
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw .stopping }
        guard outstanding + options.count <= limits.maxBatch + limits.maxQueue else { throw .full }
        outstanding += options.count
        for _ in options {
            let ticket = nextTicket
            nextTicket += 1
            let (stream, continuation) = AsyncStream<Event>.makeStream()
            continuation.onTermination = { [weak self] reason in
                if case .cancelled = reason { self?.cancel(ticket) }
            }
            tickets.append(ticket)
            streams.append(stream)
            continuations.append(continuation)
        }
        lastArrival = .now
        incoming.append(Submission(tickets: tickets, prompt: prompt, options: options, continuations: continuations,
                                   submitted: .now))
        condition.signal()
        return streams
    }

    /// One sequence (see `submit(prompt:options:)`).
    public func submit(prompt: [Int], options: GenerationOptions) throws(Refusal) -> AsyncStream<Event> {
        try submit(prompt: prompt, options: [options])[0]
    }

    private func cancel(_ ticket: Int) {
        condition.withLock {
            cancellations.append(ticket)
            condition.signal()
        }
    }

    /// Refuses new sequences from now on (draining); those in flight run to their end, and then
    /// the loop thread ends.
    public func beginDraining() {
        condition.withLock {
            stopping = true
            condition.signal()
        }
    }

    public var isDraining: Bool { condition.withLock { stopping } }

    /// Waits until every sequence submitted has finished (after `beginDraining`, the loop then ends).
    public func waitUntilIdle(timeout: Duration? = nil) async -> Bool {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while outstandingCount > 0 {
            if let deadline, ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    // MARK: The loop thread

    private func loop() {
        while true {
            condition.lock()
            while incoming.isEmpty && cancellations.isEmpty && running.isEmpty && !(stopping && outstanding == 0) {
                condition.wait()
            }
            if stopping && outstanding == 0 && running.isEmpty && incoming.isEmpty {
                condition.unlock()
                return
            }
            if running.isEmpty && !incoming.isEmpty { gatherBurst() }
            let joining = incoming, cancelled = cancellations
            incoming.removeAll()
            cancellations.removeAll()
            condition.unlock()

            for submission in joining { admit(submission) }
            for ticket in cancelled {
                if let id = schedulerIDs[ticket] { scheduler.cancel(id) }
            }
            guard !running.isEmpty else { continue }
            do {
                let finished = try scheduler.step()
                steps += 1
                // Published before the sequences that ended hear of it, so that what their callers
                // read next includes this step.
                publishCounts()
                for done in finished { finish(id: done.id, with: .finished(done.result)) }
            } catch {
                // A failed step leaves the batch in an unknown state: every sequence in it ends.
                let message = "the model step failed: \(error)"
                for id in Array(running.keys) {
                    scheduler.cancel(id)
                    finish(id: id, with: .failed(message))
                }
                _ = try? scheduler.step()
                publishCounts()
            }
        }
    }

    /// Requests reached an idle engine: waits while more keep arriving (`Limits.burstGap`,
    /// `Limits.burstWindow`). Called with `condition` held.
    private func gatherBurst() {
        let deadline = ContinuousClock.now + limits.burstWindow
        while !stopping && cancellations.isEmpty {
            let until = min(lastArrival + limits.burstGap, deadline), now = ContinuousClock.now
            guard now < until else { return }
            let (seconds, attoseconds) = (until - now).components
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(seconds) + Double(attoseconds) / 1e18))
        }
    }

    private func admit(_ submission: Submission) {
        do {
            let choices = zip(submission.options, submission.tickets).map { options, ticket in
                (options: options, onEvent: { [unowned self] (event: GenerationEvent) in deliver(event, ticket: ticket) })
            }
            let ids = try scheduler.submit(prompt: submission.prompt, choices: choices)
            for (id, (ticket, continuation)) in zip(ids, zip(submission.tickets, submission.continuations)) {
                running[id] = Running(ticket: ticket, continuation: continuation, submitted: submission.submitted)
                schedulerIDs[ticket] = id
            }
            metrics?.promptTokens.increment(by: Int64(submission.prompt.count))
        } catch {
            for continuation in submission.continuations {
                continuation.yield(.failed("\(error)"))
                continuation.finish()
            }
            condition.withLock { outstanding -= submission.continuations.count }
        }
    }

    /// Passes one token on (on the loop thread, inside the step).
    private func deliver(_ event: GenerationEvent, ticket: Int) -> Bool {
        guard let id = schedulerIDs[ticket], var sequence = running[id] else { return false }
        if sequence.firstToken == nil {
            let now = ContinuousClock.now
            sequence.firstToken = now
            running[id] = sequence
            metrics?.timeToFirstToken.recordNanoseconds(Self.nanoseconds(now - sequence.submitted))
        }
        metrics?.generatedTokens.increment()
        sequence.continuation.yield(.token(event))
        return true
    }

    private func finish(id: Int, with event: Event) {
        guard let sequence = running.removeValue(forKey: id) else { return }
        schedulerIDs[sequence.ticket] = nil
        // Counted before the caller hears of the end, so that what it reads next includes it.
        metrics?.latency.recordNanoseconds(Self.nanoseconds(.now - sequence.submitted))
        condition.withLock { outstanding -= 1 }
        sequence.continuation.yield(event)
        sequence.continuation.finish()
    }

    private func publishCounts() {
        let counts = Snapshot(waiting: scheduler.waitingCount, active: scheduler.activeCount,
                              lastBatchSize: scheduler.lastStepSize,
                              kvBlocksInUse: scheduler.pool.blockCount - scheduler.pool.freeBlocks,
                              kvBlockCount: scheduler.pool.blockCount, steps: steps)
        condition.withLock { snapshotValue = counts }
        metrics?.record(counts)
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}
