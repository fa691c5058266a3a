import BPE
import Foundation
import Kernels
import Transformer

/// Continuous batching over one model: requests join between steps, and each step is one
/// batched forward pass holding one token for every decoding sequence plus chunks of the
/// prompts of joining ones (at most `chunkTokens` prompt tokens a step, so a long prompt never
/// stalls the others for more than a chunk). Finished sequences leave at once and their KV
/// blocks return to the pool.
///
///     let scheduler = try BatchScheduler(model: model, tokenizer: tokenizer, budget: .tokens(32_768))
///     let id = try scheduler.submit(prompt: ids, options: options) { event in print(event.text); return true }
///     while !scheduler.isIdle { try scheduler.step() }
///
/// Each sequence samples from its own seeded sampler, so a request gives the same tokens alone
/// or in a batch (up to the last bits of the logits, which the batch's gemms sum in another
/// order than one sequence's matrix-vector products).
public final class BatchScheduler {
    /// Called for every token; return false to cancel the request (its sequence ends at once).
    public typealias EventHandler = (GenerationEvent) -> Bool

    /// A request that ended, with everything it generated.
    public struct Finished {
        public let id: Int
        public let result: GenerationResult
    }

    final class Active {
        let id: Int
        var state: SequenceState
        let cache: KVCache
        var prefilled = 0
        let onEvent: EventHandler
        let submitted = Date()
        var firstToken: Date?

        init(id: Int, state: SequenceState, cache: KVCache, onEvent: @escaping EventHandler) {
            self.id = id
            self.state = state
            self.cache = cache
            self.onEvent = onEvent
        }

        var isDecoding: Bool { prefilled == state.prompt.count }
        /// KV blocks this sequence may come to hold.
        func blocksNeeded(_ blockSize: Int) -> Int { (state.limit + blockSize - 1) / blockSize }
    }

    public let model: LanguageModel
    public let tokenizer: Tokenizer
    public let pool: KVBlockPool
    /// The most sequences in one step.
    public var maxSequences: Int
    /// The most prompt tokens one step prefills (all joining sequences together).
    public var chunkTokens: Int
    public let workspace: InferenceWorkspace
    private var active: [Active] = []
    private var waiting: [Active] = []
    private var cancelled: Set<Int> = []
    private var nextID = 0

    public init(model: LanguageModel, tokenizer: Tokenizer, budget: KVBlockPool.Budget, blockSize: Int = 16,
                maxSequences: Int = 16, chunkTokens: Int = 256) throws {
        self.model = model
        self.tokenizer = tokenizer
        pool = try KVBlockPool(config: model.config, budget: budget, blockSize: blockSize)
        self.maxSequences = maxSequences
        self.chunkTokens = chunkTokens
        workspace = InferenceWorkspace(pool: model.pool)
    }

    public var isIdle: Bool { active.isEmpty && waiting.isEmpty }
    /// Sequences in the batch, and requests waiting to join it.
    public var activeCount: Int { active.count }
    public var waitingCount: Int { waiting.count }
    /// Sequences that ran in the last step (decoding ones and prompt chunks).
    public private(set) var lastStepSize = 0

    /// Queues a request; it joins the batch at the next step with room for it. Throws for a bad
    /// request (empty prompt, bad sampling values, a prompt past the context, or one the KV
    /// budget could never hold).
    @discardableResult
    public func submit(prompt: [Int], options: GenerationOptions, onEvent: @escaping EventHandler = { _ in true }) throws -> Int {
        let state = try SequenceState(prompt: prompt, options: options, tokenizer: tokenizer,
                                      contextLength: model.config.contextLength)
        if let bad = prompt.first(where: { $0 < 0 || $0 >= model.config.vocabularySize }) {
            throw ModelError("token id \(bad) is outside the vocabulary (0..<\(model.config.vocabularySize))")
        }
        let request = Active(id: nextID, state: state, cache: KVCache(pool: pool, capacity: max(state.limit, prompt.count + 1)),
                             onEvent: onEvent)
        guard request.blocksNeeded(pool.blockSize) <= pool.blockCount else {
            throw ModelError("the request needs \(state.limit) positions; the KV budget holds \(pool.blockCount * pool.blockSize)")
        }
        nextID += 1
        waiting.append(request)
        return request.id
    }

    /// Ends a request at the next step (a client that went away); its blocks return then.
    public func cancel(_ id: Int) { cancelled.insert(id) }

    /// One batched step. Returns the requests that ended in it.
    @discardableResult
    public func step() throws -> [Finished] {
        var finished: [Finished] = []
        // Cancellations first: they free room for the waiting.
        for request in active + waiting where cancelled.contains(request.id) {
            request.state.finish(.stop)
            finished.append(done(request))
        }
        active.removeAll { cancelled.contains($0.id) }
        waiting.removeAll { cancelled.contains($0.id) }
        cancelled.removeAll()
        admit()
        lastStepSize = 0
        guard !active.isEmpty else { return finished }

        // Every decoding sequence advances; prompts fill the rest of the chunk budget in order.
        var entries: [BatchEntry] = [], members: [Active] = []
        var budget = chunkTokens
        for request in active {
            if request.isDecoding {
                guard let last = request.state.tokens.last else { continue }
                entries.append(BatchEntry(cache: request.cache, tokens: [last]))
            } else if budget > 0 {
                let prompt = request.state.prompt
                let chunk = min(budget, prompt.count - request.prefilled)
                let end = request.prefilled + chunk
                entries.append(BatchEntry(cache: request.cache, tokens: Array(prompt[request.prefilled..<end]),
                                          logits: end == prompt.count ? .last : .none))
                request.prefilled = end
                budget -= chunk
            } else {
                continue
            }
            members.append(request)
        }
        lastStepSize = entries.count
        guard !entries.isEmpty else { return finished }
        let result = try model.forward(batch: entries, workspace: workspace)
        for (index, request) in members.enumerated() where !result.ranges[index].isEmpty {
            if let event = try request.state.advance(result.logits(entry: index)) {
                if request.firstToken == nil { request.firstToken = Date() }
                if !request.onEvent(event) { request.state.finish(.stop) }
            }
            if request.state.isFinished { finished.append(done(request)) }
        }
        active.removeAll { $0.state.isFinished }
        return finished
    }

    /// Moves waiting requests into the batch while sequences and KV blocks allow: every active
    /// sequence keeps room for all the positions it may reach.
    private func admit() {
        var reserved = active.reduce(0) { $0 + $1.blocksNeeded(pool.blockSize) }
        while let next = waiting.first, active.count < maxSequences,
              reserved + next.blocksNeeded(pool.blockSize) <= pool.blockCount {
            reserved += next.blocksNeeded(pool.blockSize)
            active.append(waiting.removeFirst())
        }
    }

    private func done(_ request: Active) -> Finished {
        request.cache.reset()
        let seconds = request.firstToken.map { Date().timeIntervalSince($0) } ?? 0
        return Finished(id: request.id, result: GenerationResult(
            text: request.state.text, tokens: request.state.tokens, finishReason: request.state.finishReason ?? .stop,
            promptTokens: request.state.prompt.count,
            promptSeconds: request.firstToken.map { $0.timeIntervalSince(request.submitted) } ?? 0, generationSeconds: seconds))
    }
}
