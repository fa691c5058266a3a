import Foundation

// LayerNorm and RMSNorm over the last dimension of a (rows, cols) buffer, llm.c style:
// forward saves per-row statistics, backward *accumulates* into dinp and the parameter grads.

/// out = (inp - mean) * rstd * weight + bias, row by row; saves mean and rstd (one per row).
///
///     inp, out are (rows, cols); weight, bias are (cols); mean, rstd are (rows)
public func layerNormForward(out: UnsafeMutableBufferPointer<Float>,
                             mean: UnsafeMutableBufferPointer<Float>,
                             rstd: UnsafeMutableBufferPointer<Float>,
                             inp: UnsafeBufferPointer<Float>, weight: UnsafeBufferPointer<Float>,
                             bias: UnsafeBufferPointer<Float>?, rows: Int, cols: Int,
                             epsilon: Float = 1e-5, pool: ThreadPool = .shared) {
    precondition(inp.count >= rows * cols && out.count >= rows * cols && weight.count >= cols
                 && mean.count >= rows && rstd.count >= rows && (bias?.count ?? cols) >= cols,
                 "layerNormForward: buffer too small")
    pool.parallelRanges(rows, minimumPerThread: max(1, 16_384 / max(1, cols))) { range in
        for r in range {
            let x = inp.baseAddress! + r * cols, y = out.baseAddress! + r * cols
            let m = laneSum(x, cols) { $0 } / Float(cols)
            let variance = laneSum(x, cols) { ($0 - m) * ($0 - m) }
            let s = 1 / (variance / Float(cols) + epsilon).squareRoot()
            for i in 0..<cols {
                let normalized = (x[i] - m) * s
                y[i] = normalized * weight[i] + (bias?[i] ?? 0)
            }
            mean[r] = m
            rstd[r] = s
        }
    }
}

/// Accumulates the gradients of `layerNormForward`: dinp += ..., dweight += ..., dbias += ...
///
/// Runs on one thread: the parameter gradients are sums over all rows, and a fixed order keeps
/// the bits the same at any thread count.
public func layerNormBackward(dinp: UnsafeMutableBufferPointer<Float>,
                              dweight: UnsafeMutableBufferPointer<Float>,
                              dbias: UnsafeMutableBufferPointer<Float>?,
                              dout: UnsafeBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                              weight: UnsafeBufferPointer<Float>,
                              mean: UnsafeBufferPointer<Float>, rstd: UnsafeBufferPointer<Float>,
                              rows: Int, cols: Int) {
    precondition(dinp.count >= rows * cols && dout.count >= rows * cols && inp.count >= rows * cols
                 && dweight.count >= cols && (dbias?.count ?? cols) >= cols
                 && mean.count >= rows && rstd.count >= rows, "layerNormBackward: buffer too small")
    for r in 0..<rows {
        let x = inp.baseAddress! + r * cols, dy = dout.baseAddress! + r * cols
        let dx = dinp.baseAddress! + r * cols
        let m = mean[r], s = rstd[r]
        // Two reductions: mean(w*dy) and mean(w*dy*xhat).
        var dnormMean: Float = 0, dnormDotX: Float = 0
        for i in 0..<cols {
            let xhat = (x[i] - m) * s
            let dnorm = weight[i] * dy[i]
            dnormMean += dnorm
            dnormDotX += dnorm * xhat
        }
        dnormMean /= Float(cols)
        dnormDotX /= Float(cols)
        for i in 0..<cols {
            let xhat = (x[i] - m) * s
            dbias?[i] += dy[i]
            dweight[i] += xhat * dy[i]
            dx[i] += (weight[i] * dy[i] - dnormMean - xhat * dnormDotX) * s
        }
    }
}

/// out = inp * rstd * weight with rstd = 1 / sqrt(mean(inp²) + epsilon), row by row (Llama).
public func rmsNormForward(out: UnsafeMutableBufferPointer<Float>,
                           rstd: UnsafeMutableBufferPointer<Float>,
                           inp: UnsafeBufferPointer<Float>, weight: UnsafeBufferPointer<Float>,
                           rows: Int, cols: Int, epsilon: Float = 1e-5,
                           pool: ThreadPool = .shared) {
    precondition(inp.count >= rows * cols && out.count >= rows * cols && weight.count >= cols
                 && rstd.count >= rows, "rmsNormForward: buffer too small")
    pool.parallelRanges(rows, minimumPerThread: max(1, 16_384 / max(1, cols))) { range in
        for r in range {
            let x = inp.baseAddress! + r * cols, y = out.baseAddress! + r * cols
            let squares = laneSum(x, cols) { $0 * $0 }
            let s = 1 / (squares / Float(cols) + epsilon).squareRoot()
            for i in 0..<cols { y[i] = x[i] * s * weight[i] }
            rstd[r] = s
        }
    }
}

/// Accumulates the gradients of `rmsNormForward` (dinp += ..., dweight += ...), on one thread.
public func rmsNormBackward(dinp: UnsafeMutableBufferPointer<Float>,
                            dweight: UnsafeMutableBufferPointer<Float>,
                            dout: UnsafeBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                            weight: UnsafeBufferPointer<Float>, rstd: UnsafeBufferPointer<Float>,
                            rows: Int, cols: Int) {
    precondition(dinp.count >= rows * cols && dout.count >= rows * cols && inp.count >= rows * cols
                 && dweight.count >= cols && rstd.count >= rows, "rmsNormBackward: buffer too small")
    for r in 0..<rows {
        let x = inp.baseAddress! + r * cols, dy = dout.baseAddress! + r * cols
        let dx = dinp.baseAddress! + r * cols
        let s = rstd[r]
        // dx_i = s * w_i * dy_i - s³ / C * x_i * Σ_j w_j dy_j x_j
        var dot: Float = 0
        for i in 0..<cols { dot += weight[i] * dy[i] * x[i] }
        let correction = s * s * s * dot / Float(cols)
        for i in 0..<cols {
            dweight[i] += dy[i] * x[i] * s
            dx[i] += s * weight[i] * dy[i] - correction * x[i]
        }
    }
}

/// Σ term(x[i]) for i < count in 16 running sums added at the end: the vector form of a loop
/// that a compiler keeps scalar (it may not reorder float additions). A row of 576 took a chain
/// of 576 dependent adds.
@inline(__always)
func laneSum(_ x: UnsafePointer<Float>, _ count: Int, _ term: (SIMD16<Float>) -> SIMD16<Float>) -> Float {
    var lanes = SIMD16<Float>(), i = 0
    while i + 16 <= count {
        lanes += term(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self))
        i += 16
    }
    var rest = SIMD16<Float>()
    for j in 0..<(count - i) { rest[j] = x[i + j] }
    let tail = term(rest), used = count - i
    var total = lanes.sum()
    for j in 0..<used { total += tail[j] }
    return total
}
