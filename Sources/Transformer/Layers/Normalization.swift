import Kernels

// LayerNorm (GPT-2) or RMSNorm (Llama) over the C features of each row; the kernels are in
// Kernels/Normalization.swift. Forward saves per-row statistics for backward.

/// Per-row statistics a norm saves for backward: mean (LayerNorm only) and 1/std.
struct NormStatistics {
    let mean: FloatBuffer
    let rstd: FloatBuffer
}

/// out (rows, C) = norm(inp (rows, C)) · weight (+ bias).
func normForward(out: FloatBuffer, statistics: NormStatistics, inp: UnsafeBufferPointer<Float>, _ norm: Norm,
                 rows: Int, config: ModelConfig, pool: ThreadPool) {
    let C = config.embeddingSize, weight = UnsafeBufferPointer(norm.weight)
    switch config.norm {
    case .rmsNorm:
        rmsNormForward(out: out, rstd: statistics.rstd, inp: inp, weight: weight, rows: rows, cols: C,
                       epsilon: config.normEpsilon, pool: pool)
    case .layerNorm:
        layerNormForward(out: out, mean: statistics.mean, rstd: statistics.rstd, inp: inp, weight: weight,
                         bias: norm.bias.map { UnsafeBufferPointer($0) }, rows: rows, cols: C,
                         epsilon: config.normEpsilon, pool: pool)
    }
}

/// dinp (rows, C) += d norm / d inp · dout; the weight (and bias) gradients accumulate where the
/// norm has them (a frozen norm's go to a scratch row and are dropped).
func normBackward(dinp: FloatBuffer, dout: UnsafeBufferPointer<Float>, inp: UnsafeBufferPointer<Float>, _ norm: Norm,
                  statistics: NormStatistics, rows: Int, config: ModelConfig) {
    let C = config.embeddingSize, weight = UnsafeBufferPointer(norm.weight)
    let discarded = norm.weightGradient == nil ? FloatBuffer.allocate(capacity: C) : nil
    defer { discarded?.deallocate() }
    discarded?.initialize(repeating: 0)
    let dweight = norm.weightGradient ?? discarded!
    switch config.norm {
    case .rmsNorm:
        rmsNormBackward(dinp: dinp, dweight: dweight, dout: dout, inp: inp, weight: weight,
                        rstd: UnsafeBufferPointer(statistics.rstd), rows: rows, cols: C)
    case .layerNorm:
        layerNormBackward(dinp: dinp, dweight: dweight, dbias: norm.biasGradient, dout: dout, inp: inp, weight: weight,
                          mean: UnsafeBufferPointer(statistics.mean), rstd: UnsafeBufferPointer(statistics.rstd),
                          rows: rows, cols: C)
    }
}
