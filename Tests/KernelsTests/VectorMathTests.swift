import CKernels
import Foundation
import XCTest
@testable import Kernels

/// exp, softmax and GELU in every instruction set this CPU runs, against float64.
final class VectorMathTests: XCTestCase {
    let inputs: [Float] = randomFloats(1003, seed: 31).map { $0 * 30 } + [-100, -87, 0, 1e-8, 88, 100]

    func testExpInEveryInstructionSet() {
        for isa in InstructionSet.supported {
            var out = [Float](repeating: 0, count: inputs.count)
            sg_exp(isa.rawValue, inputs.count, inputs, &out)
            for (x, y) in zip(inputs, out) {
                let expected = exp(Double(min(max(x, -87.3), 88)))
                XCTAssertEqual(Double(y), expected, accuracy: 4e-7 * expected, "\(isa) exp(\(x))")
            }
        }
    }

    func testSoftmaxRowInEveryInstructionSet() {
        for isa in InstructionSet.supported {
            for count in [1, 7, 16, 17, 1003] {
                var row = Array(inputs.prefix(count))
                let logSumExp = sg_softmax_row(isa.rawValue, count, &row)
                let maxValue = Double(inputs.prefix(count).max()!)
                let sum = inputs.prefix(count).map { exp(Double($0) - maxValue) }.reduce(0, +)
                XCTAssertEqual(Double(logSumExp), maxValue + log(sum), accuracy: 1e-4, "\(isa) n=\(count)")
                for (x, p) in zip(inputs.prefix(count), row) {
                    XCTAssertEqual(Double(p), exp(Double(x) - maxValue) / sum, accuracy: 1e-6, "\(isa) n=\(count)")
                }
            }
        }
    }

    func testShiftedExpSumInEveryInstructionSet() {
        for isa in InstructionSet.supported {
            for count in [1, 7, 16, 17, 1003] {
                let xs = Array(inputs.prefix(count).map { $0 / 4 }), shift: Float = 2.5, scale: Float = 1 / 0.7
                var out = [Float](repeating: -1, count: count + 1)
                let sum = sg_exp_shifted(isa.rawValue, count, xs, shift, scale, &out)
                let expected = xs.map { exp(Double(($0 - shift) * scale)) }
                for (i, (y, e)) in zip(out, expected).enumerated() {
                    XCTAssertEqual(Double(y), e, accuracy: 4e-7 * e, "\(isa) n=\(count) i=\(i)")
                }
                XCTAssertEqual(out[count], -1, "\(isa) n=\(count): wrote past the end")
                let total = expected.reduce(0, +)
                XCTAssertEqual(Double(sum), total, accuracy: 1e-6 * total, "\(isa) n=\(count)")
                XCTAssertEqual(sg_exp_shifted(isa.rawValue, count, xs, shift, scale, nil), sum, "\(isa) n=\(count) without y")
            }
        }
        let row = inputs.map { $0 / 4 }, top = Double(row.max()!)
        let expected = top + log(row.map { exp(Double($0) - top) }.reduce(0, +))
        XCTAssertEqual(Double(row.withUnsafeBufferPointer { logSumExp($0) }), expected, accuracy: 1e-5)
    }

    func testGELUInEveryInstructionSet() {
        let xs = inputs.map { $0 / 5 }
        let k = (2 / Double.pi).squareRoot()
        for isa in InstructionSet.supported {
            var out = [Float](repeating: 0, count: xs.count), grad = [Float](repeating: 1, count: xs.count)
            let dy = randomFloats(xs.count, seed: 32)
            sg_gelu_forward(isa.rawValue, xs.count, xs, &out)
            sg_gelu_backward(isa.rawValue, xs.count, xs, dy, &grad)
            for i in xs.indices {
                let x = Double(xs[i]), t = tanh(k * (x + 0.044715 * x * x * x))
                XCTAssertEqual(Double(out[i]), 0.5 * x * (1 + t), accuracy: 2e-6 * max(1, abs(x)), "\(isa) gelu(\(x))")
                let derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
                XCTAssertEqual(Double(grad[i]), 1 + derivative * Double(dy[i]), accuracy: 2e-6 * max(1, abs(x)), "\(isa) gelu'(\(x))")
            }
        }
    }
}
