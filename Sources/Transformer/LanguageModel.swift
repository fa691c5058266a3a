import CKernels
import Foundation
import Kernels

/// A decoder-only transformer of either family, GPT-2 (learned positions, LayerNorm, GELU/ReLU
/// MLP, biases) or Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention), that trains and
/// generates over the same weights. The architecture is one composition of the layer functions
/// in `Layers/` (each a forward/backward pair, llm.c style):
///
///     x = embed(tokens) (+ positions)
///     for each block:  x = x + attentionOutput(attention(rope(qkv(norm1(x)))))
///                      x = x + down(activation(up(norm2(x))))
///     logits = output(norm(x))
///
/// fp32 tensors live in one parameter arena (named views in `layout`; gradients at the same
/// offsets in a second arena when the model trains); quantised GGUF matrices are used in place.
/// `weights` views both, and every pass reads only it.
///
///     let model = try LanguageModel(config: .llama(layers: 2, heads: 4, keyValueHeads: 2, embedding: 64,
///                                                  hidden: 128, vocabularySize: 512, contextLength: 64))
///     model.initializeWeights(seed: 1)
///     let loss = try model.forward(tokens: x, targets: y, batch: 4, length: 64)    // training
///     model.zeroGradients(); model.backward()
///     let cache = try KVCache(model, capacity: 64)                                // generation
///     let logits = try model.forward([1, 2, 3], cache: cache)
public final class LanguageModel: @unchecked Sendable {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let parameters: FloatBuffer
    public let gradients: FloatBuffer
    /// Whether gradient buffers exist (a model loaded only to generate has none).
    public let trainable: Bool
    public private(set) var weights: ModelWeights
    /// LoRA adapters on the projections (`attach`): with them, backward trains the adapters only.
    public private(set) var adapters: LoRAAdapters?
    public var pool: ThreadPool
    /// How the KV pools made for this model's generation store keys and values (`KVCache(_:capacity:)`,
    /// `BatchScheduler`, `Generator`); evaluation keeps fp32 whatever this says.
    public var keyValueStorage: KVStorage = .f32
    /// Keeps the memory-mapped file of in-place weights alive.
    let owner: AnyObject?
    let frequencies: [Double]
    private let workspace: Workspace
    private var activations: TrainingActivations?
    private var lastBatch: (tokens: [Int32], targets: [Int32]?, batch: Int, length: Int)?
    private var dropout: Dropout?
    /// The seed of the adapters' dropout masks in the last training forward pass.
    private var adapterSeed: UInt64?

    /// A model whose every tensor is fp32 in its arena, zeroed: initialise or load them next.
    public convenience init(config: ModelConfig, pool: ThreadPool = .shared, trainable: Bool = true) throws {
        try self.init(config: config, layout: ParameterLayout(config: config), external: [:], owner: nil,
                      pool: pool, trainable: trainable)
    }

    /// A model with the tensors of `layout` in its arena and the rest (matrices only) from
    /// `external`, each as row blocks (kept alive by `owner`).
    init(config: ModelConfig, layout: ParameterLayout, external: [String: [WeightMatrix]], owner: AnyObject?,
         pool: ThreadPool, trainable: Bool) throws {
        let problems = config.problems
        guard problems.isEmpty else { throw ModelError("invalid model config: " + problems.joined(separator: "; ")) }
        // Parameters and gradients in fp32 (Adam's moments come on top): refuse what cannot fit.
        let bytes = Double(layout.totalCount) * (trainable ? 8 : 4)
        guard bytes < Double(ProcessInfo.processInfo.physicalMemory) else {
            throw ModelError(String(format: "the model needs %.1f GB for parameters and gradients; this machine has %.1f GB",
                                    bytes / 1e9, Double(ProcessInfo.processInfo.physicalMemory) / 1e9))
        }
        self.config = config
        self.layout = layout
        parameters = .allocate(capacity: max(1, layout.totalCount))
        parameters.initialize(repeating: 0)
        gradients = .allocate(capacity: trainable ? max(1, layout.totalCount) : 0)
        gradients.initialize(repeating: 0)
        self.trainable = trainable
        self.pool = pool
        self.owner = owner
        frequencies = rotaryFrequencies(config)
        workspace = Workspace(pool: pool)
        weights = try Self.views(config: config, layout: layout, parameters: parameters,
                                 gradients: trainable ? gradients : nil, external: external)
    }

    deinit {
        parameters.deallocate()
        gradients.deallocate()
    }

