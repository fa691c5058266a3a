import Foundation
import Kernels

// Rotary position embeddings (RoPE) on the query and key heads of a fused q|k|v buffer. Each
// head's dimension pairs turn by position · θᵢ with θᵢ = base^(-2i/hd); which dimensions form a
// pair is the model's `RotaryPairing`: Hugging Face's halves (i, i + hd/2) or GGUF's adjacent
// (2i, 2i + 1). Backward turns the gradient back by the same angle (a rotation's transpose).
// The angles' cos and sin are computed once per pass (`RotaryTable`), not once per layer.

/// θᵢ = base^(-2i/hd) for the hd/2 pairs of a head.
func rotaryFrequencies(_ config: ModelConfig) -> [Double] {
    guard case .rotary(let base) = config.positions else { return [] }
    let hd = config.headSize
    return (0..<(hd / 2)).map { pow(Double(base), -2 * Double($0) / Double(hd)) }
}

/// cos and sin of position · θᵢ for every row of a pass, (rows, hd/2) each: the positions are the
/// same in every layer, so the table is computed once per pass (and kept for backward).
struct RotaryTable {
    let cosines: [Float], sines: [Float]
    let half: Int

    init(positions: UnsafeBufferPointer<Int32>, frequencies: [Double]) {
        half = frequencies.count
        var cosines = [Float](repeating: 0, count: positions.count * half), sines = cosines
        for (r, position) in positions.enumerated() {
            let p = Double(position)
            for i in 0..<half {
                let angle = p * frequencies[i]
                cosines[r * half + i] = Float(cos(angle))
                sines[r * half + i] = Float(sin(angle))
            }
        }
        self.cosines = cosines
        self.sines = sines
    }
}

/// Rotates the NH query heads and NKV key heads of each row of qkv (rows, ld) in place by its
/// position (row r of `table`); `inverse` turns the other way (the backward pass of a gradient).
func rotary(_ qkv: FloatBuffer, rows: Int, ld: Int, table: RotaryTable, config: ModelConfig, inverse: Bool = false,
            pool: ThreadPool) {
    let hd = config.headSize, half = hd / 2, heads = config.headCount + config.keyValueHeadCount
    precondition(table.half == half && table.cosines.count >= rows * half, "rotary: the table does not fit the rows")
    let (stride, partner) = config.rotaryPairing == .halves ? (1, half) : (2, 1)
    let sign: Float = inverse ? -1 : 1
    table.cosines.withUnsafeBufferPointer { cosines in
        table.sines.withUnsafeBufferPointer { sines in
            pool.parallelRanges(rows, minimumPerThread: max(1, 4096 / (heads * hd))) { range in
                for r in range {
                    let c = cosines.baseAddress! + r * half, s = sines.baseAddress! + r * half
                    // The q heads and then the k heads are consecutive in the row.
                    for h in 0..<heads {
                        let x = qkv.baseAddress! + r * ld + h * hd
                        for i in 0..<half {
                            let a = x[i * stride], b = x[i * stride + partner], sn = sign * s[i]
                            x[i * stride] = a * c[i] - b * sn
                            x[i * stride + partner] = a * sn + b * c[i]
                        }
                    }
                }
            }
        }
    }
}
