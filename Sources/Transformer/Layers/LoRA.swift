import Kernels

// LoRA (Hu et al. 2021, PEFT's LoraLayer) as a wrapper around the linear layer: each adapter
// adds a low-rank update to a block of the layer's output rows,
//
//     out[:, rows] += scale · dropout(inp) · Aᵀ · Bᵀ      A (r, IN) random, B (rows, r) zeros, scale = alpha / r
//
// while the base weight (dense or quantised) stays frozen. One fused projection (q|k|v, gate|up)
// carries one adapter per Hugging Face module, so each keeps PEFT's meaning and key names.
// Backward recomputes the (rows, r) low-rank activations and the dropout mask (a hash of the
// seed, so the same mask) instead of keeping them: r is small, and it keeps the layer stateless.

/// A low-rank adapter on output rows `rows` of a `Linear`, views into an adapter arena.
public struct LoRAAdapter: @unchecked Sendable {
    /// The Linear's output rows the adapter updates.
    public var rows: Range<Int>
    public var rank: Int
    public var scale: Float
    /// Dropout probability on the adapter's input while training.
    public var dropout: Float
    /// Where this adapter's dropout masks come from (unique per adapter of a model).
    public var site: Int
    /// (r, IN) and (rows, r), row-major as PEFT's lora_A / lora_B weights.
    public var a: FloatBuffer, b: FloatBuffer
    public var aGradient: FloatBuffer?, bGradient: FloatBuffer?

    /// weight (rows.count, IN) += scale · B · A: the adapter folded into its block of a dense weight.
    public func addUpdate(to weight: FloatBuffer, inputs: Int, pool: ThreadPool = .shared) {
        gemm(.none, .none, m: rows.count, n: inputs, k: rank, alpha: scale, a: UnsafeBufferPointer(b), lda: rank,
             b: UnsafeBufferPointer(a), ldb: inputs, beta: 1, c: weight, ldc: inputs, pool: pool)
    }
}

extension Linear {
    /// The layer's weight with every adapter folded in, dense (OUT, IN) (quantised blocks
    /// dequantised): a plain linear layer that computes what this one does without dropout.
    public func fused(pool: ThreadPool = .shared) -> [Float] {
        let workspace = Workspace(pool: pool)
        var result = [Float](repeating: 0, count: outputs * inputs)
        result.withUnsafeMutableBufferPointer { out in
            var first = 0
            for block in blocks {
                let values = block.dense(rows: 0..<block.rows, scratch: workspace)
                (out.baseAddress! + first * inputs).update(from: values.baseAddress!, count: block.rows * inputs)
                first += block.rows
            }
            for adapter in adapters {
                adapter.addUpdate(to: FloatBuffer(rebasing: out[(adapter.rows.lowerBound * inputs)...]), inputs: inputs, pool: pool)
            }
        }
        return result
    }
}

/// x (rows, IN) = inp masked by the adapter's dropout when training, else inp itself.
private func adapterInput(_ adapter: LoRAAdapter, inp: UnsafeBufferPointer<Float>, count: Int, seed: UInt64?,
                          scratch: FloatBuffer, pool: ThreadPool) -> UnsafeBufferPointer<Float> {
    guard let seed, adapter.dropout > 0 else { return inp }
    let dropout = Dropout(probability: adapter.dropout, seed: seed)
    pool.parallelRanges(count, minimumPerThread: 65_536) { range in
        for i in range { scratch[i] = inp[i] * dropout.scale(site: adapter.site, index: i) }
    }
    return UnsafeBufferPointer(rebasing: scratch[0..<count])
}

