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
    pool.parallelRanges(count, minimumPerThread: 32_768) { range in
        for i in range {
            let g = gradients[i]
            let mi = s.beta1 * m[i] + (1 - s.beta1) * g
            let vi = s.beta2 * v[i] + (1 - s.beta2) * g * g
            m[i] = mi
            v[i] = vi
            let mHat = mi / correction1
            let vHat = vi / correction2
            parameters[i] = parameters[i] * decay - s.learningRate * mHat / (vHat.squareRoot() + s.epsilon)
        }
    }
}
