import Kernels

/// One zeroed allocation handed out in consecutive slices.
final class Arena {
    let storage: FloatBuffer
    private var used = 0

    init(count: Int) {
        storage = .allocate(capacity: max(1, count))
        storage.initialize(repeating: 0)
    }

    deinit { storage.deallocate() }

    func take(_ count: Int) -> FloatBuffer {
        precondition(used + count <= storage.count, "Arena: sized too small")
        defer { used += count }
        return FloatBuffer(rebasing: storage[used..<(used + count)])
    }
}

/// What one block computes for `rows` rows (and what its backward pass reads), shapes (rows, ·):
///
///     normed1 (C), statistics1     the attention norm's output and per-row statistics
///     qkv (NH·hd + 2·NKV·hd)       projected queries|keys|values, RoPE applied
///     probabilities                per (sequence, head): (T, S) attention weights; dropped: after dropout
///     attended (NH·hd)             the heads' outputs before the output projection
///     afterAttention (C)           input + attention branch
///     normed2 (C), statistics2     the MLP norm
///     hiddenIn (H, or 2H)          the MLP's input projection (gate|up for SwiGLU)
///     hidden (H)                   after the nonlinearity
///     output (C)                   afterAttention + MLP branch: the next block's input
final class BlockActivations {
    let normed1, qkv, probabilities, dropped, attended, afterAttention, normed2, hiddenIn, hidden, output: FloatBuffer
    let statistics1, statistics2: NormStatistics

    /// Room for `rows` rows and `attentionCount` attention weights.
    static func count(_ config: ModelConfig, rows: Int, attentionCount: Int, dropout: Bool) -> Int {
        let C = config.embeddingSize
        return rows * (5 * C + config.qkvSize + config.mlpInputSize + config.hiddenSize + 4)
            + attentionCount * (dropout ? 2 : 1)
    }

    init(_ arena: Arena, config: ModelConfig, rows: Int, attentionCount: Int, dropout: Bool) {
        let C = config.embeddingSize
        normed1 = arena.take(rows * C)
        statistics1 = NormStatistics(mean: arena.take(rows), rstd: arena.take(rows))
        qkv = arena.take(rows * config.qkvSize)
        probabilities = arena.take(attentionCount)
        dropped = dropout ? arena.take(attentionCount) : probabilities
        attended = arena.take(rows * C)
        afterAttention = arena.take(rows * C)
        normed2 = arena.take(rows * C)
        statistics2 = NormStatistics(mean: arena.take(rows), rstd: arena.take(rows))
        hiddenIn = arena.take(rows * config.mlpInputSize)
        hidden = arena.take(rows * config.hiddenSize)
        output = arena.take(rows * C)
    }
}

/// Scratch of one forward call that no layer keeps: the thread pool to run on, fp32 room to
/// dequantise a weight matrix into, and room to gather a sequence's cached keys and values.
public final class Workspace {
    public var pool: ThreadPool
    private var dense = FloatBuffer(start: nil, count: 0)
    private var gatheredRows = FloatBuffer(start: nil, count: 0)
    private var adapterRows = FloatBuffer(start: nil, count: 0)

    public init(pool: ThreadPool) { self.pool = pool }

    deinit {
        dense.deallocate()
        gatheredRows.deallocate()
        adapterRows.deallocate()
    }

    /// Room for a LoRA adapter's dropped input and low-rank rows (`LoRA.swift`).
    func adapter(count: Int) -> FloatBuffer {
        if adapterRows.count < count {
            adapterRows.deallocate()
            adapterRows = .allocate(capacity: count)
        }
        return adapterRows
    }

    /// Room to gather cached keys and values into contiguous rows.
    func gathered(count: Int) -> FloatBuffer {
        if gatheredRows.count < count {
            gatheredRows.deallocate()
            gatheredRows = .allocate(capacity: count)
        }
        return gatheredRows
    }

    func dequantized(count: Int) -> FloatBuffer {
        if dense.count < count {
            dense.deallocate()
            dense = .allocate(capacity: count)
        }
        return dense
    }
}

/// Everything a training forward pass keeps for backward, for one (batch, length), in one
/// allocation, with the backward pass's scratch.
final class TrainingActivations {
    let batch: Int, length: Int
    let arena: Arena
    let encoded, finalNormed, logits, losses, projected: FloatBuffer
    let finalStatistics: NormStatistics
    let blocks: [BlockActivations]
    let positions: [Int32]
    /// RoPE's cos and sin for every row (rotary models), for forward and backward.
    let rotaryTable: RotaryTable?
    // Gradient scratch, reused block after block. dLogits first holds the softmax probabilities.
    let dLogits, dNormed, dResidual, dBranch, dHidden, dHiddenIn, dAttended, dQKV, dScores: FloatBuffer

