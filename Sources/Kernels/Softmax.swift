import CKernels
import Foundation

/// Softmax of each row in place, stable: the row's maximum is subtracted before `exp`
/// (vectorised exp in CKernels).
///
///     [1, 2, 3] -> [0.0900, 0.2447, 0.6652]
public func softmaxRows(_ x: UnsafeMutableBufferPointer<Float>, rows: Int, cols: Int) {
    precondition(x.count >= rows * cols, "softmaxRows: buffer too small")
    for r in 0..<rows {
        _ = sg_softmax_row(InstructionSet.best.rawValue, cols, x.baseAddress! + r * cols)
    }
}

/// The largest of `x` (vectorised); -infinity when empty.
public func maximum(_ x: UnsafeBufferPointer<Float>) -> Float {
    x.isEmpty ? -.infinity : sg_max(x.count, x.baseAddress!)
}

/// Σ exp((x - shift) · scale), each term written to `y` when given (vectorised; `y` may be `x`).
///
///     exponentialSum([0, ln 2], shift: 0, scale: 1) = 3
public func exponentialSum(_ x: UnsafeBufferPointer<Float>, shift: Float, scale: Float,
                           into y: UnsafeMutableBufferPointer<Float>? = nil) -> Float {
    precondition(y.map { $0.count >= x.count } ?? true, "exponentialSum: buffer too small")
    if x.isEmpty { return 0 }
    return sg_exp_shifted(InstructionSet.best.rawValue, x.count, x.baseAddress!, shift, scale, y?.baseAddress)
}

/// log Σ exp(x), stable (the maximum taken out first), without writing anything: a row's
/// log-softmax normaliser. -infinity when empty.
public func logSumExp(_ x: UnsafeBufferPointer<Float>) -> Float {
    let top = maximum(x)
    return x.isEmpty ? top : top + log(exponentialSum(x, shift: top, scale: 1))
}

/// Cross-entropy of each row of logits against its target id, and the mean over the rows whose
/// target is not `ignoreIndex` (PyTorch's `F.cross_entropy(..., ignore_index=-100)`).
///
///     logits (rows, vocab); targets (rows); losses (rows): -log softmax(logits[r])[targets[r]],
///     0 where ignored; probabilities (rows, vocab): softmax(logits), what backward needs.
/// Returns the mean loss, or 0 when every row is ignored. A target outside 0..<vocab (other than
/// `ignoreIndex`) is a programming error and traps: check outside input before.
@discardableResult
public func crossEntropyForward(losses: UnsafeMutableBufferPointer<Float>,
                                probabilities: UnsafeMutableBufferPointer<Float>,
                                logits: UnsafeBufferPointer<Float>,
                                targets: UnsafeBufferPointer<Int32>, rows: Int, vocab: Int,
                                ignoreIndex: Int32 = -100, pool: ThreadPool = .shared) -> Float {
    precondition(logits.count >= rows * vocab && probabilities.count >= rows * vocab
                 && targets.count >= rows && losses.count >= rows, "crossEntropyForward: buffer too small")
    pool.parallelRanges(rows, minimumPerThread: max(1, 32_768 / max(1, vocab))) { range in
        for r in range {
            let row = probabilities.baseAddress! + r * vocab
            row.update(from: logits.baseAddress! + r * vocab, count: vocab)
            let logSumExp = sg_softmax_row(InstructionSet.best.rawValue, vocab, row)
            let target = targets[r]
            if target == ignoreIndex {
                losses[r] = 0
                continue
            }
            precondition(target >= 0 && Int(target) < vocab, "crossEntropyForward: target \(target) out of range")
            losses[r] = logSumExp - logits[r * vocab + Int(target)]
        }
    }
    var total: Double = 0
    var counted = 0
    for r in 0..<rows where targets[r] != ignoreIndex {
        total += Double(losses[r])
        counted += 1
    }
    return counted > 0 ? Float(total / Double(counted)) : 0
}

/// dlogits = (probabilities - onehot(target)) * scale per row, 0 for ignored rows; pass
/// scale = dloss / (rows not ignored) for the gradient of the mean loss. `dlogits` may be the
/// probabilities buffer itself (updated in place). Writes, not accumulates.
public func crossEntropyBackward(dlogits: UnsafeMutableBufferPointer<Float>,
                                 probabilities: UnsafeBufferPointer<Float>,
                                 targets: UnsafeBufferPointer<Int32>, rows: Int, vocab: Int,
                                 scale: Float, ignoreIndex: Int32 = -100, pool: ThreadPool = .shared) {
    precondition(probabilities.count >= rows * vocab && dlogits.count >= rows * vocab
                 && targets.count >= rows, "crossEntropyBackward: buffer too small")
    pool.parallelRanges(rows, minimumPerThread: max(1, 32_768 / max(1, vocab))) { range in
        for r in range {
            let d = dlogits.baseAddress! + r * vocab
            let target = targets[r]
            if target == ignoreIndex {
                d.update(repeating: 0, count: vocab)
                continue
            }
            precondition(target >= 0 && Int(target) < vocab, "crossEntropyBackward: target \(target) out of range")
            let p = probabilities.baseAddress! + r * vocab
            for i in 0..<vocab { d[i] = p[i] * scale }
            d[Int(target)] -= scale
        }
    }
}
