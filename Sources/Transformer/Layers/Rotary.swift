import Foundation
import Kernels

// Rotary position embeddings (RoPE) on the query and key heads of a fused q|k|v buffer. Each
// head's dimension pairs turn by position · θᵢ with θᵢ = base^(-2i/hd); which dimensions form a
// pair is the model's `RotaryPairing`: Hugging Face's halves (i, i + hd/2) or GGUF's adjacent
// (2i, 2i + 1). Backward turns the gradient back by the same angle (a rotation's transpose).

/// θᵢ = base^(-2i/hd) for the hd/2 pairs of a head.
func rotaryFrequencies(_ config: ModelConfig) -> [Double] {
    guard case .rotary(let base) = config.positions else { return [] }
    let hd = config.headSize
    return (0..<(hd / 2)).map { pow(Double(base), -2 * Double($0) / Double(hd)) }
}

/// Rotates the NH query heads and NKV key heads of each row of qkv (rows, ld) in place by its
/// position; `inverse` turns the other way (the backward pass of a gradient).
func rotary(_ qkv: FloatBuffer, rows: Int, ld: Int, positions: UnsafeBufferPointer<Int32>, frequencies: [Double],
            config: ModelConfig, inverse: Bool = false, pool: ThreadPool) {
    let hd = config.headSize, half = hd / 2, heads = config.headCount + config.keyValueHeadCount
    let (stride, partner) = config.rotaryPairing == .halves ? (1, half) : (2, 1)
    let sign: Double = inverse ? -1 : 1
    frequencies.withUnsafeBufferPointer { theta in
        pool.parallelRanges(rows, minimumPerThread: max(1, 4096 / (heads * hd))) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: hd) { table in
                let cosines = table.baseAddress!, sines = cosines + half
                for r in range {
                    let p = Double(positions[r])
                    for i in 0..<half {
                        let angle = p * theta[i]
                        cosines[i] = Float(cos(angle))
                        sines[i] = Float(sign * sin(angle))
                    }
                    // The q heads and then the k heads are consecutive in the row.
                    for h in 0..<heads {
                        let x = qkv.baseAddress! + r * ld + h * hd
                        for i in 0..<half {
                            let a = x[i * stride], b = x[i * stride + partner]
                            x[i * stride] = a * cosines[i] - b * sines[i]
                            x[i * stride + partner] = a * sines[i] + b * cosines[i]
                        }
                    }
                }
            }
        }
    }
}
