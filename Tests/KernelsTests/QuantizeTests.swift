import Foundation
import TestSupport
import XCTest
@testable import Kernels

/// The quantizers against gguf-py's (`gguf.quants.quantize`, pip gguf==0.19.0), which are bit-exact
/// copies of ggml's reference quantizers, and against their own dequantization.
final class QuantizeTests: XCTestCase {
    static let types: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// Blocks of 32 chosen to hit each rule, then random ones: 3 blocks make a row of 96.
    static func sampleBlocks() -> [[Float]] {
        var generator = SplitMix64(seed: 7)
        func random(_ scale: Float) -> [Float] { (0..<32).map { _ in (generator.nextUnitFloat() * 2 - 1) * scale } }
        var blocks: [[Float]] = [
            [Float](repeating: 0, count: 32),
            [Float](repeating: 0.3, count: 32),
            [Float](repeating: -2.5, count: 32),
            // -8, -7.5, ..., 7.5: Q4_0's d = 1, so x / d + 8.5 lands on whole numbers.
            (0..<32).map { Float($0) * 0.5 - 8 },
            // Q8_0's d = 1: halves round away from zero (-15.5 -> -16, 14.5 -> 15).
            (0..<32).map { $0 == 31 ? 127 : Float($0) - 15.5 },
            // Equal magnitudes of both signs: Q4_0 keeps the first (1, then -1).
            (0..<32).map { $0 % 2 == 0 ? 1 : -1 },
            (0..<32).map { $0 % 2 == 0 ? -1 : 1 },
            // One outlier among small values.
            random(0.01).enumerated().map { $0.offset == 7 ? 50 : $0.element },
            random(1e30),  // scales overflow fp16 to infinity
            random(1e-30),  // and underflow it to zero
            random(1).map { abs($0) + 100 },  // all positive, far from zero
        ]
        for scale: Float in [1, 0.02, 3, 1000] {
            for _ in 0..<6 { blocks.append(random(scale)) }
        }
        while blocks.count % 3 != 0 { blocks.append(random(1)) }
        return blocks
    }

    /// Our bytes, hex-encoded, for each type.
    func ourBytes(_ values: [Float], _ type: GGMLType) -> String {
        values.withUnsafeBufferPointer { quantize(type, $0, pool: .serial) }.map { String(format: "%02x", $0) }.joined()
    }

