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
        var cache: KVCache
        var prefilled = 0
        /// More completions of the same prompt, waiting to fork this one's KV blocks once its
        /// prompt is in them.
        var followers: [Active] = []
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
        /// KV blocks this sequence, and the followers that will fork it, may come to hold (shared
        /// prompt blocks counted once for each: a bound, not the count).
        func blocksNeeded(_ blockSize: Int) -> Int { groupSize * ((state.limit + blockSize - 1) / blockSize) }
        var groupSize: Int { 1 + followers.count }
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
        pool = try KVBlockPool(config: model.config, budget: budget, blockSize: blockSize, storage: model.keyValueStorage)
        self.maxSequences = maxSequences
        self.chunkTokens = chunkTokens
        workspace = InferenceWorkspace(pool: model.pool)
    }

    public var isIdle: Bool { active.isEmpty && waiting.isEmpty }
    /// Sequences in the batch, and requests waiting to join it.
    public var activeCount: Int { active.count }
    public var waitingCount: Int { waiting.reduce(0) { $0 + $1.groupSize } + active.reduce(0) { $0 + $1.followers.count } }
    /// Sequences that ran in the last step (decoding ones and prompt chunks).
    public private(set) var lastStepSize = 0

    /// Queues a request; it joins the batch at the next step with room for it. Throws for a bad
    /// request (empty prompt, bad sampling values, a prompt past the context, or one the KV
    /// budget could never hold).
    @discardableResult
    public func submit(prompt: [Int], options: GenerationOptions, onEvent: @escaping EventHandler = { _ in true }) throws -> Int {
        try submit(prompt: prompt, choices: [(options, onEvent)])[0]
    }

    /// Queues several completions of one prompt (OpenAI's `n`), all or none. The first prefills
    /// the prompt; the others then fork its KV blocks, so the prompt's keys and values are
    /// computed and stored once, and each recomputes only the prompt's last position for its
    /// own first token. A group larger than the batch runs as independent requests.
    ///
    ///     prompt of 11 tokens, blocks of 4, n = 3:  [0-3][4-7] shared by all three,
    ///     [8-10] shared until each writes position 11 into its own copy
    @discardableResult
    public func submit(prompt: [Int], choices: [(options: GenerationOptions, onEvent: EventHandler)]) throws -> [Int] {
        if let bad = prompt.first(where: { $0 < 0 || $0 >= model.config.vocabularySize }) {
            throw ModelError("token id \(bad) is outside the vocabulary (0..<\(model.config.vocabularySize))")
        }
        let requests = try choices.enumerated().map { offset, choice in
            let state = try SequenceState(prompt: prompt, options: choice.options, tokenizer: tokenizer,
                                          contextLength: model.config.contextLength)
            let request = Active(id: nextID + offset, state: state,
                                 cache: KVCache(pool: pool, capacity: max(state.limit, prompt.count + 1)), onEvent: choice.onEvent)
            guard request.blocksNeeded(pool.blockSize) <= pool.blockCount else {
                throw ModelError("the request needs \(state.limit) positions; the KV budget holds \(pool.blockCount * pool.blockSize)")
            }
            return request
        }
        guard let leader = requests.first else { return [] }
        nextID += requests.count
        if requests.count <= maxSequences {
            leader.followers = Array(requests.dropFirst())
            waiting.append(leader)
        } else {
            waiting += requests
        }
        return requests.map(\.id)
    }

    /// Ends a request at the next step (a client that went away); its blocks return then.
    public func cancel(_ id: Int) { cancelled.insert(id) }

    /// One batched step. Returns the requests that ended in it.
    @discardableResult
    public func step() throws -> [Finished] {
        var finished: [Finished] = []
        // Cancellations first: they free room for the waiting. Followers not yet forked leave
        // their group; those of a cancelled leader wait on as requests of their own.
        for request in active + waiting {
            for follower in request.followers where cancelled.contains(follower.id) {
                follower.state.finish(.stop)
                finished.append(done(follower))
            }
            request.followers.removeAll { cancelled.contains($0.id) }
        }
        for request in active + waiting where cancelled.contains(request.id) {
            request.state.finish(.stop)
            finished.append(done(request))
            waiting.insert(contentsOf: request.followers, at: 0)
            request.followers = []
        }
        active.removeAll { cancelled.contains($0.id) }
        waiting.removeAll { cancelled.contains($0.id) }
        cancelled.removeAll()
        admit()
        lastStepSize = 0
        guard !active.isEmpty else { return finished }

        // Every decoding sequence advances; prompts fill the rest of the chunk budget in order.
        var entries: [BatchEntry] = [], members: [Active] = []
        var starts: [ObjectIdentifier: Int] = [:]  // where each prompt chunk of this step begins
        var budget = chunkTokens
        for request in active {
            if request.isDecoding {
                guard let last = request.state.tokens.last else { continue }
                entries.append(BatchEntry(cache: request.cache, tokens: [last]))
            } else if budget > 0 {
                let prompt = request.state.prompt
                let chunk = min(budget, prompt.count - request.prefilled)
                let end = request.prefilled + chunk
                let logits: BatchEntry.Logits = request.state.options.promptLogprobs ? .all : end == prompt.count ? .last : .none
                entries.append(BatchEntry(cache: request.cache, tokens: Array(prompt[request.prefilled..<end]), logits: logits))
                starts[ObjectIdentifier(request)] = request.prefilled
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
        for (index, request) in members.enumerated() where request.state.options.promptLogprobs {
            guard let start = starts[ObjectIdentifier(request)] else { continue }
            // Row r scores the prompt token at start + r + 1; a chunk's last row may be the prompt's end.
            for (r, position) in (start..<(start + result.ranges[index].count)).enumerated() where position + 1 < request.state.prompt.count {
                request.state.scorePrompt(result.logits(entry: index, row: r), next: request.state.prompt[position + 1])
            }
        }
        for request in members where request.isDecoding && !request.followers.isEmpty { fork(request) }
        // Each sequence samples its token on the pool's threads (it touches only its own state);
        // the events then go out in order, on this thread.
        let advancing = members.indices.filter { members[$0].isDecoding && !result.ranges[$0].isEmpty }
        var outcomes = [Result<GenerationEvent?, Error>](repeating: .success(nil), count: advancing.count)
        outcomes.withUnsafeMutableBufferPointer { outcomes in
            model.pool.parallelFor(advancing.count) { i in
                let index = advancing[i]
                outcomes[i] = Result { try members[index].state.advance(result.logits(entry: index)) }
            }
        }
        for (i, index) in advancing.enumerated() {
            let request = members[index]
            if let event = try outcomes[i].get() {
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
        var sequences = active.reduce(0) { $0 + $1.groupSize }
        while let next = waiting.first, sequences + next.groupSize <= maxSequences,
              reserved + next.blocksNeeded(pool.blockSize) <= pool.blockCount {
            sequences += next.groupSize
            reserved += next.blocksNeeded(pool.blockSize)
            active.append(waiting.removeFirst())
        }
    }

    /// The leader's prompt is in its cache: each follower takes its blocks but the last
    /// position, which the follower runs itself for the logits of its first token.
    private func fork(_ leader: Active) {
        let shared = leader.state.prompt.count - 1
        for follower in leader.followers {
            follower.state.promptLogprobs = leader.state.promptLogprobs
            follower.cache = leader.cache.fork()
            follower.cache.truncate(to: shared)
            follower.prefilled = shared
            active.append(follower)
        }
        leader.followers = []
    }

    private func done(_ request: Active) -> Finished {
        request.cache.reset()
        let seconds = request.firstToken.map { Date().timeIntervalSince($0) } ?? 0
        return Finished(id: request.id, result: GenerationResult(
            text: request.state.text, tokens: request.state.tokens, finishReason: request.state.finishReason ?? .stop,
            promptTokens: request.state.prompt.count,
            promptSeconds: request.firstToken.map { $0.timeIntervalSince(request.submitted) } ?? 0, generationSeconds: seconds,
            promptLogprobs: request.state.promptLogprobs))
    }
}
