import CKernels
import Foundation

// Elementwise activations. Forward writes `out`; backward *accumulates* dinp += f'(inp) * dout.

/// GELU, tanh form (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))).
/// Vectorised in CKernels (tanh through a polynomial exp).
public func geluForward(out: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                        count: Int) {
    precondition(out.count >= count && inp.count >= count, "geluForward: buffer too small")
    sg_gelu_forward(InstructionSet.best.rawValue, count, inp.baseAddress!, out.baseAddress!)
}

public func geluBackward(dinp: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                         dout: UnsafeBufferPointer<Float>, count: Int) {
    precondition(dinp.count >= count && inp.count >= count && dout.count >= count,
                 "geluBackward: buffer too small")
    sg_gelu_backward(InstructionSet.best.rawValue, count, inp.baseAddress!, dout.baseAddress!, dinp.baseAddress!)
}

/// ReLU: max(0, x); its gradient at 0 is taken as 0, as PyTorch does.
public func reluForward(out: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                        count: Int) {
    precondition(out.count >= count && inp.count >= count, "reluForward: buffer too small")
    for i in 0..<count { out[i] = max(0, inp[i]) }
}

public func reluBackward(dinp: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                         dout: UnsafeBufferPointer<Float>, count: Int) {
    precondition(dinp.count >= count && inp.count >= count && dout.count >= count,
                 "reluBackward: buffer too small")
    for i in 0..<count where inp[i] > 0 { dinp[i] += dout[i] }
}

/// SiLU (swish): x * sigmoid(x), Llama's gate.
public func siluForward(out: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                        count: Int) {
    precondition(out.count >= count && inp.count >= count, "siluForward: buffer too small")
    for i in 0..<count {
        let x = inp[i]
        out[i] = x / (1 + exp(-x))
    }
}

public func siluBackward(dinp: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                         dout: UnsafeBufferPointer<Float>, count: Int) {
    precondition(dinp.count >= count && inp.count >= count && dout.count >= count,
                 "siluBackward: buffer too small")
    for i in 0..<count {
        let x = inp[i]
        let sigmoid = 1 / (1 + exp(-x))
        dinp[i] += sigmoid * (1 + x * (1 - sigmoid)) * dout[i]
    }
}
