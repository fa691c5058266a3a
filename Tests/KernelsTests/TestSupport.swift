import Kernels

/// Uniform values in [-1, 1) from a fixed seed.
func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in generator.nextUnitFloat() * 2 - 1 }
}

/// The largest |a - b| over two arrays of equal length.
func maxAbsDifference(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
}

/// Central finite difference of `f` with respect to each of `x`, in float64.
func numericalGradient(_ x: [Double], step: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var probe = x
    return x.indices.map { i in
        probe[i] = x[i] + step
        let up = f(probe)
        probe[i] = x[i] - step
        let down = f(probe)
        probe[i] = x[i]
        return (up - down) / (2 * step)
    }
}

/// A heap buffer for kernel tests: the kernels take pointers, the assertions want arrays.
/// The pointers live as long as the Buffer: keep it alive (withExtendedLifetime) past the last
/// kernel call that uses them.
final class Buffer {
    let pointer: UnsafeMutableBufferPointer<Float>

    init(_ values: [Float]) {
        pointer = .allocate(capacity: max(1, values.count))
        pointer.initialize(repeating: 0)
        _ = pointer.update(fromContentsOf: values)
    }

    convenience init(count: Int, value: Float = 0) {
        self.init([Float](repeating: value, count: count))
    }

    deinit { pointer.deallocate() }

    var constant: UnsafeBufferPointer<Float> { UnsafeBufferPointer(pointer) }
    var array: [Float] { Array(pointer) }
}
