import Kernels
import Transformer

/// AdamW over a model's parameters with nanoGPT's two groups: matrices take weight decay,
/// biases and norm gains do not. Moments live in two buffers the size of the parameters.
public final class AdamWOptimizer: @unchecked Sendable {
    public var settings: AdamWSettings
    public let firstMoment: UnsafeMutableBufferPointer<Float>
    public let secondMoment: UnsafeMutableBufferPointer<Float>
    /// Updates taken so far (the bias correction uses step + 1 for the next one).
    public var step = 0

    public init(parameterCount: Int, settings: AdamWSettings) {
        self.settings = settings
        firstMoment = .allocate(capacity: parameterCount)
        firstMoment.initialize(repeating: 0)
        secondMoment = .allocate(capacity: parameterCount)
        secondMoment.initialize(repeating: 0)
    }

    deinit {
        firstMoment.deallocate()
        secondMoment.deallocate()
    }

    /// One update of every tensor `model` trains (its adapters', when attached) from their
    /// gradients, at `learningRate`.
    public func update(_ model: LanguageModel, learningRate: Float) {
        let trained = model.trainedTensors
        precondition(trained.values.count >= firstMoment.count, "AdamWOptimizer: sized for other tensors")
        step += 1
        for entry in trained.layout.entries {
            let range = entry.range
            var groupSettings = settings
            groupSettings.learningRate = learningRate
            if !entry.decays { groupSettings.weightDecay = 0 }
            adamWUpdate(parameters: UnsafeMutableBufferPointer(rebasing: trained.values[range]),
                        gradients: UnsafeBufferPointer(rebasing: trained.gradients[range]),
                        firstMoment: UnsafeMutableBufferPointer(rebasing: firstMoment[range]),
                        secondMoment: UnsafeMutableBufferPointer(rebasing: secondMoment[range]),
                        count: entry.count, step: step, settings: groupSettings, pool: model.pool)
        }
    }
}

/// Scales the gradients so their global L2 norm is at most `maxNorm`; returns the norm before
/// clipping. Sums of squares are taken in Double over fixed blocks of 64K and added in block
/// order, so the result is the same at any thread count.
@discardableResult
public func clipGradientNorm(_ gradients: UnsafeMutableBufferPointer<Float>, maxNorm: Float,
                             pool: ThreadPool = .shared) -> Float {
    let block = 65_536, blocks = (gradients.count + block - 1) / block
    var partial = [Double](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { partial in
        pool.parallelRanges(blocks, minimumPerThread: 4) { range in
            for b in range {
                let end = min(gradients.count, (b + 1) * block)
                var lanes = SIMD8<Double>()
                var i = b * block
                while i + 8 <= end {
                    let x = SIMD8<Double>(UnsafeRawPointer(gradients.baseAddress! + i).loadUnaligned(as: SIMD8<Float>.self))
                    lanes += x * x
                    i += 8
                }
                var sum = lanes.sum()
                while i < end { sum += Double(gradients[i]) * Double(gradients[i]); i += 1 }
                partial[b] = sum
            }
        }
    }
    let norm = Float(partial.reduce(0, +).squareRoot())
    if maxNorm > 0 && norm > maxNorm {
        let scale = maxNorm / (norm + 1e-6)
        pool.parallelRanges(gradients.count, minimumPerThread: 65_536) { range in
            for i in range { gradients[i] *= scale }
        }
    }
    return norm
}
