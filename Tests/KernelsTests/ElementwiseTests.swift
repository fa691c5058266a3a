import CKernels
import Foundation
import XCTest
@testable import Kernels

/// Forward passes against float64 references; backward passes against float64 finite
/// differences of those references, with the loss Σ out · w for a fixed random w.
final class ElementwiseTests: XCTestCase {
    let rows = 3, cols = 17

    // MARK: float64 references

    func layerNorm64(_ x: [Double], _ w: [Double], _ b: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for r in 0..<rows {
            let row = Array(x[(r * cols)..<((r + 1) * cols)])
            let mean = row.reduce(0, +) / Double(cols)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(cols)
            for i in 0..<cols {
                out[r * cols + i] = (row[i] - mean) / (variance + 1e-5).squareRoot() * w[i] + b[i]
            }
        }
        return out
    }

    func rmsNorm64(_ x: [Double], _ w: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for r in 0..<rows {
            let row = Array(x[(r * cols)..<((r + 1) * cols)])
            let meanSquare = row.map { $0 * $0 }.reduce(0, +) / Double(cols)
            for i in 0..<cols { out[r * cols + i] = row[i] / (meanSquare + 1e-5).squareRoot() * w[i] }
        }
        return out
    }

    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map(*).reduce(0, +) }

    // MARK: tests

    func testLayerNormForwardAndBackward() {
        let n = rows * cols
        let x = randomFloats(n, seed: 1).map { $0 * 3 + 0.5 }
        let w = randomFloats(cols, seed: 2), b = randomFloats(cols, seed: 3)
        let dout = randomFloats(n, seed: 4)
        let (xb, wb, bb, doutb) = (Buffer(x), Buffer(w), Buffer(b), Buffer(dout))
        let out = Buffer(count: n), mean = Buffer(count: rows), rstd = Buffer(count: rows)
        layerNormForward(out: out.pointer, mean: mean.pointer, rstd: rstd.pointer, inp: xb.constant,
                         weight: wb.constant, bias: bb.constant, rows: rows, cols: cols)
        let x64 = x.map(Double.init), w64 = w.map(Double.init), b64 = b.map(Double.init)
        let d64 = dout.map(Double.init)
        XCTAssertLessThan(maxAbsDifference(out.array, layerNorm64(x64, w64, b64)), 1e-5)
        let dx = Buffer(count: n), dw = Buffer(count: cols), db = Buffer(count: cols)
        layerNormBackward(dinp: dx.pointer, dweight: dw.pointer, dbias: db.pointer, dout: doutb.constant,
                          inp: xb.constant, weight: wb.constant, mean: mean.constant,
                          rstd: rstd.constant, rows: rows, cols: cols)
        withExtendedLifetime((xb, wb, bb, doutb)) {}
        XCTAssertLessThan(maxAbsDifference(dx.array, numericalGradient(x64) { dot(layerNorm64($0, w64, b64), d64) }), 1e-4)
        XCTAssertLessThan(maxAbsDifference(dw.array, numericalGradient(w64) { dot(layerNorm64(x64, $0, b64), d64) }), 1e-4)
        XCTAssertLessThan(maxAbsDifference(db.array, numericalGradient(b64) { dot(layerNorm64(x64, w64, $0), d64) }), 1e-4)
    }

    func testRMSNormForwardAndBackward() {
        let n = rows * cols
        let x = randomFloats(n, seed: 5).map { $0 * 2 }
        let w = randomFloats(cols, seed: 6), dout = randomFloats(n, seed: 7)
        let (xb, wb, doutb) = (Buffer(x), Buffer(w), Buffer(dout))
        let out = Buffer(count: n), rstd = Buffer(count: rows)
        rmsNormForward(out: out.pointer, rstd: rstd.pointer, inp: xb.constant, weight: wb.constant,
                       rows: rows, cols: cols)
        let x64 = x.map(Double.init), w64 = w.map(Double.init), d64 = dout.map(Double.init)
        XCTAssertLessThan(maxAbsDifference(out.array, rmsNorm64(x64, w64)), 1e-5)
        let dx = Buffer(count: n), dw = Buffer(count: cols)
        rmsNormBackward(dinp: dx.pointer, dweight: dw.pointer, dout: doutb.constant, inp: xb.constant,
                        weight: wb.constant, rstd: rstd.constant, rows: rows, cols: cols)
        withExtendedLifetime((xb, wb, doutb)) {}
        XCTAssertLessThan(maxAbsDifference(dx.array, numericalGradient(x64) { dot(rmsNorm64($0, w64), d64) }), 1e-4)
        XCTAssertLessThan(maxAbsDifference(dw.array, numericalGradient(w64) { dot(rmsNorm64(x64, $0), d64) }), 1e-4)
    }

    typealias Forward = (UnsafeMutableBufferPointer<Float>, UnsafeBufferPointer<Float>, Int) -> Void
    typealias Backward = (UnsafeMutableBufferPointer<Float>, UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>, Int) -> Void

    func checkActivation(_ name: String, forward: Forward, backward: Backward,
                         reference: @escaping (Double) -> Double, inputs: [Float]) {
        let n = inputs.count
        let x = Buffer(inputs), out = Buffer(count: n)
        forward(out.pointer, x.constant, n)
        XCTAssertLessThan(maxAbsDifference(out.array, inputs.map { reference(Double($0)) }), 2e-6, name)
        // Backward accumulates: start from 1 and expect 1 + f'(x) * dout.
        let dout = randomFloats(n, seed: 11)
        let dx = Buffer(count: n, value: 1), doutBuffer = Buffer(dout)
        backward(dx.pointer, x.constant, doutBuffer.constant, n)
        withExtendedLifetime(doutBuffer) {}
        let expected = inputs.indices.map { i -> Double in
            let x = Double(inputs[i]), h = 1e-6
            return 1 + (reference(x + h) - reference(x - h)) / (2 * h) * Double(dout[i])
        }
        XCTAssertLessThan(maxAbsDifference(dx.array, expected), 1e-5, name)
    }

    func testActivations() {
        // Away from 0 for ReLU, whose derivative jumps there.
        let inputs = randomFloats(100, seed: 12).map { $0 * 6 } + [-0.5, 0.25, 8, -8]
        checkActivation("gelu", forward: { geluForward(out: $0, inp: $1, count: $2) },
                        backward: { geluBackward(dinp: $0, inp: $1, dout: $2, count: $3) },
                        reference: { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) },
                        inputs: inputs)
        checkActivation("relu", forward: { reluForward(out: $0, inp: $1, count: $2) },
                        backward: { reluBackward(dinp: $0, inp: $1, dout: $2, count: $3) },
                        reference: { max(0, $0) }, inputs: inputs.filter { abs($0) > 1e-3 })
        checkActivation("silu", forward: { siluForward(out: $0, inp: $1, count: $2) },
                        backward: { siluBackward(dinp: $0, inp: $1, dout: $2, count: $3) },
                        reference: { $0 / (1 + exp(-$0)) }, inputs: inputs)
    }

    func testSoftmaxIsStableAndMatchesFloat64() {
        var x: [Float] = [1, 2, 3, 1000, 1001, 1002, -5, -5, -5]
        x.withUnsafeMutableBufferPointer { softmaxRows($0, rows: 3, cols: 3) }
        let e = [1.0, exp(1.0), exp(2.0)], s = e.reduce(0, +)
        let expected = e.map { $0 / s } + e.map { $0 / s } + [1.0 / 3, 1.0 / 3, 1.0 / 3]
        XCTAssertLessThan(maxAbsDifference(x, expected), 1e-6)
    }

    func testCrossEntropyWithIgnoreIndex() {
        let rows = 4, vocab = 7
        let logits = randomFloats(rows * vocab, seed: 13).map { $0 * 4 }
        let targets: [Int32] = [3, -100, 0, 6]
        func loss64(_ l: [Double]) -> Double {
            var total = 0.0, counted = 0.0
            for r in 0..<rows where targets[r] != -100 {
                let row = l[(r * vocab)..<((r + 1) * vocab)]
                total += log(row.map { exp($0) }.reduce(0, +)) - row[row.startIndex + Int(targets[r])]
                counted += 1
            }
            return total / counted
        }
        let losses = Buffer(count: rows, value: 9), logitsBuffer = Buffer(logits)
        let probabilities = Buffer(count: rows * vocab)
        let mean = targets.withUnsafeBufferPointer { t in
            crossEntropyForward(losses: losses.pointer, probabilities: probabilities.pointer,
                                logits: logitsBuffer.constant, targets: t, rows: rows, vocab: vocab)
        }
        let logits64 = logits.map(Double.init)
        XCTAssertEqual(Double(mean), loss64(logits64), accuracy: 1e-5)
        XCTAssertEqual(losses.array[1], 0)
        // In place, as the model does it: the probabilities become the gradient.
        targets.withUnsafeBufferPointer { t in
            crossEntropyBackward(dlogits: probabilities.pointer, probabilities: probabilities.constant, targets: t,
                                 rows: rows, vocab: vocab, scale: 1.0 / 3)
        }
        let dlogits = probabilities
        withExtendedLifetime(logitsBuffer) {}
        XCTAssertLessThan(maxAbsDifference(dlogits.array, numericalGradient(logits64, loss64)), 1e-6)
    }

    func testAdamWMatchesPyTorchFormula() {
        let n = 37
        let p = Buffer(randomFloats(n, seed: 20)), m = Buffer(count: n), v = Buffer(count: n)
        let settings = AdamWSettings(learningRate: 1e-2, beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1)
        var p64 = p.array.map(Double.init), m64 = [Double](repeating: 0, count: n), v64 = m64
        for step in 1...3 {
            let g = randomFloats(n, seed: UInt64(100 + step))
            let gradients = Buffer(g)
            adamWUpdate(parameters: p.pointer, gradients: gradients.constant, firstMoment: m.pointer,
                        secondMoment: v.pointer, count: n, step: step, settings: settings)
            withExtendedLifetime(gradients) {}
            // torch.optim.AdamW: decay, moments, bias-corrected step.
            let lr = 1e-2, b1 = 0.9, b2 = 0.95
            for i in 0..<n {
                let gi = Double(g[i])
                p64[i] *= 1 - lr * 0.1
                m64[i] = b1 * m64[i] + (1 - b1) * gi
                v64[i] = b2 * v64[i] + (1 - b2) * gi * gi
                let mHat = m64[i] / (1 - pow(b1, Double(step)))
                let vHat = v64[i] / (1 - pow(b2, Double(step)))
                p64[i] -= lr * mHat / (vHat.squareRoot() + 1e-8)
            }
            XCTAssertLessThan(maxAbsDifference(p.array, p64), 1e-6, "step \(step)")
        }
    }

    func testSplitMix64ReferenceSequence() {
        // splitmix64.c (Vigna) from seed 0.
        var generator = SplitMix64(seed: 0)
        XCTAssertEqual([generator.next(), generator.next(), generator.next()],
                       [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
        var normal = SplitMix64(seed: 1)
        let samples = (0..<20_000).map { _ in Double(normal.nextNormal()) }
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.04)
    }

    /// Float to half and back (the fp16 KV cache) against Swift's Float16: round to nearest
    /// even at the ties, subnormals, overflow to infinity, every ISA's vector conversion.
    func testHalfConversionsMatchFloat16() {
        var values: [Float] = [0, -0, 1, -1, 65504, 65519.99, 65520, -70000, 1e-8, 6.1e-5, 5.96e-8, 2.98e-8, 2.9802326e-8,
                               1 + 1.0 / 2048, 1 + 3.0 / 2048, 3.0517578e-5, .infinity, -.infinity, .leastNonzeroMagnitude]
        values += randomFloats(4000, seed: 5).enumerated().map { $0.element * Float(pow(2.0, Double($0.offset % 40 - 28))) }
        for value in values {
            XCTAssertEqual(sg_float_to_half(value), Float16(value).bitPattern, "\(value)")
        }
        let expected = values.map { Float(Float16($0)) }
        for isa in InstructionSet.supported {
            var halves = [UInt16](repeating: 0, count: values.count), back = [Float](repeating: .nan, count: values.count)
            sg_to_half(isa.rawValue, values.count, values, &halves)
            sg_from_half(isa.rawValue, values.count, halves, &back)
            XCTAssertEqual(halves, values.map { Float16($0).bitPattern }, "\(isa)")
            XCTAssertEqual(back, expected, "\(isa)")
        }
    }
}

