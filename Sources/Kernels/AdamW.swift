import Foundation

/// Hyperparameters of AdamW (Loshchilov & Hutter), PyTorch's defaults but for betas, which
/// follow GPT-2 training (0.9, 0.95).
public struct AdamWSettings: Sendable, Equatable, Codable {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float

    public init(learningRate: Float = 6e-4, beta1: Float = 0.9, beta2: Float = 0.95,
                epsilon: Float = 1e-8, weightDecay: Float = 0.1) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }
}

/// One AdamW update of `count` parameters in place, exactly as `torch.optim.AdamW` (decoupled
/// weight decay applied first, bias-corrected moments):
///
///     p -= lr * wd * p
///     m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g²
///     p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
///
/// `step` is 1 for the first update. Pass weightDecay 0 in `settings` for biases and norms.
public func adamWUpdate(parameters: UnsafeMutableBufferPointer<Float>,
                        gradients: UnsafeBufferPointer<Float>,
                        firstMoment m: UnsafeMutableBufferPointer<Float>,
                        secondMoment v: UnsafeMutableBufferPointer<Float>,
                        count: Int, step: Int, settings: AdamWSettings,
                        pool: ThreadPool = .shared) {
    precondition(step >= 1, "adamWUpdate: step counts from 1")
    precondition(parameters.count >= count && gradients.count >= count && m.count >= count
                 && v.count >= count, "adamWUpdate: buffer too small")
    let s = settings
    let correction1 = 1 - pow(s.beta1, Float(step))
    let correction2 = 1 - pow(s.beta2, Float(step))
    let decay = 1 - s.learningRate * s.weightDecay
    // SIMD16 lanes (the division and square root vectorise even on baseline x86-64); the update
    // is bound by memory: 28 bytes read or written per parameter.
    let b1 = SIMD16<Float>(repeating: s.beta1), b2 = SIMD16<Float>(repeating: s.beta2)
    let c1 = SIMD16<Float>(repeating: 1 / correction1), c2 = SIMD16<Float>(repeating: 1 / correction2)
    let rate = SIMD16<Float>(repeating: s.learningRate), eps = SIMD16<Float>(repeating: s.epsilon)
    let keep = SIMD16<Float>(repeating: decay)
    pool.parallelRanges(count / 16, minimumPerThread: 2048) { blocks in
        let p = UnsafeMutableRawPointer(parameters.baseAddress!), g = UnsafeRawPointer(gradients.baseAddress!)
        let mp = UnsafeMutableRawPointer(m.baseAddress!), vp = UnsafeMutableRawPointer(v.baseAddress!)
        for block in blocks {
            let offset = block * 64
            let gi = g.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            let mi = b1 * mp.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self) + (1 - b1) * gi
            let vi = b2 * vp.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self) + (1 - b2) * gi * gi
            mp.storeBytes(of: mi, toByteOffset: offset, as: SIMD16<Float>.self)
            vp.storeBytes(of: vi, toByteOffset: offset, as: SIMD16<Float>.self)
            let pi = p.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
            p.storeBytes(of: pi * keep - rate * (mi * c1) / ((vi * c2).squareRoot() + eps), toByteOffset: offset,
                         as: SIMD16<Float>.self)
        }
    }
    for i in (count / 16 * 16)..<count {
        let g = gradients[i]
        let mi = s.beta1 * m[i] + (1 - s.beta1) * g
        let vi = s.beta2 * v[i] + (1 - s.beta2) * g * g
        m[i] = mi
        v[i] = vi
        parameters[i] = parameters[i] * decay - s.learningRate * (mi / correction1) / ((vi / correction2).squareRoot() + s.epsilon)
    }
}
