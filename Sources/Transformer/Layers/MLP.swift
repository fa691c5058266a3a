import CKernels
import Foundation
import Kernels

// The MLP's nonlinearity between its two projections: GELU (tanh form) or ReLU on (rows, H), or
// SwiGLU on the fused gate|up projection (rows, 2H): out = silu(gate) ⊙ up.

/// out (rows, H) = f(inp), inp (rows, H), or (rows, 2H) gate|up for SwiGLU.
func activationForward(out: FloatBuffer, inp: UnsafeBufferPointer<Float>, rows: Int, hidden H: Int,
                       activation: ModelConfig.Activation, pool: ThreadPool) {
    switch activation {
    case .gelu, .relu:
        pool.parallelRanges(rows * H, minimumPerThread: 16_384) { range in
            let o = UnsafeMutableBufferPointer(rebasing: out[range]), x = UnsafeBufferPointer(rebasing: inp[range])
            if activation == .relu { reluForward(out: o, inp: x, count: range.count) } else { geluForward(out: o, inp: x, count: range.count) }
        }
    case .swiglu:
        pool.parallelRanges(rows, minimumPerThread: max(1, 8192 / H)) { range in
            for r in range {
                let gate = inp.baseAddress! + r * 2 * H
                sg_swiglu(InstructionSet.best.rawValue, H, gate, gate + H, out.baseAddress! + r * H)
            }
        }
    }
}

/// dinp += d f / d inp · dout, shapes as in `activationForward`.
func activationBackward(dinp: FloatBuffer, inp: UnsafeBufferPointer<Float>, dout: UnsafeBufferPointer<Float>,
                        rows: Int, hidden H: Int, activation: ModelConfig.Activation, pool: ThreadPool) {
    switch activation {
    case .gelu, .relu:
        pool.parallelRanges(rows * H, minimumPerThread: 16_384) { range in
            let d = UnsafeMutableBufferPointer(rebasing: dinp[range]), x = UnsafeBufferPointer(rebasing: inp[range])
            let g = UnsafeBufferPointer(rebasing: dout[range])
            if activation == .relu {
                reluBackward(dinp: d, inp: x, dout: g, count: range.count)
            } else {
                geluBackward(dinp: d, inp: x, dout: g, count: range.count)
            }
        }
    case .swiglu:
        // d up = dout · silu(gate);  d gate = dout · up · sigmoid(gate) (1 + gate (1 - sigmoid(gate)))
        pool.parallelRanges(rows, minimumPerThread: max(1, 8192 / H)) { range in
            for r in range {
                let gate = inp.baseAddress! + r * 2 * H, up = gate + H, dy = dout.baseAddress! + r * H
                let dGate = dinp.baseAddress! + r * 2 * H, dUp = dGate + H
                for i in 0..<H {
                    let g = gate[i], sigmoid = 1 / (1 + exp(-g))
                    dUp[i] += dy[i] * g * sigmoid
                    dGate[i] += dy[i] * up[i] * sigmoid * (1 + g * (1 - sigmoid))
                }
            }
        }
    }
}