    init(config: ModelConfig, batch B: Int, length T: Int, frequencies: [Double]) {
        batch = B
        length = T
        let C = config.embeddingSize, V = config.vocabularySize, BT = B * T, dropout = config.dropout > 0
        let attention = B * config.headCount * T * T
        let perBlock = BlockActivations.count(config, rows: BT, attentionCount: attention, dropout: dropout)
        let total = BT * (4 * C + 2 + 2 * V + 1) + config.layerCount * perBlock
            + BT * (3 * C + config.hiddenSize + config.mlpInputSize + config.qkvSize) + attention
        let arena = Arena(count: total)
        self.arena = arena
        encoded = arena.take(BT * C)
        blocks = (0..<config.layerCount).map { _ in
            BlockActivations(arena, config: config, rows: BT, attentionCount: attention, dropout: dropout)
        }
        finalNormed = arena.take(BT * C)
        finalStatistics = NormStatistics(mean: arena.take(BT), rstd: arena.take(BT))
        logits = arena.take(BT * V)
        losses = arena.take(BT)
        projected = arena.take(BT * C)
        dLogits = arena.take(BT * V); dNormed = arena.take(BT * C); dResidual = arena.take(BT * C)
        dBranch = arena.take(BT * C); dHidden = arena.take(BT * config.hiddenSize)
        dHiddenIn = arena.take(BT * config.mlpInputSize); dAttended = arena.take(BT * C)
        dQKV = arena.take(BT * config.qkvSize); dScores = arena.take(attention)
        positions = (0..<BT).map { Int32($0 % T) }
        rotaryTable = frequencies.isEmpty ? nil : positions.withUnsafeBufferPointer { RotaryTable(positions: $0, frequencies: frequencies) }
    }
}

/// The activations of an inference pass over `rows` rows with room for `attentionCount`
/// attention weights and `logitRows` rows of logits; one block's buffers serve every block in turn.
final class InferenceActivations {
    let rows: Int, attentionCount: Int, logitRows: Int
    let arena: Arena
    let encoded, projected, finalNormed, logits: FloatBuffer
    let finalStatistics: NormStatistics
    let block: BlockActivations

    init(config: ModelConfig, rows: Int, attentionCount: Int, logitRows: Int) {
        self.rows = rows
        self.attentionCount = attentionCount
        self.logitRows = logitRows
        let C = config.embeddingSize, V = config.vocabularySize, R = max(1, logitRows)
        let arena = Arena(count: rows * 2 * C + R * (C + 2 + V)
                          + BlockActivations.count(config, rows: rows, attentionCount: attentionCount, dropout: false))
        self.arena = arena
        encoded = arena.take(rows * C)
        projected = arena.take(rows * C)
        finalNormed = arena.take(R * C)
        finalStatistics = NormStatistics(mean: arena.take(R), rstd: arena.take(R))
        logits = arena.take(R * V)
        block = BlockActivations(arena, config: config, rows: rows, attentionCount: attentionCount, dropout: false)
    }
}

/// The scratch of inference passes: activations grown to the largest batch seen, kept for the
/// next, and room to dequantise. One per worker (a scheduler, a generator); not shared between
/// threads.
public final class InferenceWorkspace {
    let scratch: Workspace
    private var activations: InferenceActivations?
    /// Decoding's one-row activations, apart from the prompt's: a few KB that stay in cache.
    private var decodeActivations: InferenceActivations?
    /// Seconds spent in the linear layers (the gemms and matrix-vector products) while
    /// `measuring` is on: `gpt-bench generate` reports the rest of a step.
    public var linearSeconds: Double = 0
    /// Seconds in attention (from the rows' keys to their outputs) while `measuring` is on.
    public var attentionSeconds: Double = 0
    public var measuring = false

    public init(pool: ThreadPool = .shared) { scratch = Workspace(pool: pool) }

    func activations(_ config: ModelConfig, rows: Int, attentionCount: Int, logitRows: Int) -> InferenceActivations {
        if rows == 1, logitRows <= 1 {
            if let a = decodeActivations, a.attentionCount >= attentionCount { return a }
            let a = InferenceActivations(config: config, rows: 1, attentionCount: max(attentionCount, 2 * (decodeActivations?.attentionCount ?? 0)),
                                         logitRows: 1)
            decodeActivations = a
            return a
        }
        if let a = activations, a.rows >= rows, a.attentionCount >= attentionCount, a.logitRows >= logitRows { return a }
        let old = activations
        activations = nil
        let a = InferenceActivations(config: config, rows: max(rows, old?.rows ?? 0),
                                     attentionCount: max(attentionCount, old?.attentionCount ?? 0),
                                     logitRows: max(logitRows, old?.logitRows ?? 0))
        activations = a
        return a
    }
}
