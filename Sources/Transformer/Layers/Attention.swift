import CKernels
import Kernels

// Causal self-attention with grouped-query heads, one (sequence, query head) at a time; callers
// run the heads in parallel. Query head h reads key/value head h / (NH / NKV).
//
//   q (T, ldq):              the sequence's T new rows, this head's hd columns
//   kv:                      positions 0..<S of the sequence (a paged KV cache, or the batch's own k, v)
//   query t sits at position offset + t and sees keys 0...offset + t  (offset + T <= S)
//   probabilities (T, S):    softmax(q kᵀ / sqrt(hd)) on the causal prefix, 0 after it
//   y (T, ldy):              probabilities · values, this head's hd columns

/// Where one key/value head's rows for positions 0..<S are: contiguous fp32 rows `ld` apart (a
/// training batch's own k and v), or blocks of `blockSize` positions of a `KVBlockPool` (fp32 or
/// fp16) through a block table (a sequence's cache).
struct KeyValueRows {
    /// Position 0's key and value (contiguous), or block 0's of the pool (paged), at this head's column.
    let keys: UnsafeRawPointer, values: UnsafeRawPointer
    /// Elements between rows.
    let ld: Int
    let table: UnsafePointer<Int32>?
    let blockSize: Int
    let storage: KVStorage

    static func contiguous(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, ld: Int) -> KeyValueRows {
        KeyValueRows(keys: UnsafeRawPointer(keys), values: UnsafeRawPointer(values), ld: ld, table: nil, blockSize: Int.max, storage: .f32)
    }

    /// Calls `body(first position, count, keys, values)` for each run of consecutive positions below `S`.
    @inline(__always)
    func forEachRun(below S: Int, _ body: (Int, Int, UnsafeRawPointer, UnsafeRawPointer) -> Void) {
        guard let table else { return body(0, S, keys, values) }
        var first = 0, block = 0
        while first < S {
            let offset = Int(table[block]) * blockSize * ld * storage.bytes
            body(first, min(blockSize, S - first), keys + offset, values + offset)
            first += blockSize
            block += 1
        }
    }
}

/// Decoding rows (a few new rows of one sequence, no dropout) of `keyValueHeads` consecutive
/// key/value heads and the `group` query heads that read each: every cached key and value is
/// loaded once for its group, and a run of positions is read for all the heads in turn (whole
/// cache blocks stream through the cache once).
///   q: the first query head's columns of row 0; query heads are `hd` apart in a row, as in y;
///      kv: the first key/value head's rows, the others `hd` columns further each
///   probabilities: query head i's row t at probabilities + i · headStride + t · S
func attentionGroupDecode(y: UnsafeMutablePointer<Float>, ldy: Int, probabilities: UnsafeMutablePointer<Float>, headStride: Int,
                          q: UnsafePointer<Float>, ldq: Int, group: Int, keyValueHeads: Int = 1, kv: KeyValueRows, T: Int, S: Int,
                          offset: Int, headSize hd: Int) {
    let scale = 1 / Float(hd).squareRoot(), isa = InstructionSet.best.rawValue, heads = group * keyValueHeads
    let half: Int32 = kv.storage == .f16 ? 1 : 0
    for t in 0..<T {
        let p = probabilities + t * S, limit = offset + t + 1, out = y + t * ldy, queries = q + t * ldq
        kv.forEachRun(below: limit) { first, n, keys, _ in
            for g in 0..<keyValueHeads {
                sg_attention_scores(isa, half, group, n, hd, queries + g * group * hd, hd, keys + g * hd * kv.storage.bytes, kv.ld, scale,
                                    p + g * group * headStride + first, headStride)
            }
        }
        for i in 0..<heads {
            let row = p + i * headStride
            _ = sg_softmax_row(isa, limit, row)
            for j in limit..<S { row[j] = 0 }
        }
        out.update(repeating: 0, count: heads * hd)
        kv.forEachRun(below: limit) { first, n, _, values in
            for g in 0..<keyValueHeads {
                sg_attention_values(isa, half, group, n, hd, p + g * group * headStride + first, headStride, values + g * hd * kv.storage.bytes,
                                    kv.ld, out + g * group * hd, hd)
            }
        }
    }
}

/// One attention head's forward pass over a sequence's rows, through a gemm per run of keys.
/// With `dropout`, the probabilities used for y are dropped out into `dropped` (T, S) while
/// `probabilities` keeps them whole for backward.
///
/// Rows go in blocks of 64: a block's rows see only the keys up to its last row, so the causal
/// half of the scores past them is neither computed nor multiplied (it is set to 0 for backward).
func attentionHeadForward(y: UnsafeMutablePointer<Float>, ldy: Int, probabilities: UnsafeMutablePointer<Float>,
                          q: UnsafePointer<Float>, ldq: Int, kv: KeyValueRows, T: Int, S: Int, offset: Int, headSize hd: Int,
                          dropout: (Dropout, site: Int, index: Int, dropped: UnsafeMutablePointer<Float>)? = nil) {
    precondition(kv.storage == .f32, "attentionHeadForward reads fp32 rows (a prompt chunk gathers fp16 ones first)")
    let scale = 1 / Float(hd).squareRoot(), isa = InstructionSet.best.rawValue, blockRows = 64
    // scores (rows, seen) = scale · q kᵀ, run by run, then a causal softmax per row.
    for r0 in stride(from: 0, to: T, by: blockRows) {
        let rows = min(blockRows, T - r0), seen = offset + r0 + rows
        let queries = UnsafeBufferPointer(start: q + r0 * ldq, count: (rows - 1) * ldq + hd)
        kv.forEachRun(below: seen) { first, n, keys, _ in
            gemm(.none, .transposed, m: rows, n: n, k: hd, alpha: scale, a: queries, lda: ldq,
                 b: UnsafeBufferPointer(start: keys.assumingMemoryBound(to: Float.self), count: (n - 1) * kv.ld + hd), ldb: kv.ld,
                 c: UnsafeMutableBufferPointer(start: probabilities + r0 * S + first, count: (rows - 1) * S + n), ldc: S, pool: .serial)
        }
    }
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
    for r0 in stride(from: 0, to: T, by: blockRows) {
        let rows = min(blockRows, T - r0), seen = offset + r0 + rows
        let out = UnsafeMutableBufferPointer(start: y + r0 * ldy, count: (rows - 1) * ldy + hd)
        kv.forEachRun(below: seen) { first, n, _, values in
            gemm(.none, .none, m: rows, n: hd, k: n, a: UnsafeBufferPointer(start: used + r0 * S + first, count: (rows - 1) * S + n), lda: S,
                 b: UnsafeBufferPointer(start: values.assumingMemoryBound(to: Float.self), count: (n - 1) * kv.ld + hd), ldb: kv.ld,
                 beta: first == 0 ? 0 : 1, c: out, ldc: ldy, pool: .serial)
        }
    }
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