/// out (rows, OUT) += each adapter's update; `trainingSeed` turns dropout on.
func adaptersForward(out: FloatBuffer, inp: UnsafeBufferPointer<Float>, _ linear: Linear, rows: Int,
                     trainingSeed: UInt64?, workspace: Workspace) {
    let pool = workspace.pool, inputs = linear.inputs
    for adapter in linear.adapters {
        let r = adapter.rank, scratch = workspace.adapter(count: rows * (inputs + r))
        let x = adapterInput(adapter, inp: inp, count: rows * inputs, seed: trainingSeed, scratch: scratch, pool: pool)
        // h (rows, r) = x · Aᵀ;  out[:, block] += scale · h · Bᵀ
        let h = FloatBuffer(rebasing: scratch[(rows * inputs)..<(rows * (inputs + r))])
        gemm(.none, .transposed, m: rows, n: r, k: inputs, a: x, lda: inputs, b: UnsafeBufferPointer(adapter.a), ldb: inputs,
             c: h, ldc: r, pool: pool)
        gemm(.none, .transposed, m: rows, n: adapter.rows.count, k: r, alpha: adapter.scale, a: UnsafeBufferPointer(h), lda: r,
             b: UnsafeBufferPointer(adapter.b), ldb: r, beta: 1, c: FloatBuffer(rebasing: out[adapter.rows.lowerBound...]),
             ldc: linear.outputs, pool: pool)
    }
}

/// For each adapter, with g = dout[:, block] (rows, n) and x its (dropped) input:
///
///     dB (n, r)   += scale · gᵀ · (x · Aᵀ)
///     dh (rows, r) = scale · g · B
///     dA (r, IN)  += dhᵀ · x
///     dinp        += mask ⊙ (dh · A)
func adaptersBackward(dinp: FloatBuffer?, dout: UnsafeBufferPointer<Float>, inp: UnsafeBufferPointer<Float>, _ linear: Linear,
                      rows: Int, trainingSeed: UInt64?, workspace: Workspace) {
    let pool = workspace.pool, inputs = linear.inputs, outputs = linear.outputs
    for adapter in linear.adapters {
        let r = adapter.rank, n = adapter.rows.count, count = rows * inputs
        let scratch = workspace.adapter(count: rows * (inputs + 2 * r))
        let x = adapterInput(adapter, inp: inp, count: count, seed: trainingSeed, scratch: scratch, pool: pool)
        let h = FloatBuffer(rebasing: scratch[count..<(count + rows * r)])
        let dh = FloatBuffer(rebasing: scratch[(count + rows * r)..<(count + 2 * rows * r)])
        let g = UnsafeBufferPointer(rebasing: dout[adapter.rows.lowerBound...])
        let a = UnsafeBufferPointer(adapter.a)
        gemm(.none, .transposed, m: rows, n: r, k: inputs, alpha: adapter.scale, a: x, lda: inputs, b: a, ldb: inputs,
             c: h, ldc: r, pool: pool)
        gemm(.none, .none, m: rows, n: r, k: n, alpha: adapter.scale, a: g, lda: outputs, b: UnsafeBufferPointer(adapter.b), ldb: r,
             c: dh, ldc: r, pool: pool)
        if let dB = adapter.bGradient {
            gemm(.transposed, .none, m: n, n: r, k: rows, a: g, lda: outputs, b: UnsafeBufferPointer(h), ldb: r,
                 beta: 1, c: dB, ldc: r, pool: pool)
        }
        if let dA = adapter.aGradient {
            gemm(.transposed, .none, m: r, n: inputs, k: rows, a: UnsafeBufferPointer(dh), lda: r, b: x, ldb: inputs,
                 beta: 1, c: dA, ldc: inputs, pool: pool)
        }
        guard let dinp else { continue }
        if let seed = trainingSeed, adapter.dropout > 0 {
            // The dropped input is no longer needed: its room takes dh · A, then the mask.
            let dx = FloatBuffer(rebasing: scratch[0..<count])
            gemm(.none, .none, m: rows, n: inputs, k: r, a: UnsafeBufferPointer(dh), lda: r, b: a, ldb: inputs,
                 c: dx, ldc: inputs, pool: pool)
            let dropout = Dropout(probability: adapter.dropout, seed: seed)
            pool.parallelRanges(count, minimumPerThread: 65_536) { range in
                for i in range { dinp[i] += dx[i] * dropout.scale(site: adapter.site, index: i) }
            }
        } else {
            gemm(.none, .none, m: rows, n: inputs, k: r, a: UnsafeBufferPointer(dh), lda: r, b: a, ldb: inputs,
                 beta: 1, c: dinp, ldc: inputs, pool: pool)
        }
    }
}
