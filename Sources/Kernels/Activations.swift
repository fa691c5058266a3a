import Foundation

// Elementwise activations. Forward writes `out`; backward *accumulates* dinp += f'(inp) * dout.

private let geluScale = Float((2.0 / Double.pi).squareRoot())

/// GELU, tanh form (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))).
public func geluForward(out: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                        count: Int) {
    precondition(out.count >= count && inp.count >= count, "geluForward: buffer too small")
    for i in 0..<count {
        let x = inp[i]
        out[i] = 0.5 * x * (1 + tanh(geluScale * (x + 0.044715 * x * x * x)))
    }
}

public func geluBackward(dinp: UnsafeMutableBufferPointer<Float>, inp: UnsafeBufferPointer<Float>,
                         dout: UnsafeBufferPointer<Float>, count: Int) {
    precondition(dinp.count >= count && inp.count >= count && dout.count >= count,
                 "geluBackward: buffer too small")
    for i in 0..<count {
        let x = inp[i]
        let t = tanh(geluScale * (x + 0.044715 * x * x * x))
        let dt = (1 - t * t) * geluScale * (1 + 3 * 0.044715 * x * x)
        dinp[i] += (0.5 * (1 + t) + 0.5 * x * dt) * dout[i]
    }
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
