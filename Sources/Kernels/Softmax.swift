import Foundation

/// Softmax of each row in place, stable: the row's maximum is subtracted before `exp`.
///
///     [1, 2, 3] -> [0.0900, 0.2447, 0.6652]
public func softmaxRows(_ x: UnsafeMutableBufferPointer<Float>, rows: Int, cols: Int) {
    precondition(x.count >= rows * cols, "softmaxRows: buffer too small")
    for r in 0..<rows {
        softmaxRow(x.baseAddress! + r * cols, count: cols)
    }
}

/// Softmax of `count` values at `row`, in place; returns nothing for an empty row.
@inline(__always)
func softmaxRow(_ row: UnsafeMutablePointer<Float>, count: Int) {
    if count == 0 { return }
    var maxValue = -Float.infinity
    for i in 0..<count { maxValue = max(maxValue, row[i]) }
    var sum: Float = 0
    for i in 0..<count {
        let e = exp(row[i] - maxValue)
        row[i] = e
        sum += e
    }
    let scale = 1 / sum
    for i in 0..<count { row[i] *= scale }
}

/// Cross-entropy of each row of logits against its target id, the mean over the rows whose
/// target is not `ignoreIndex` (PyTorch's `F.cross_entropy(..., ignore_index=-100)`).
///
///     logits (rows, vocab); targets (rows); losses (rows): -log softmax(logits[r])[targets[r]],
///     0 where ignored. Returns the mean loss, or 0 when every row is ignored.
/// A target outside 0..<vocab (other than `ignoreIndex`) is a programming error and traps.
@discardableResult
public func crossEntropyForward(losses: UnsafeMutableBufferPointer<Float>,
                                logits: UnsafeBufferPointer<Float>,
                                targets: UnsafeBufferPointer<Int32>, rows: Int, vocab: Int,
                                ignoreIndex: Int32 = -100) -> Float {
    precondition(logits.count >= rows * vocab && targets.count >= rows && losses.count >= rows,
                 "crossEntropyForward: buffer too small")
    var total: Double = 0
    var counted = 0
    for r in 0..<rows {
        let target = targets[r]
        if target == ignoreIndex {
            losses[r] = 0
            continue
        }
        precondition(target >= 0 && Int(target) < vocab, "crossEntropyForward: target \(target) out of range")
        let row = logits.baseAddress! + r * vocab
        let loss = logSumExp(row, count: vocab) - row[Int(target)]
        losses[r] = loss
        total += Double(loss)
        counted += 1
    }
    return counted > 0 ? Float(total / Double(counted)) : 0
}

/// dlogits = (softmax(logits) - onehot(target)) * scale per row, 0 for ignored rows. Pass
/// scale = dloss / (rows not ignored) for the gradient of the mean loss. Writes, not accumulates.
public func crossEntropyBackward(dlogits: UnsafeMutableBufferPointer<Float>,
                                 logits: UnsafeBufferPointer<Float>,
                                 targets: UnsafeBufferPointer<Int32>, rows: Int, vocab: Int,
                                 scale: Float, ignoreIndex: Int32 = -100) {
    precondition(logits.count >= rows * vocab && dlogits.count >= rows * vocab
                 && targets.count >= rows, "crossEntropyBackward: buffer too small")
    for r in 0..<rows {
        let d = dlogits.baseAddress! + r * vocab
        let target = targets[r]
        if target == ignoreIndex {
            d.update(repeating: 0, count: vocab)
            continue
        }
        precondition(target >= 0 && Int(target) < vocab, "crossEntropyBackward: target \(target) out of range")
        d.update(from: logits.baseAddress! + r * vocab, count: vocab)
        softmaxRow(d, count: vocab)
        d[Int(target)] -= 1
        for i in 0..<vocab { d[i] *= scale }
    }
}

/// ln Σ exp(row[i]), computed around the maximum.
func logSumExp(_ row: UnsafePointer<Float>, count: Int) -> Float {
    var maxValue = -Float.infinity
    for i in 0..<count { maxValue = max(maxValue, row[i]) }
    var sum: Float = 0
    for i in 0..<count { sum += exp(row[i] - maxValue) }
    return maxValue + log(sum)
}