    /// `weights` over the arenas and the external matrices.
    private static func views(config: ModelConfig, layout: ParameterLayout, parameters: FloatBuffer, gradients: FloatBuffer?,
                              external: [String: [WeightMatrix]]) throws -> ModelWeights {
        func vector(_ name: String) -> (FloatBuffer, FloatBuffer?)? {
            guard let e = layout.entry(name) else { return nil }
            return (FloatBuffer(rebasing: parameters[e.range]), gradients.map { FloatBuffer(rebasing: $0[e.range]) })
        }
        func matrix(_ name: String) throws -> ([WeightMatrix], FloatBuffer?) {
            if let e = layout.entry(name) {
                return ([.dense(FloatBuffer(rebasing: parameters[e.range]), rows: e.shape[0], columns: e.shape[1])],
                        gradients.map { FloatBuffer(rebasing: $0[e.range]) })
            }
            guard let blocks = external[name] else { throw ModelError("the model has no tensor \(name)") }
            return (blocks, nil)
        }
        func linear(_ name: String) throws -> Linear {
            let (blocks, gradient) = try matrix(name + ".weight")
            let bias = vector(name + ".bias")
            return Linear(blocks: blocks, bias: bias?.0, weightGradient: gradient, biasGradient: bias?.1)
        }
        func norm(_ name: String) throws -> Norm {
            guard let weight = vector(name + ".weight") else { throw ModelError("the model has no fp32 tensor \(name).weight") }
            let bias = vector(name + ".bias")
            return Norm(weight: weight.0, bias: bias?.0, weightGradient: weight.1, biasGradient: bias?.1)
        }
        let (tokenTable, tokenGradient) = try matrix("token_embd.weight")
        guard tokenTable.count == 1 else { throw ModelError("token_embd.weight must be one matrix") }
        let token = Embedding(table: tokenTable[0], gradient: tokenGradient)
        var position: Embedding?
        if config.positions == .learned {
            guard let (table, gradient) = vector("position_embd.weight") else {
                throw ModelError("the model has no fp32 tensor position_embd.weight")
            }
            position = Embedding(table: .dense(table, rows: config.contextLength, columns: config.embeddingSize), gradient: gradient)
        }
        let blocks = try (0..<config.layerCount).map { l -> BlockWeights in
            let p = "blk.\(l)."
            return BlockWeights(attentionNorm: try norm(p + "attn_norm"), qkv: try linear(p + "attn_qkv"),
                                attentionOutput: try linear(p + "attn_output"), mlpNorm: try norm(p + "ffn_norm"),
                                up: try linear(p + "ffn_up"), down: try linear(p + "ffn_down"))
        }
        let output = config.tiedEmbeddings
            ? Linear(blocks: tokenTable, bias: nil, weightGradient: tokenGradient, biasGradient: nil)
            : try linear("output")
        return ModelWeights(tokenEmbedding: token, positionEmbedding: position, blocks: blocks,
                            outputNorm: try norm("output_norm"), output: output)
    }

    /// Puts `adapters` on the model's projections (replacing any there); the base weights stay as
    /// they are and, with adapters, `backward()` gives gradients to the adapters only (and to
    /// the model's own arena if it has gradients).
    public func attach(_ adapters: LoRAAdapters) throws {
        guard adapters.config.family == config.family, adapters.config.layerCount == config.layerCount,
              adapters.config.embeddingSize == config.embeddingSize, adapters.config.qkvSize == config.qkvSize,
              adapters.config.hiddenSize == config.hiddenSize, adapters.config.rotaryPairing == config.rotaryPairing else {
            throw ModelError("the LoRA adapters were made for a different model (\(adapters.config.family), \(adapters.config.layerCount) layers, "
                             + "embedding \(adapters.config.embeddingSize)) than this one (\(config.family), \(config.layerCount) layers, "
                             + "embedding \(config.embeddingSize))")
        }
        self.adapters = adapters
        installAdapters()
    }

    /// Each projection's adapters from `adapters` (none without).
    private func installAdapters() {
        for l in 0..<config.layerCount {
            let p = "blk.\(l)."
            func on(_ name: String) -> [LoRAAdapter] { adapters?.adapters(on: p + name) ?? [] }
            weights.blocks[l].qkv.adapters = on("attn_qkv")
            weights.blocks[l].attentionOutput.adapters = on("attn_output")
            weights.blocks[l].up.adapters = on("ffn_up")
            weights.blocks[l].down.adapters = on("ffn_down")
        }
    }

    /// Folds the attached adapters into the weights (`W += scale · B · A` on each adapted block)
    /// and detaches them: the model then computes the adapted function with plain linears. The
    /// adapted matrices must be fp32 in the arena (load a GGUF file `.dequantized` to merge).
    public func mergeAdapters() throws {
        guard let adapters else { return }
        if let target = adapters.targets.first(where: { layout.entry($0.tensor + ".weight") == nil }) {
            throw ModelError("\(target.tensor).weight is not fp32 in the model's arena (load GGUF weights dequantised to merge)")
        }
        for target in adapters.targets {
            let entry = layout.entry(target.tensor + ".weight")!
            let adapter = adapters.adapters(on: target.tensor).first { $0.rows == target.rows }!
            adapter.addUpdate(to: FloatBuffer(rebasing: parameters[(entry.offset + target.rows.lowerBound * target.inputs)...]),
                              inputs: target.inputs, pool: pool)
        }
        self.adapters = nil
        installAdapters()
    }

