import Foundation
import TestSupport
import XCTest
import Kernels
@testable import Transformer

/// The GGUF reader and the quantised kernels against files and dequantisations from gguf-py
/// (scripts/make-gguf-fixtures.py).
final class GGUFTests: XCTestCase {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func testMetadataOfEveryType() throws {
        let file = try GGUFFile(url: fixtures.appendingPathComponent("tiny.gguf"))
        XCTAssertEqual(file.version, 3)
        let m = file.metadata
        XCTAssertEqual(m["general.architecture"]?.string, "llama")
        XCTAssertEqual(m["test.u8"]?.int, 200)
        XCTAssertEqual(m["test.i8"]?.int, -100)
        XCTAssertEqual(m["test.u16"]?.int, 60000)
        XCTAssertEqual(m["test.i16"]?.int, -30000)
        XCTAssertEqual(m["test.u32"]?.int, 4_000_000_000)
        XCTAssertEqual(m["test.i32"]?.int, -2_000_000_000)
        XCTAssertEqual(m["test.f32"]?.double, 0.25)
        XCTAssertEqual(m["test.bool"]?.bool, true)
        XCTAssertEqual(m["test.string"]?.string, "héllo wörld")
        XCTAssertEqual(m["test.ints"]?.array?.compactMap(\.int), [1, -2, 3])
        XCTAssertEqual(m["test.strings"]?.array?.compactMap(\.string), ["a", "bc", ""])
        XCTAssertEqual(m["test.u64"]?.int, (1 << 40) + 3)
        XCTAssertEqual(m["test.i64"]?.int, -(1 << 40))
        XCTAssertEqual(m["test.f64"]?.double, 3.141592653589793)
    }

