import Kernels

// Linear layer, out = inp · Wᵀ + b with W (OUT, IN) row-major ([out, in], PyTorch's nn.Linear).
// Dense weights run as one gemm (a matrix-vector product for one row); quantised weights as a
// matrix-vector product over the GGML blocks for one row, a multi-vector product for up to
// `fewRows` rows (all of a fused layer's blocks in one), else as a gemm that dequantises W
// panel by panel while packing it (W read once for all rows). Quantised weights never train:
// their backward gives the input gradient only (W dequantised into scratch a panel of rows at a
// time for that gemm).

extension Linear {
    /// Up to this many rows (a batch of decoding sequences, a server step's prompt chunks of up
    /// to 256 tokens), a quantised weight runs as a multi-vector product; past it, as a gemm that
    /// dequantises while packing. Measured on SmolLM2 (Zen4, 2 threads), prompts through the
    /// multi-vector product against the gemm: 128 / 256 tokens +54% / +11-16% with either ISA;
    /// 384 / 512 / 1024 tokens +3-11% / +4% / -1-6% with AVX-512, 384 / 512 -5-7% with AVX2.
    static var fewRows: Int { InstructionSet.best == .avx512 ? 576 : 288 }
    /// Floats of a quantised weight dequantised at once for the input gradient (16 MB; tests
    /// make it small to run several panels).
    nonisolated(unsafe) static var backwardPanelElements = 1 << 22

    /// The blocks as quantised rows for a stacked product, or nil when one is dense.
    var quantizedRows: [QuantizedRows]? {
        var parts: [QuantizedRows] = []
        for block in blocks {
            guard case .quantized(let type, let bytes, let rows, _) = block else { return nil }
            parts.append(QuantizedRows(type: type, weights: bytes, rows: rows))
        }
        return parts
    }
}

/// out (rows, OUT) = inp (rows, IN) · Wᵀ + b (+ the LoRA adapters' updates; `trainingSeed`
/// turns their dropout on).
func linearForward(out: FloatBuffer, inp: UnsafeBufferPointer<Float>, _ linear: Linear, rows: Int,
                   trainingSeed: UInt64? = nil, workspace: Workspace) {
    let pool = workspace.pool, outputs = linear.outputs, inputs = linear.inputs
    // A few rows (a batch of decoding sequences) through quantised blocks, as a fused q|k|v or
    // gate|up: one multi-vector product over all the blocks.
    let stacked = (2...Linear.fewRows).contains(rows) ? linear.quantizedRows : nil
    if let stacked { quantizedMatmul(stacked, k: inputs, n: rows, x: inp, ldx: inputs, y: out, ldy: outputs, pool: pool) }
    var first = 0
    for block in linear.blocks where stacked == nil {
        let n = block.rows
        let target = UnsafeMutableBufferPointer(rebasing: out[first...])
        switch (block, rows) {
        case (.quantized(let type, let bytes, _, _), 1):
            quantizedMatvec(type, rows: n, k: inputs, weights: bytes, x: inp, y: target, pool: pool)
        case (.quantized(let type, let bytes, _, _), _):
            quantizedGemm(type, m: rows, n: n, k: inputs, a: inp, lda: inputs, weights: bytes, c: target, ldc: outputs, pool: pool)
        case (.dense(let w, _, _), 1):
            matvec(rows: n, k: inputs, a: UnsafeBufferPointer(w), lda: inputs, x: inp, y: target, pool: pool)
        case (.dense(let w, _, _), _):
            gemm(.none, .transposed, m: rows, n: n, k: inputs, a: inp, lda: inputs, b: UnsafeBufferPointer(w), ldb: inputs,
                 c: target, ldc: outputs, pool: pool)
        }
        first += n
    }
    if let bias = linear.bias {
        pool.parallelRanges(rows, minimumPerThread: max(1, 16_384 / outputs)) { range in
            for r in range {
                let row = out.baseAddress! + r * outputs
                for o in 0..<outputs { row[o] += bias[o] }
            }
        }
    }
    adaptersForward(out: out, inp: inp, linear, rows: rows, trainingSeed: trainingSeed, workspace: workspace)
}

/// dinp (rows, IN) += dout (rows, OUT) · W;  dW (OUT, IN) += doutᵀ · inp;  db (OUT) += Σ_rows dout.
/// The weight and bias gradients only where `linear` has them (weights that train); the LoRA
/// adapters' gradients where it has adapters.
func linearBackward(dinp: FloatBuffer?, dout: UnsafeBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                    _ linear: Linear, rows: Int, trainingSeed: UInt64? = nil, workspace: Workspace) {
    let pool = workspace.pool, outputs = linear.outputs, inputs = linear.inputs
    if let dinp {
        var first = 0
        for block in linear.blocks {
            // A quantised block is dequantised a panel of rows at a time, so the scratch stays
            // small (SmolLM2's tied output matrix would take 113 MB whole).
            var panel = block.rows
            if case .quantized = block { panel = max(1, Linear.backwardPanelElements / inputs) }
            for start in stride(from: 0, to: block.rows, by: panel) {
                let n = min(panel, block.rows - start)
                gemm(.none, .none, m: rows, n: inputs, k: n, a: UnsafeBufferPointer(rebasing: dout[(first + start)...]), lda: outputs,
                     b: block.dense(rows: start..<(start + n), scratch: workspace), ldb: inputs, beta: 1, c: dinp, ldc: inputs, pool: pool)
            }
            first += block.rows
        }
    }
    if let dW = linear.weightGradient {
        gemm(.transposed, .none, m: outputs, n: inputs, k: rows, a: dout, lda: outputs, b: inp, ldb: inputs,
             beta: 1, c: dW, ldc: inputs, pool: pool)
    }
    if let db = linear.biasGradient {
        // Each column summed over rows in order: the same bits at any thread count.
        pool.parallelRanges(outputs, minimumPerThread: 64) { columns in
            for r in 0..<rows {
                for o in columns { db[o] += dout[r * outputs + o] }
            }
        }
    }
    adaptersBackward(dinp: dinp, dout: dout, inp: inp, linear, rows: rows, trainingSeed: trainingSeed, workspace: workspace)
}