    /// What training updates: the adapters when attached, else the model's own arena.
    public var trainedTensors: TrainedTensors {
        if let adapters { return TrainedTensors(layout: adapters.layout, values: adapters.parameters, gradients: adapters.gradients) }
        precondition(trainable, "the model has no gradients and no adapters")
        return TrainedTensors(layout: layout, values: parameters, gradients: gradients)
    }

    /// The arena tensor `name` (see `ParameterLayout`); it must exist (a programming error otherwise).
    public func parameter(_ name: String) -> FloatBuffer {
        guard let e = layout.entry(name) else { preconditionFailure("no parameter \(name)") }
        return FloatBuffer(rebasing: parameters[e.range])
    }

    public func gradient(_ name: String) -> FloatBuffer {
        guard trainable, let e = layout.entry(name) else { preconditionFailure("no gradient \(name)") }
        return FloatBuffer(rebasing: gradients[e.range])
    }

    /// GPT-2's initialisation (nanoGPT's, for both families): matrices and embeddings normal(0,
    /// 0.02), the two residual projections of each block normal(0, 0.02 / sqrt(2 · layers)),
    /// biases 0, norm gains 1.
    public func initializeWeights(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        let residualStd = 0.02 / Float(2 * config.layerCount).squareRoot()
        for entry in layout.entries {
            let values = FloatBuffer(rebasing: parameters[entry.range])
            if entry.name.hasSuffix(".bias") {
                values.update(repeating: 0)
            } else if entry.shape.count == 1 {
                values.update(repeating: 1)
            } else {
                let residual = entry.name.hasSuffix("attn_output.weight") || entry.name.hasSuffix("ffn_down.weight")
                let std: Float = residual ? residualStd : 0.02
                for i in values.indices { values[i] = generator.nextNormal() * std }
            }
        }
    }

    /// Zeroes the model's gradients and its adapters'.
    public func zeroGradients() {
        gradients.update(repeating: 0)
        adapters?.gradients.update(repeating: 0)
    }

    /// The logits of the last training forward pass, (B, T, V).
    public var logits: UnsafeBufferPointer<Float> {
        guard let a = activations, let batch = lastBatch else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(rebasing: a.logits[0..<(batch.batch * batch.length * config.vocabularySize)])
    }