    func testDequantisationMatchesGGUFPy() throws {
        let file = try GGUFFile(url: fixtures.appendingPathComponent("tiny.gguf"))
        let expected = try SafetensorsFile(url: fixtures.appendingPathComponent("tiny-expected.safetensors"))
        for name in ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"] {
            let info = try file.tensor(name)
            XCTAssertEqual(info.dimensions, [96, 8], name)
            let reference = try expected.read(name)
            for isa in InstructionSet.supported {
                var ours = [Float](repeating: 0, count: info.elementCount)
                ours.withUnsafeMutableBufferPointer { dequantize(info.type, file.bytes(of: info), count: info.elementCount, into: $0.baseAddress!, isa: isa) }
                XCTAssertLessThan(zip(ours, reference).map { abs($0 - $1) }.max()!, 1e-6, "\(name) \(isa)")
            }
        }
    }

    func testQuantisedMatvecAgainstFloat64() throws {
        let file = try GGUFFile(url: fixtures.appendingPathComponent("tiny.gguf"))
        let expected = try SafetensorsFile(url: fixtures.appendingPathComponent("tiny-expected.safetensors"))
        let x = try expected.read("x")
        for name in ["f16", "q8_0", "q4_0", "q4_1"] {
            let info = try file.tensor(name)
            let weights = try expected.read(name)
            let reference = (0..<8).map { r in (0..<96).reduce(0.0) { $0 + Double(weights[r * 96 + $1]) * Double(x[$1]) } }
            for isa in InstructionSet.supported {
                for threads in [1, 2] {
                    var y = [Float](repeating: 0, count: 8)
                    x.withUnsafeBufferPointer { xs in
                        y.withUnsafeMutableBufferPointer { ys in
                            quantizedMatvec(info.type, rows: 8, k: 96, weights: file.bytes(of: info), x: xs, y: ys,
                                            pool: ThreadPool(threadCount: threads), isa: isa)
                        }
                    }
                    for r in 0..<8 { XCTAssertEqual(Double(y[r]), reference[r], accuracy: 1e-4, "\(name) \(isa) row \(r)") }
                }
            }
        }
    }

    /// Several rows of activations times a quantised matrix: the multi-vector kernel (decoding
    /// batches) and the gemm that dequantises while packing (prompts), against float64, every ISA.
    func testQuantisedMatmulAndGemmAgainstFloat64() throws {
        let file = try GGUFFile(url: fixtures.appendingPathComponent("tiny.gguf"))
        let expected = try SafetensorsFile(url: fixtures.appendingPathComponent("tiny-expected.safetensors"))
        var generator = SplitMix64(seed: 3)
        for name in ["q8_0", "q4_0", "q4_1"] {
            let info = try file.tensor(name)
            let weights = try expected.read(name)
            for n in [1, 3, 5, 16, 70] {
                let x = (0..<(n * 96)).map { _ in generator.nextNormal() }
                let reference = (0..<n).flatMap { v in
                    (0..<8).map { r in (0..<96).reduce(0.0) { $0 + Double(weights[r * 96 + $1]) * Double(x[v * 96 + $1]) } }
                }
                for isa in InstructionSet.supported {
                    var y = [Float](repeating: .nan, count: n * 8), z = [Float](repeating: .nan, count: n * 8)
                    x.withUnsafeBufferPointer { xs in
                        y.withUnsafeMutableBufferPointer { ys in
                            quantizedMatmul(info.type, rows: 8, k: 96, weights: file.bytes(of: info), n: n, x: xs, ldx: 96, y: ys, ldy: 8,
                                            pool: ThreadPool(threadCount: 2), isa: isa)
                        }
                        z.withUnsafeMutableBufferPointer { zs in
                            quantizedGemm(info.type, m: n, n: 8, k: 96, a: xs, lda: 96, weights: file.bytes(of: info), c: zs, ldc: 8,
                                          pool: ThreadPool(threadCount: 2), isa: isa)
                        }
                    }
                    for i in 0..<(n * 8) {
                        XCTAssertEqual(Double(y[i]), reference[i], accuracy: 1e-4, "\(name) \(isa) matmul n \(n) element \(i)")
                        XCTAssertEqual(Double(z[i]), reference[i], accuracy: 1e-4, "\(name) \(isa) gemm n \(n) element \(i)")
                    }
                }
            }
        }
    }

    /// Matrices of mixed types stacked by rows (a fused q|k|v): one product writes each matrix's
    /// outputs side by side, pieces of rows split within each matrix (129 and 50 rows: several
    /// pieces of 12, ragged ends), against float64 of the dequantised weights, every ISA.
    func testStackedQuantisedMatmulAgainstFloat64() throws {
        var generator = SplitMix64(seed: 11)
        let k = 64, shapes: [(GGMLType, Int)] = [(.q4_1, 129), (.q8_0, 50), (.q4_0, 7)]
        let parts = shapes.map { type, rows -> (GGMLType, Int, UnsafeMutableRawPointer, [Float]) in
            let values = (0..<(rows * k)).map { _ in generator.nextNormal() }
            let bytes = values.withUnsafeBufferPointer { quantize(type, $0) }
            let stored = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
            stored.copyMemory(from: bytes, byteCount: bytes.count)
            var dequantised = [Float](repeating: 0, count: rows * k)
            dequantize(type, stored, count: rows * k, into: &dequantised)
            return (type, rows, stored, dequantised)
        }
        defer { parts.forEach { $0.2.deallocate() } }
        let stacked = parts.map { QuantizedRows(type: $0.0, weights: $0.2, rows: $0.1) }
        let total = parts.reduce(0) { $0 + $1.1 }, ldy = total + 3
        // Vectors in groups of at most 2 KB of X (8 of k = 64): one group, two, and five with a
        // ragged last one.
        for n in [2, 16, 37] {
            let x = (0..<(n * k)).map { _ in generator.nextNormal() }
            for isa in InstructionSet.supported {
                var y = [Float](repeating: .nan, count: n * ldy)
                x.withUnsafeBufferPointer { xs in
                    y.withUnsafeMutableBufferPointer { ys in
                        quantizedMatmul(stacked, k: k, n: n, x: xs, ldx: k, y: ys, ldy: ldy, pool: ThreadPool(threadCount: 2), isa: isa,
                                        vectorGroupBytes: 2048)
                    }
                }
                var column = 0
                for part in parts {
                    for v in 0..<n {
                        for r in 0..<part.1 {
                            let reference = (0..<k).reduce(0.0) { $0 + Double(part.3[r * k + $1]) * Double(x[v * k + $1]) }
                            XCTAssertEqual(Double(y[v * ldy + column + r]), reference, accuracy: 1e-4, "\(part.0) \(isa) vector \(v) row \(r)")
                        }
                    }
                    column += part.1
                }
                for v in 0..<n { for c in total..<ldy { XCTAssertTrue(y[v * ldy + c].isNaN, "padding written") } }
            }
        }
    }

    func testBadFilesAreRefusedWithAReason() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func expectError(_ data: Data, _ contains: String) throws {
            let url = directory.appendingPathComponent("test.gguf")
            try data.write(to: url)
            XCTAssertThrowsError(try GGUFFile(url: url)) { XCTAssertTrue("\($0)".contains(contains), "\($0) should mention \(contains)") }
        }
        let good = try Data(contentsOf: fixtures.appendingPathComponent("tiny.gguf"))
        var bad = good
        bad[0] = 0x58
        try expectError(bad, "not a GGUF file")
        try expectError(good.prefix(good.count - 10), "truncated")
        try expectError(good.prefix(40), "truncated")
        bad = good
        bad[4] = 9
        try expectError(bad, "version 9")
        XCTAssertThrowsError(try GGUFFile(url: fixtures.appendingPathComponent("unsupported.gguf"))) {
            XCTAssertTrue("\($0)".contains("odd") && "\($0)".contains("Q5_0"), "\($0)")
        }
        XCTAssertThrowsError(try GGUFFile(url: directory.appendingPathComponent("missing.gguf"))) {
            XCTAssertTrue("\($0)".contains("cannot open"), "\($0)")
        }
    }
}

final class GPT2GGUFTests: XCTestCase {
    /// A GPT-2 architecture GGUF (gpt2.* metadata, llama.cpp's tensor names and layout) gives the
    /// logits of the same weights run by the training model.
    func testGPT2ArchitectureLoadsAndMatches() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let file = try GGUFFile(url: fixtures.appendingPathComponent("gpt2-tiny.gguf"))
        let config = try ModelLoader.config(of: file)
        XCTAssertEqual(config.family, .gpt2)
        XCTAssertEqual(config.layerCount, 2)
        XCTAssertEqual(config.vocabularySize, 64)
        let model = try ModelLoader.model(from: file)
        let fixture = try ParityFixture("gpt-gelu")
        let tokens = Array(fixture.tokens[0..<fixture.length])
        try fixture.model.forward(tokens: tokens, targets: nil, batch: 1, length: tokens.count)
        let logits = Array(try model.forward(tokens.map(Int.init), cache: try KVCache(model, capacity: 16)))
        let expected = fixture.model.logits[((tokens.count - 1) * 64)..<(tokens.count * 64)]
        XCTAssertLessThan(zip(logits, expected).map { abs($0 - $1) }.max()!, 1e-4)
    }
}
