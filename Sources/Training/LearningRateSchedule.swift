import Foundation

/// Linear warmup from 0 to `peak`, then cosine decay to `minimum` at `totalSteps`, as in
/// nanoGPT's `get_lr` and llm.c: steps are 0-based, and step `s < warmup` gets
/// `peak * (s + 1) / warmup`.
///
///     let schedule = LearningRateSchedule(peak: 6e-4, minimum: 6e-5, warmupSteps: 100, totalSteps: 1000)
///     schedule.rate(at: 0)     // 6e-6
///     schedule.rate(at: 550)   // 3.3e-4, halfway down the cosine
public struct LearningRateSchedule: Sendable, Equatable {
    public var peak: Float
    public var minimum: Float
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Float, minimum: Float = 0, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak
        self.minimum = minimum
        self.warmupSteps = max(0, warmupSteps)
        self.totalSteps = max(totalSteps, self.warmupSteps)
    }

    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        if step >= totalSteps { return minimum }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        let coefficient = 0.5 * (1 + cos(Double.pi * progress))
        return minimum + Float(coefficient) * (peak - minimum)
    }
}