    private func checkTokens(_ tokens: [Int32], targets: [Int32]?) throws {
        let V = config.vocabularySize
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= V }) {
            throw ModelError("token id \(tokens[bad]) at position \(bad) is outside the vocabulary (0..<\(V))")
        }
        if let targets, let bad = targets.firstIndex(where: { $0 < -1 || Int($0) >= V }) {
            throw ModelError("target id \(targets[bad]) at position \(bad) is outside the vocabulary (0..<\(V), or -1 to ignore)")
        }
    }

    // MARK: forward

    /// A run of consecutive rows that belong to one sequence: `rows` new tokens at positions
    /// `offset`..., attending over the sequence's earlier positions in `cache` (or, without a
    /// cache, over the run itself).
    private struct Span {
        var first: Int, rows: Int, offset: Int
        var cache: KVCache?
        /// The cache's block table, for the length of one forward pass.
        var table: UnsafePointer<Int32>? = nil
        /// Where a prompt chunk's cached keys (then values) are gathered in the workspace, or -1.
        var gathered = -1
        /// Where this span's (T, S) attention weights start, per head.
        var attentionBase: Int
        var keyCount: Int { offset + rows }
    }

    /// Training and evaluation: runs `tokens` (B·T ids, row-major (B, T)); with `targets` returns
    /// the mean cross-entropy over the targets that are not -1, else nil. `training` turns
    /// dropout on, with masks drawn from `dropoutSeed` (the same seed gives the same masks at any
    /// thread count). Activations stay for `backward()` and `logits`.
    @discardableResult
    public func forward(tokens: [Int32], targets: [Int32]?, batch: Int, length: Int,
                        training: Bool = false, dropoutSeed: UInt64 = 0) throws -> Float? {
        let B = batch, T = length, C = config.embeddingSize, V = config.vocabularySize, BT = B * T
        guard B > 0, T > 0 else { throw ModelError("batch and length must be positive, got \(B) x \(T)") }
        guard T <= config.contextLength else {
            throw ModelError("sequence length \(T) exceeds the model's context length (block size) \(config.contextLength)")
        }
        guard tokens.count == BT, targets.map({ $0.count == BT }) ?? true else {
            throw ModelError("expected \(BT) tokens and targets for batch \(B) x length \(T), got \(tokens.count)")
        }
        try checkTokens(tokens, targets: targets)
        if activations == nil || activations!.batch != B || activations!.length != T {
            activations = nil
            activations = TrainingActivations(config: config, batch: B, length: T, frequencies: frequencies)
        }
        let a = activations!
        lastBatch = (tokens, targets, B, T)
        dropout = training && config.dropout > 0 ? Dropout(probability: config.dropout, seed: dropoutSeed) : nil
        adapterSeed = training ? dropoutSeed : nil
        workspace.pool = pool
        let spans = (0..<B).map { Span(first: $0 * T, rows: T, offset: 0, cache: nil, attentionBase: $0 * config.headCount * T * T) }
        tokens.withUnsafeBufferPointer { ids in
            a.positions.withUnsafeBufferPointer { positions in
                embeddingForward(out: a.encoded, tokens: ids, positions: positions, token: weights.tokenEmbedding,
                                 position: weights.positionEmbedding, rows: BT, pool: pool)
                applyDropout(a.encoded, count: BT * C, site: 0, dropout)
                var input = UnsafeBufferPointer(a.encoded)
                for l in 0..<config.layerCount {
                    block(l, input: input, a.blocks[l], projected: a.projected, rows: BT, rotaryTable: a.rotaryTable, spans: spans,
                          dropout: dropout, adapterSeed: adapterSeed, workspace: workspace)
                    input = UnsafeBufferPointer(a.blocks[l].output)
                }
                normForward(out: a.finalNormed, statistics: a.finalStatistics, inp: input, weights.outputNorm, rows: BT,
                            config: config, pool: pool)
            }
        }
        // logits (B, T, V) = finalNormed (B, T, C) · Wᵀ with W = output (V, C)
        linearForward(out: a.logits, inp: UnsafeBufferPointer(a.finalNormed), weights.output, rows: BT, workspace: workspace)
        guard let targets else { return nil }
        // The probabilities go where backward turns them into dlogits in place.
        return targets.withUnsafeBufferPointer { t in
            crossEntropyForward(losses: a.losses, probabilities: a.dLogits, logits: UnsafeBufferPointer(a.logits),
                                targets: t, rows: BT, vocab: V, ignoreIndex: -1, pool: pool)
        }
    }

    /// Generation: runs `tokens` at the cache's next positions, appending their keys and values;
    /// returns the last token's logits (V floats, valid until the cache's next forward call).
    public func forward(_ tokens: [Int], cache: KVCache) throws -> UnsafeBufferPointer<Float> {
        let workspace = cache.workspace ?? InferenceWorkspace(pool: pool)
        cache.workspace = workspace
        let result = try forward(batch: [BatchEntry(cache: cache, tokens: tokens)], workspace: workspace)
        return result.logits(entry: 0)
    }

    /// One step for many sequences (a ragged batch): each entry's tokens run at its cache's next
    /// positions, prefill chunks and single decoding tokens mixed, every weight matrix read once
    /// for all rows. Returns the logits each entry asks for and, for entries with `targets`, the
    /// log-probability of each target without keeping their logits. Every cache must be a
    /// different sequence. Results are views into `workspace`, valid until its next use.
    public func forward(batch: [BatchEntry], workspace: InferenceWorkspace) throws -> BatchResult {
        let C = config.embeddingSize, V = config.vocabularySize, NH = config.headCount
        guard !batch.isEmpty else { throw ModelError("an empty batch") }
        var spans: [Span] = [], logitRows: [Int] = [], logitRanges: [Range<Int>] = []
        var ids: [Int32] = [], positions: [Int32] = []
        var attentionCount = 0
        for (index, entry) in batch.enumerated() {
            let cache = entry.cache, T = entry.tokens.count
            guard T > 0 else { throw ModelError("batch entry \(index) has no tokens") }
            guard cache.pool.layerCount == config.layerCount, cache.pool.keyValueSize == config.keyValueSize else {
                throw ModelError("batch entry \(index): the KV cache was made for another model")
            }
            guard !batch[..<index].contains(where: { $0.cache === cache }) else {
                throw ModelError("batch entry \(index): its sequence is already in the batch")
            }
            if let targets = entry.targets, targets.count != T {
                throw ModelError("batch entry \(index): \(targets.count) targets for \(T) tokens")
            }
            let rowIDs = entry.tokens.map { Int32(clamping: $0) }
            try checkTokens(rowIDs, targets: entry.targets?.map { Int32(clamping: $0) })
            try cache.reserve(T)
            let first = ids.count
            spans.append(Span(first: first, rows: T, offset: cache.count, cache: cache, attentionBase: attentionCount))
            attentionCount += NH * T * (cache.count + T)
            ids += rowIDs
            positions += (0..<T).map { Int32(cache.count + $0) }
            let start = logitRows.count
            switch entry.logits {
            case .none: break
            case .last: logitRows.append(first + T - 1)
            case .lastRows(let n): logitRows += (first + T - min(max(n, 0), T))..<(first + T)
            case .all: logitRows += first..<(first + T)
            }
            logitRanges.append(start..<logitRows.count)
        }
        let rows = ids.count, R = logitRows.count
        let scoreChunk = batch.contains { $0.targets != nil } ? 64 : 0
        let a = workspace.activations(config, rows: rows, attentionCount: attentionCount, logitRows: R + scoreChunk)
        let scratch = workspace.scratch
        scratch.pool = pool
        workspace.linearSeconds = 0
        workspace.attentionSeconds = 0
        let timer = workspace.measuring ? workspace : nil
        // The block tables, fixed for this step, where the attention loop can read them.
        var tables: [Int32] = [], tableStarts: [Int] = []
        for span in spans {
            tableStarts.append(tables.count)
            tables += span.cache!.blocks
        }
        // Prompt chunks gather their cached keys and values into the workspace, at these offsets.
        var gatheredCount = 0
        for index in spans.indices where spans[index].rows > 4 {
            spans[index].gathered = gatheredCount
            gatheredCount += 2 * spans[index].keyCount * config.keyValueSize
        }
        let gathered = scratch.gathered(count: gatheredCount)
        let rotaryTable = frequencies.isEmpty ? nil
            : positions.withUnsafeBufferPointer { RotaryTable(positions: $0, frequencies: frequencies) }
        var scores: (logProbabilities: [[Float]?], isGreedy: [[Bool]?]) = ([], [])
        tables.withUnsafeBufferPointer { tables in
            for index in spans.indices { spans[index].table = tables.baseAddress! + tableStarts[index] }
            ids.withUnsafeBufferPointer { ids in
                positions.withUnsafeBufferPointer { positions in
                    embeddingForward(out: a.encoded, tokens: ids, positions: positions, token: weights.tokenEmbedding,
                                     position: weights.positionEmbedding, rows: rows, pool: pool)
                    var input = UnsafeBufferPointer(a.encoded)
                    for l in 0..<config.layerCount {
                        block(l, input: input, a.block, projected: a.projected, rows: rows, rotaryTable: rotaryTable, spans: spans,
                              gathered: gathered, dropout: nil, workspace: scratch, timer: timer)
                        input = UnsafeBufferPointer(a.block.output)
                    }
                    // The final norm and the output layer only for the rows asked for.
                    for (r, row) in logitRows.enumerated() {
                        (a.encoded.baseAddress! + r * C).update(from: input.baseAddress! + row * C, count: C)
                    }
                    if R > 0 {
                        normForward(out: a.finalNormed, statistics: a.finalStatistics, inp: UnsafeBufferPointer(a.encoded),
                                    weights.outputNorm, rows: R, config: config, pool: pool)
                        timed(timer) {
                            linearForward(out: a.logits, inp: UnsafeBufferPointer(a.finalNormed), weights.output, rows: R, workspace: scratch)
                        }
                    }
                    scores = score(batch, spans: spans, input: input, a, after: R, chunk: scoreChunk, scratch: scratch, timer: timer)
                }
            }
        }
        for span in spans { span.cache!.advance(by: span.rows) }
        return BatchResult(logits: UnsafeBufferPointer(rebasing: a.logits[0..<(R * V)]), vocabularySize: V, ranges: logitRanges,
                           logProbabilities: scores.logProbabilities, isGreedy: scores.isGreedy)
    }

    /// log softmax(logits)[target] at every row with a target (-1: none) of the entries with
    /// targets, and whether the target is the row's most likely token: all entries' scored rows
    /// go through the final norm and the output layer together, `chunk` rows at a time, into the
    /// workspace's logits rows past `after` (those before it are the batch's returned logits);
    /// no row's logits are kept.
    private func score(_ batch: [BatchEntry], spans: [Span], input: UnsafeBufferPointer<Float>, _ a: InferenceActivations,
                       after: Int, chunk: Int, scratch: Workspace, timer: InferenceWorkspace?)
        -> (logProbabilities: [[Float]?], isGreedy: [[Bool]?]) {
        let C = config.embeddingSize, V = config.vocabularySize
        var logProbabilities: [[Float]?] = batch.map { $0.targets.map { Array(repeating: .nan, count: $0.count) } }
        var isGreedy: [[Bool]?] = batch.map { $0.targets.map { Array(repeating: false, count: $0.count) } }
        // (entry, row of the entry, target) for every scored row, in batch order.
        var scored: [(entry: Int, row: Int, target: Int)] = []
        for (index, entry) in batch.enumerated() {
            for (row, target) in (entry.targets ?? []).enumerated() where target >= 0 { scored.append((index, row, target)) }
        }
        let gathered = FloatBuffer(rebasing: a.encoded[0...]), normed = FloatBuffer(rebasing: a.finalNormed[(after * C)...])
        let logits = FloatBuffer(rebasing: a.logits[(after * V)...])
        let statistics = NormStatistics(mean: FloatBuffer(rebasing: a.finalStatistics.mean[after...]),
                                        rstd: FloatBuffer(rebasing: a.finalStatistics.rstd[after...]))
        for start in stride(from: 0, to: scored.count, by: max(1, chunk)) {
            let part = scored[start..<min(scored.count, start + chunk)]
            for (r, item) in part.enumerated() {
                (gathered.baseAddress! + r * C).update(from: input.baseAddress! + (spans[item.entry].first + item.row) * C, count: C)
            }
            normForward(out: normed, statistics: statistics, inp: UnsafeBufferPointer(gathered), weights.outputNorm, rows: part.count,
                        config: config, pool: pool)
            timed(timer) {
                linearForward(out: logits, inp: UnsafeBufferPointer(normed), weights.output, rows: part.count, workspace: scratch)
            }
            for (r, item) in part.enumerated() {
                let row = logits.baseAddress! + r * V, target = row[item.target]
                isGreedy[item.entry]![item.row] = target >= sg_max(V, row)
                logProbabilities[item.entry]![item.row] = target - sg_softmax_row(InstructionSet.best.rawValue, V, row)
            }
        }
        return (logProbabilities, isGreedy)
    }

    private func timed(_ timer: InferenceWorkspace?, _ body: () -> Void) {
        guard let timer else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        timer.linearSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// One block over `rows` rows: input (rows, C) -> a.output (rows, C). With caches, the spans'
    /// new keys and values are appended to them first.
    private func block(_ l: Int, input: UnsafeBufferPointer<Float>, _ a: BlockActivations, projected: FloatBuffer,
                       rows: Int, rotaryTable: RotaryTable?, spans: [Span], gathered: FloatBuffer? = nil, dropout: Dropout?,
                       adapterSeed: UInt64? = nil, workspace: Workspace, timer: InferenceWorkspace? = nil) {
        let w = weights.blocks[l]
        let C = config.embeddingSize, W = config.qkvSize, kv = config.keyValueSize
        let NH = config.headCount, group = NH / config.keyValueHeadCount, hd = config.headSize
        normForward(out: a.normed1, statistics: a.statistics1, inp: input, w.attentionNorm, rows: rows, config: config, pool: pool)
        timed(timer) { linearForward(out: a.qkv, inp: UnsafeBufferPointer(a.normed1), w.qkv, rows: rows, trainingSeed: adapterSeed,
                                    workspace: workspace) }
        if let rotaryTable { rotary(a.qkv, rows: rows, ld: W, table: rotaryTable, config: config, pool: pool) }
        for span in spans {
            guard let cache = span.cache else { continue }
            let pool = cache.pool, P = pool.blockSize
            for t in 0..<span.rows {
                let position = span.offset + t
                pool.store(layer: l, at: pool.offset(block: span.table![position / P], slot: position % P),
                           key: a.qkv.baseAddress! + (span.first + t) * W + NH * hd, valueOffset: kv)
            }
        }
        // Prompt chunks attend through a gemm per head over all their keys: this layer's cached keys
        // and values are gathered into contiguous rows first (one gemm, not one per block).
        for span in spans where span.gathered >= 0 {
            let cache = span.cache!, P = cache.pool.blockSize, S = span.keyCount
            let keys = gathered!.baseAddress! + span.gathered, values = keys + S * kv
            for first in stride(from: 0, to: S, by: P) {
                let n = min(P, S - first), offset = cache.pool.offset(block: span.table![first / P], slot: 0)
                cache.pool.load(layer: l, at: offset, count: n * kv, keys: keys + first * kv, values: values + first * kv)
            }
        }
        let site = 1 + 3 * l
        let attentionStart = timer == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        // Decoding rows run the query heads that share a key/value head together (all the heads of
        // a sequence in one piece when there are sequences enough to go round: its cache blocks
        // then stream through once), other rows a head at a time.
        let wholeSequences = spans.count >= 2 * pool.threadCount
        var units: [(span: Int, head: Int, decoding: Bool)] = []
        for (index, span) in spans.enumerated() {
            let decoding = span.rows <= 4 && dropout == nil
            for h in stride(from: 0, to: NH, by: decoding ? (wholeSequences ? NH : group) : 1) { units.append((index, h, decoding)) }
        }
        pool.parallelFor(units.count) { index in
            let unit = units[index], span = spans[unit.span], h = unit.head, g = h / group
            let S = span.keyCount, attention = span.attentionBase + h * span.rows * S
            let q = UnsafePointer(a.qkv.baseAddress! + span.first * W + h * hd)
            let rows: KeyValueRows
            if span.gathered >= 0 {
                let keys = gathered!.baseAddress! + span.gathered
                rows = .contiguous(keys: keys + g * hd, values: keys + S * kv + g * hd, ld: kv)
            } else if let cache = span.cache {
                rows = cache.pool.rows(layer: l, column: g * hd, table: span.table)
            } else {
                let k = a.qkv.baseAddress! + span.first * W + NH * hd + g * hd
                rows = .contiguous(keys: k, values: k + kv, ld: W)
            }
            let y = a.attended.baseAddress! + span.first * C + h * hd, probabilities = a.probabilities.baseAddress! + attention
            if unit.decoding {
                attentionGroupDecode(y: y, ldy: C, probabilities: probabilities, headStride: span.rows * S, q: q, ldq: W, group: group,
                                     keyValueHeads: wholeSequences ? config.keyValueHeadCount : 1, kv: rows, T: span.rows, S: S,
                                     offset: span.offset, headSize: hd)
            } else {
                attentionHeadForward(y: y, ldy: C, probabilities: probabilities, q: q, ldq: W, kv: rows, T: span.rows, S: S,
                                     offset: span.offset, headSize: hd,
                                     dropout: dropout.map { ($0, site, attention, a.dropped.baseAddress! + attention) })
            }
        }
        if let timer { timer.attentionSeconds += Double(DispatchTime.now().uptimeNanoseconds - attentionStart) / 1e9 }
        timed(timer) {
            linearForward(out: projected, inp: UnsafeBufferPointer(a.attended), w.attentionOutput, rows: rows, trainingSeed: adapterSeed,
                          workspace: workspace)
        }
        applyDropout(projected, count: rows * C, site: 2 + 3 * l, dropout)
        add(a.afterAttention, input, projected, count: rows * C)
        normForward(out: a.normed2, statistics: a.statistics2, inp: UnsafeBufferPointer(a.afterAttention), w.mlpNorm,
                    rows: rows, config: config, pool: pool)
        timed(timer) {
            linearForward(out: a.hiddenIn, inp: UnsafeBufferPointer(a.normed2), w.up, rows: rows, trainingSeed: adapterSeed, workspace: workspace)
        }
        activationForward(out: a.hidden, inp: UnsafeBufferPointer(a.hiddenIn), rows: rows, hidden: config.hiddenSize,
                          activation: config.activation, pool: pool)
        timed(timer) {
            linearForward(out: projected, inp: UnsafeBufferPointer(a.hidden), w.down, rows: rows, trainingSeed: adapterSeed, workspace: workspace)
        }
        applyDropout(projected, count: rows * C, site: 3 + 3 * l, dropout)
        add(a.output, UnsafeBufferPointer(a.afterAttention), projected, count: rows * C)
    }

    /// out = x + y (the residual connection); out may be x's own buffer.
    private func add(_ out: FloatBuffer, _ x: UnsafeBufferPointer<Float>, _ y: FloatBuffer, count: Int) {
        pool.parallelRanges(count, minimumPerThread: 65_536) { range in
            for i in range { out[i] = x[i] + y[i] }
        }
    }

    private func applyDropout(_ x: FloatBuffer, count: Int, site: Int, _ dropout: Dropout?) {
        guard let dropout else { return }
        pool.parallelRanges(count, minimumPerThread: 65_536) { range in
            for i in range { x[i] *= dropout.scale(site: site, index: i) }
        }
    }

    /// The gradient of a residual branch that went through dropout at `site`: dResidual masked
    /// into `scratch`, or dResidual itself when dropout is off.
    private func branchGradient(_ dResidual: FloatBuffer, scratch: FloatBuffer, count: Int, site: Int) -> UnsafeBufferPointer<Float> {
        guard let dropout else { return UnsafeBufferPointer(dResidual) }
        pool.parallelRanges(count, minimumPerThread: 65_536) { range in
            for i in range { scratch[i] = dResidual[i] * dropout.scale(site: site, index: i) }
        }
        return UnsafeBufferPointer(scratch)
    }

    // MARK: backward

    /// Accumulates into `gradients` the gradient of the mean loss of the last forward pass
    /// (which must have had targets). Call `zeroGradients()` first unless accumulating.
    public func backward() {
        guard trainable || adapters != nil, let a = activations, let last = lastBatch, let targets = last.targets else {
            preconditionFailure("backward() needs a trainable model (or adapters) and a forward pass with targets first")
        }
        let B = last.batch, T = last.length, C = config.embeddingSize, V = config.vocabularySize, BT = B * T
        let H = config.hiddenSize, W = config.qkvSize, kv = config.keyValueSize, hd = config.headSize
        let NH = config.headCount, NKV = config.keyValueHeadCount, group = NH / NKV
        workspace.pool = pool
        let counted = targets.reduce(0) { $0 + ($1 == -1 ? 0 : 1) }
        targets.withUnsafeBufferPointer { t in
            crossEntropyBackward(dlogits: a.dLogits, probabilities: UnsafeBufferPointer(a.dLogits), targets: t,
                                 rows: BT, vocab: V, scale: counted > 0 ? 1 / Float(counted) : 0, ignoreIndex: -1, pool: pool)
        }
        a.dNormed.update(repeating: 0)
        linearBackward(dinp: a.dNormed, dout: UnsafeBufferPointer(a.dLogits), inp: UnsafeBufferPointer(a.finalNormed),
                       weights.output, rows: BT, workspace: workspace)
        let dResidual = a.dResidual
        dResidual.update(repeating: 0)
        let lastOutput = config.layerCount > 0 ? a.blocks[config.layerCount - 1].output : a.encoded
        normBackward(dinp: dResidual, dout: UnsafeBufferPointer(a.dNormed), inp: UnsafeBufferPointer(lastOutput),
                     weights.outputNorm, statistics: a.finalStatistics, rows: BT, config: config)

        for l in stride(from: config.layerCount - 1, through: 0, by: -1) {
            let w = weights.blocks[l], s = a.blocks[l]
            let input = UnsafeBufferPointer(l == 0 ? a.encoded : a.blocks[l - 1].output)
            // output = afterAttention + dropout(down(hidden)): both get dResidual.
            let dMLP = branchGradient(dResidual, scratch: a.dBranch, count: BT * C, site: 3 + 3 * l)
            a.dHidden.update(repeating: 0)
            linearBackward(dinp: a.dHidden, dout: dMLP, inp: UnsafeBufferPointer(s.hidden), w.down,
                           rows: BT, trainingSeed: adapterSeed, workspace: workspace)
            a.dHiddenIn.update(repeating: 0)
            activationBackward(dinp: a.dHiddenIn, inp: UnsafeBufferPointer(s.hiddenIn), dout: UnsafeBufferPointer(a.dHidden),
                               rows: BT, hidden: H, activation: config.activation, pool: pool)
            a.dNormed.update(repeating: 0)
            linearBackward(dinp: a.dNormed, dout: UnsafeBufferPointer(a.dHiddenIn), inp: UnsafeBufferPointer(s.normed2), w.up,
                           rows: BT, trainingSeed: adapterSeed, workspace: workspace)
            normBackward(dinp: dResidual, dout: UnsafeBufferPointer(a.dNormed), inp: UnsafeBufferPointer(s.afterAttention),
                         w.mlpNorm, statistics: s.statistics2, rows: BT, config: config)
            // afterAttention = input + dropout(attentionOutput(attended))
            let dAttention = branchGradient(dResidual, scratch: a.dBranch, count: BT * C, site: 2 + 3 * l)
            a.dAttended.update(repeating: 0)
            linearBackward(dinp: a.dAttended, dout: dAttention, inp: UnsafeBufferPointer(s.attended),
                           w.attentionOutput, rows: BT, trainingSeed: adapterSeed, workspace: workspace)
            a.dQKV.update(repeating: 0)
            let site = 1 + 3 * l, dropout = self.dropout
            pool.parallelFor(B * NKV) { index in
                let b = index / NKV, g = index % NKV, row = b * T
                let heads = (g * group..<(g + 1) * group).map { h in
                    let attention = (b * NH + h) * T * T
                    return (q: UnsafePointer(s.qkv.baseAddress! + row * W + h * hd), dq: a.dQKV.baseAddress! + row * W + h * hd,
                            dy: UnsafePointer(a.dAttended.baseAddress! + row * C + h * hd),
                            probabilities: UnsafePointer(s.probabilities.baseAddress! + attention),
                            used: UnsafePointer(s.dropped.baseAddress! + attention), dropoutIndex: attention)
                }
                let k = row * W + NH * hd + g * hd
                attentionGroupBackward(heads: heads, ldq: W, ldy: C, keys: s.qkv.baseAddress! + k, values: s.qkv.baseAddress! + k + kv,
                                       dKeys: a.dQKV.baseAddress! + k, dValues: a.dQKV.baseAddress! + k + kv, ldkv: W, T: T,
                                       headSize: hd, dScores: a.dScores.baseAddress! + index * T * T,
                                       dropout: dropout.map { ($0, site) })
            }
            if let table = a.rotaryTable { rotary(a.dQKV, rows: BT, ld: W, table: table, config: config, inverse: true, pool: pool) }
            a.dNormed.update(repeating: 0)
            linearBackward(dinp: a.dNormed, dout: UnsafeBufferPointer(a.dQKV), inp: UnsafeBufferPointer(s.normed1), w.qkv,
                           rows: BT, trainingSeed: adapterSeed, workspace: workspace)
            normBackward(dinp: dResidual, dout: UnsafeBufferPointer(a.dNormed), inp: input, w.attentionNorm,
                         statistics: s.statistics1, rows: BT, config: config)
        }
        // encoded = dropout(embeddings)
        let dEmbedded = branchGradient(dResidual, scratch: a.dBranch, count: BT * C, site: 0)
        last.tokens.withUnsafeBufferPointer { ids in
            a.positions.withUnsafeBufferPointer { positions in
                embeddingBackward(dout: dEmbedded, tokens: ids, positions: positions,
                                  token: weights.tokenEmbedding, position: weights.positionEmbedding, rows: BT, columns: C)
            }
        }
    }
}
