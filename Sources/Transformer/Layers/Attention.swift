import CKernels
import Kernels

// Causal self-attention with grouped-query heads, one (sequence, query head) at a time; callers
// run the heads in parallel. Query head h reads key/value head h / (NH / NKV).
//
//   q (T, ldq):              the sequence's T new rows, this head's hd columns
//   keys, values (S, ldkv):  positions 0..<S of the sequence (a KV cache, or the batch's own k, v)
//   query t sits at position offset + t and sees keys 0...offset + t  (offset + T <= S)
//   probabilities (T, S):    softmax(q kᵀ / sqrt(hd)) on the causal prefix, 0 after it
//   y (T, ldy):              probabilities · values, this head's hd columns

/// One attention head's forward pass. With `dropout`, the probabilities used for y are dropped
/// out into `dropped` (T, S) while `probabilities` keeps them whole for backward.
func attentionHeadForward(y: UnsafeMutablePointer<Float>, ldy: Int, probabilities: UnsafeMutablePointer<Float>,
                          q: UnsafePointer<Float>, ldq: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                          ldkv: Int, T: Int, S: Int, offset: Int, headSize hd: Int,
                          dropout: (Dropout, site: Int, index: Int, dropped: UnsafeMutablePointer<Float>)? = nil) {
    let scale = 1 / Float(hd).squareRoot(), seen = offset + T, isa = InstructionSet.best.rawValue
    if T <= 4 && dropout == nil {
        // Decoding: a few rows, each a dot product per cached position and a weighted sum.
        for t in 0..<T {
            let p = probabilities + t * S, limit = offset + t + 1, out = y + t * ldy
            for j in 0..<limit { p[j] = sg_dot(isa, hd, q + t * ldq, keys + j * ldkv) * scale }
            _ = sg_softmax_row(isa, limit, p)
            for j in limit..<S { p[j] = 0 }
            out.update(repeating: 0, count: hd)
            for j in 0..<limit {
                let w = p[j], v = values + j * ldkv
                for i in 0..<hd { out[i] += w * v[i] }
            }
        }
        return
    }
    // scores (T, seen) = scale · q kᵀ, then a causal softmax per row.
    gemm(.none, .transposed, m: T, n: seen, k: hd, alpha: scale, a: UnsafeBufferPointer(start: q, count: (T - 1) * ldq + hd),
         lda: ldq, b: UnsafeBufferPointer(start: keys, count: (seen - 1) * ldkv + hd), ldb: ldkv,
         c: UnsafeMutableBufferPointer(start: probabilities, count: (T - 1) * S + seen), ldc: S, pool: .serial)
    for t in 0..<T {
        let p = probabilities + t * S, limit = offset + t + 1
        _ = sg_softmax_row(isa, limit, p)
        for j in limit..<S { p[j] = 0 }
    }
    var used = UnsafePointer(probabilities)
    if let (dropout, site, index, dropped) = dropout {
        for i in 0..<(T * S) { dropped[i] = probabilities[i] * dropout.scale(site: site, index: index + i) }
        used = UnsafePointer(dropped)
    }
    gemm(.none, .none, m: T, n: hd, k: seen, a: UnsafeBufferPointer(start: used, count: (T - 1) * S + seen), lda: S,
         b: UnsafeBufferPointer(start: values, count: (seen - 1) * ldkv + hd), ldb: ldkv,
         c: UnsafeMutableBufferPointer(start: y, count: (T - 1) * ldy + hd), ldc: ldy, pool: .serial)
}

/// The backward pass of the `group` query heads that share one key/value head, over a whole
/// sequence (training: S = T, offset 0). Accumulates dq for each query head and dk, dv for the
/// shared head; running a group together keeps the dk, dv sums in one order on one thread.
///
///   heads[g]: (q, dq, dy, probabilities (T, T), used: the probabilities y was made from)
///   dScores: (T, T) scratch
func attentionGroupBackward(heads: [(q: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                     probabilities: UnsafePointer<Float>, used: UnsafePointer<Float>, dropoutIndex: Int)],
                            ldq: Int, ldy: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                            dKeys: UnsafeMutablePointer<Float>, dValues: UnsafeMutablePointer<Float>, ldkv: Int,
                            T: Int, headSize hd: Int, dScores: UnsafeMutablePointer<Float>, dropout: (Dropout, site: Int)?) {
    let scale = 1 / Float(hd).squareRoot()
    func buffer(_ p: UnsafePointer<Float>, _ rows: Int, _ ld: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: p, count: (rows - 1) * ld + hd)
    }
    func mutable(_ p: UnsafeMutablePointer<Float>, _ rows: Int, _ ld: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: p, count: (rows - 1) * ld + hd)
    }
    let square = UnsafeMutableBufferPointer(start: dScores, count: T * T)
    for head in heads {
        // dP (T, T) = dy · vᵀ;  dv (T, hd) += Pᵀ · dy
        gemm(.none, .transposed, m: T, n: T, k: hd, a: buffer(head.dy, T, ldy), lda: ldy, b: buffer(values, T, ldkv),
             ldb: ldkv, c: square, ldc: T, pool: .serial)
        gemm(.transposed, .none, m: T, n: hd, k: T, a: UnsafeBufferPointer(start: head.used, count: T * T), lda: T,
             b: buffer(head.dy, T, ldy), ldb: ldy, beta: 1, c: mutable(dValues, T, ldkv), ldc: ldkv, pool: .serial)
        // Softmax backward on the causal rows: dS = P ⊙ (dP - Σ P dP), 0 above the diagonal.
        let P = head.probabilities
        for t in 0..<T {
            let row = dScores + t * T
            var dot: Float = 0
            for j in 0...t {
                if let (dropout, site) = dropout { row[j] *= dropout.scale(site: site, index: head.dropoutIndex + t * T + j) }
                dot += P[t * T + j] * row[j]
            }
            for j in 0...t { row[j] = P[t * T + j] * (row[j] - dot) }
            for j in (t + 1)..<T { row[j] = 0 }
        }
        // dq += scale · dS · k;  dk += scale · dSᵀ · q
        gemm(.none, .none, m: T, n: hd, k: T, alpha: scale, a: UnsafeBufferPointer(square), lda: T, b: buffer(keys, T, ldkv),
             ldb: ldkv, beta: 1, c: mutable(head.dq, T, ldq), ldc: ldq, pool: .serial)
        gemm(.transposed, .none, m: T, n: hd, k: T, alpha: scale, a: UnsafeBufferPointer(square), lda: T,
             b: buffer(head.q, T, ldq), ldb: ldq, beta: 1, c: mutable(dKeys, T, ldkv), ldc: ldkv, pool: .serial)
    }
}
