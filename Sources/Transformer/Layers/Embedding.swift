import Kernels

// Token (and learned position) embeddings.

/// out (rows, C) = tokenTable[tokens[r]] (+ positionTable[positions[r]]).
func embeddingForward(out: FloatBuffer, tokens: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>,
                      token: Embedding, position: Embedding?, rows: Int, pool: ThreadPool) {
    let C = token.table.columns
    pool.parallelRanges(rows, minimumPerThread: max(1, 8192 / C)) { range in
        for r in range {
            let row = out.baseAddress! + r * C
            token.table.row(Int(tokens[r]), into: row)
            if case .dense(let table, _, _)? = position?.table {
                let p = table.baseAddress! + Int(positions[r]) * C
                for i in 0..<C { row[i] += p[i] }
            } else if let position {
                preconditionFailure("embeddingForward: position table \(position.table.rows) rows must be fp32")
            }
        }
    }
}

/// dTokenTable[tokens[r]] += dout[r] (and the position table likewise), row by row in order so
/// that repeated tokens sum in the same order at any thread count.
func embeddingBackward(dout: UnsafeBufferPointer<Float>, tokens: UnsafeBufferPointer<Int32>,
                       positions: UnsafeBufferPointer<Int32>, token: Embedding, position: Embedding?, rows: Int, columns C: Int) {
    for r in 0..<rows {
        let g = dout.baseAddress! + r * C
        if let dTable = token.gradient {
            let d = dTable.baseAddress! + Int(tokens[r]) * C
            for i in 0..<C { d[i] += g[i] }
        }
        if let dTable = position?.gradient {
            let d = dTable.baseAddress! + Int(positions[r]) * C
            for i in 0..<C { d[i] += g[i] }
        }
    }
}