    func testBytesEqualGGUFPy() throws {
        let values = Self.sampleBlocks().flatMap { $0 }
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("quantize-\(UUID()).f32")
        defer { try? FileManager.default.removeItem(at: input) }
        try values.withUnsafeBytes { try Data($0).write(to: input) }
        let script = """
        import sys, numpy as np, warnings
        from gguf.quants import quantize
        from gguf.constants import GGMLQuantizationType as T
        warnings.simplefilter("ignore")
        x = np.fromfile(sys.argv[1], dtype="<f4").reshape(-1, 96)
        for name in sys.argv[2:]:
            print(name, quantize(x, T[name]).tobytes().hex())
        """
        let output = try runPython(script, [input.path] + Self.types.map(\.description))
        var reference: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 { reference[String(parts[0])] = String(parts[1]) }
        }
        for type in Self.types {
            let ours = ourBytes(values, type)
            let theirs = try XCTUnwrap(reference[type.description], "gguf-py printed no \(type)")
            XCTAssertEqual(ours.count, theirs.count, "\(type)")
            if ours != theirs {
                // Name the first block that differs, with its bytes.
                let blockHex = 2 * type.blockBytes * (type.isQuantized ? 1 : 32)
                let first = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0
                let start = first / blockHex * blockHex
                func block(_ s: String) -> Substring {
                    s.dropFirst(start).prefix(blockHex)
                }
                XCTFail("\(type): block \(first / blockHex) differs:\n ours   \(block(ours))\n gguf-py \(block(theirs))")
            }
        }
    }

    /// Where the largest value of an all-zero block is -0.0 gguf-py's argmax takes that value and
    /// stores d = +0; ggml starts from +0.0 and stores d = -0. We follow ggml.
    func testNegativeZeroBlockFollowsGGML() {
        let bytes = [Float](repeating: -0.0, count: 32).withUnsafeBufferPointer { quantize(.q4_0, $0, pool: .serial) }
        XCTAssertEqual(bytes[0...1], [0x00, 0x80])
        XCTAssertEqual(Set(bytes[2...]), [0x88])
    }

    /// dequantize(quantize(x)) is within the format's step of x, block by block:
    /// Q8_0 half a step (d = max|x| / 127), Q4_0 one step (its +8 code does not exist, so the
    /// opposite of the largest value comes out one step short), Q4_1 half a step of (max - min) / 15;
    /// plus the fp16 rounding of the stored scale and minimum.
    func testRoundTripErrorIsWithinOneStep() {
        let blocks = (0..<64).map { index in randomFloats(32, seed: UInt64(index)).map { $0 * Float(index % 8 + 1) } }
        for type in [GGMLType.q8_0, .q4_0, .q4_1] {
            for (index, block) in blocks.enumerated() {
                let bytes = block.withUnsafeBufferPointer { quantize(type, $0, pool: .serial) }
                var back = [Float](repeating: 0, count: 32)
                bytes.withUnsafeBytes { raw in
                    back.withUnsafeMutableBufferPointer { dequantize(type, raw.baseAddress!, count: 32, into: $0.baseAddress!) }
                }
                let amax = block.map(abs).max()!, low = block.min()!, high = block.max()!
                let halfULP: Float = 1.0 / 2048  // fp16's relative rounding
                let bound: Float
                switch type {
                case .q8_0: bound = amax / 127 * (0.5 + 127 * halfULP) + 1e-6
                case .q4_0: bound = amax / 8 * (1 + 8 * halfULP) + 1e-6
                default: bound = (high - low) / 15 * (0.5 + 15 * halfULP) + abs(low) * halfULP + 1e-6
                }
                let error = zip(block, back).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(error, bound, "\(type) block \(index)")
            }
        }
    }

    func testThreadCountDoesNotChangeTheBytes() {
        let values = randomFloats(32 * 2048, seed: 3)
        for type in QuantizeTests.types {
            let serial = values.withUnsafeBufferPointer { quantize(type, $0, pool: .serial) }
            let parallel = values.withUnsafeBufferPointer { quantize(type, $0, pool: ThreadPool(threadCount: 2)) }
            XCTAssertEqual(serial, parallel, "\(type)")
            XCTAssertEqual(serial.count, type.byteCount(elementCount: values.count), "\(type)")
        }
    }

    /// `values` quantised to `type`, and what those bytes dequantise to (the exact weights the
    /// kernels multiply).
    func quantizedWithValues(_ values: [Float], _ type: GGMLType) -> (bytes: [UInt8], weights: [Float]) {
        let bytes = values.withUnsafeBufferPointer { quantize(type, $0, pool: .serial) }
        var weights = [Float](repeating: 0, count: values.count)
        bytes.withUnsafeBytes { raw in
            weights.withUnsafeMutableBufferPointer { dequantize(type, raw.baseAddress!, count: values.count, into: $0.baseAddress!, isa: .portable) }
        }
        return (bytes, weights)
    }

    /// Rows longer than the kernels' stack buffers (300 blocks: their per-block x sums go to the
    /// heap), an odd row count, and an x with an offset far from zero (the Q4 offset terms
    /// m · Σx then matter): every ISA's matrix-vector product against float64 of the dequantised
    /// weights.
    func testLongRowMatvecAgainstFloat64() {
        let rows = 7, k = 32 * 300
        let values = randomFloats(rows * k, seed: 11)
        let x = randomFloats(k, seed: 12).map { $0 + 0.75 }
        for type: GGMLType in [.q8_0, .q4_0, .q4_1] {
            let (bytes, weights) = quantizedWithValues(values, type)
            for isa in InstructionSet.supported {
                var y = [Float](repeating: .nan, count: rows)
                bytes.withUnsafeBytes { raw in
                    x.withUnsafeBufferPointer { xs in
                        y.withUnsafeMutableBufferPointer {
                            quantizedMatvec(type, rows: rows, k: k, weights: raw.baseAddress!, x: xs, y: $0, pool: .serial, isa: isa)
                        }
                    }
                }
                for r in 0..<rows {
                    let exact = (0..<k).reduce(0.0) { $0 + Double(weights[r * k + $1]) * Double(x[$1]) }
                    let magnitude = (0..<k).reduce(0.0) { $0 + abs(Double(weights[r * k + $1]) * Double(x[$1])) }
                    XCTAssertEqual(Double(y[r]), exact, accuracy: 1e-5 * magnitude, "\(type) \(isa) row \(r)")
                }
            }
        }
    }

    /// The prefill gemm over quantised weights with W's row count off every panel width (29 rows:
    /// AVX2 panels of 24 + 5, AVX-512 one of 29 in 32) and k of 5 blocks, so the packing's
    /// 8 x 8 transposes and its ragged edges both run: every ISA against float64 of the
    /// dequantised weights.
    func testQuantizedGemmRaggedPanelsAgainstFloat64() {
        let rows = 29, k = 32 * 5, m = 7
        let values = randomFloats(rows * k, seed: 21), a = randomFloats(m * k, seed: 22)
        for type: GGMLType in [.q8_0, .q4_0, .q4_1] {
            let (bytes, weights) = quantizedWithValues(values, type)
            for isa in InstructionSet.supported {
                var c = [Float](repeating: .nan, count: m * rows)
                bytes.withUnsafeBytes { raw in
                    a.withUnsafeBufferPointer { a in
                        c.withUnsafeMutableBufferPointer {
                            quantizedGemm(type, m: m, n: rows, k: k, a: a, lda: k, weights: raw.baseAddress!, c: $0, ldc: rows, pool: .serial, isa: isa)
                        }
                    }
                }
                for i in 0..<m {
                    for j in 0..<rows {
                        let exact = (0..<k).reduce(0.0) { $0 + Double(a[i * k + $1]) * Double(weights[j * k + $1]) }
                        XCTAssertEqual(Double(c[i * rows + j]), exact, accuracy: 1e-4, "\(type) \(isa) row \(i) column \(j)")
                    }
                }
            }
        }
    }

    func testByteCounts() {
        XCTAssertEqual(GGMLType.f32.byteCount(elementCount: 5), 20)
        XCTAssertEqual(GGMLType.bf16.byteCount(elementCount: 5), 10)
        XCTAssertEqual(GGMLType.q8_0.byteCount(elementCount: 64), 68)
        XCTAssertEqual(GGMLType.q4_0.byteCount(elementCount: 64), 36)
        XCTAssertEqual(GGMLType.q4_1.byteCount(elementCount: 96), 60)
        XCTAssertFalse(GGMLType.f16.isQuantized)
        XCTAssertTrue(GGMLType.q4_1.isQuantized)
    }
}
