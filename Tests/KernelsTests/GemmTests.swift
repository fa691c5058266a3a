import Foundation
import XCTest
@testable import Kernels

final class GemmTests: XCTestCase {
    /// (m, n, k): not multiples of any tile (6 x 16, 12 x 32) or vector width.
    let shapes = [(1, 1, 1), (3, 17, 64), (17, 3, 100), (64, 100, 17), (100, 64, 1000),
                  (1000, 17, 3), (17, 1000, 64), (13, 33, 800)]

    var backends: [GemmBackend] {
        InstructionSet.supported.map { .isa($0) } + (systemBlasAvailable ? [.blas] : [])
    }

    /// CI installs OpenBLAS and sets SWIFTGPT_REQUIRE_BLAS=1, so the BLAS path cannot go
    /// untested there without failing.
    func testSystemBlasIsFoundWhereRequired() throws {
        guard ProcessInfo.processInfo.environment["SWIFTGPT_REQUIRE_BLAS"] == "1" else {
            throw XCTSkip("SWIFTGPT_REQUIRE_BLAS is not set; BLAS is tested when present")
        }
        XCTAssertTrue(systemBlasAvailable, "SWIFTGPT_REQUIRE_BLAS=1 but no libopenblas.so.0 was loaded")
    }

    func testAllTransposesAndBackendsAgainstFloat64() {
        for (shapeIndex, (m, n, k)) in shapes.enumerated() {
            for transA in [Transpose.none, .transposed] {
                for transB in [Transpose.none, .transposed] {
                    checkShape(m: m, n: n, k: k, transA: transA, transB: transB,
                               seed: UInt64(shapeIndex))
                }
            }
        }
    }

    /// Strided operands (lda, ldb, ldc wider than the matrix), alpha and beta, against a float64
    /// reference computed once and compared with every backend.
    func checkShape(m: Int, n: Int, k: Int, transA: Transpose, transB: Transpose, seed: UInt64) {
        let (aRows, aCols) = transA == .none ? (m, k) : (k, m)
        let (bRows, bCols) = transB == .none ? (k, n) : (n, k)
        let lda = aCols + 3, ldb = bCols + 5, ldc = n + 2
        let a = randomFloats(aRows * lda, seed: seed * 3 + 1)
        let b = randomFloats(bRows * ldb, seed: seed * 3 + 2)
        let c0 = randomFloats(m * ldc, seed: seed * 3 + 3)
        let alpha: Float = 0.75, beta: Float = -0.5
        func opA(_ i: Int, _ p: Int) -> Double { Double(transA == .none ? a[i * lda + p] : a[p * lda + i]) }
        func opB(_ p: Int, _ j: Int) -> Double { Double(transB == .none ? b[p * ldb + j] : b[j * ldb + p]) }
        var expected = c0.map(Double.init)
        var bound = [Double](repeating: 0, count: m * ldc)
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0, absSum = 0.0
                for p in 0..<k {
                    let product = opA(i, p) * opB(p, j)
                    sum += product
                    absSum += abs(product)
                }
                expected[i * ldc + j] = Double(alpha) * sum + Double(beta) * Double(c0[i * ldc + j])
                bound[i * ldc + j] = 1e-6 * (absSum + 1) * Double(max(1, k)).squareRoot() + 1e-6
            }
        }
        for backend in backends {
            for threads in [1, 2] {
                var c = c0
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        c.withUnsafeMutableBufferPointer { c in
                            gemm(transA, transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc,
                                 pool: ThreadPool(threadCount: threads), backend: backend)
                        }
                    }
                }
                for i in 0..<m {
                    for j in 0..<ldc {
                        let index = i * ldc + j
                        if j >= n {
                            XCTAssertEqual(c[index], c0[index], "padding column written")
                            continue
                        }
                        let error = abs(Double(c[index]) - expected[index])
                        if error > bound[index] {
                            XCTFail("\(backend) \(threads) threads m=\(m) n=\(n) k=\(k) \(transA)/\(transB): C[\(i)][\(j)] = \(c[index]), expected \(expected[index])")
                            return
                        }
                    }
                }
            }
        }
    }

    func testBetaZeroIgnoresGarbageInC() {
        let (m, n, k) = (7, 19, 5)
        let a = randomFloats(m * k, seed: 9), b = randomFloats(k * n, seed: 10)
        for backend in backends {
            var c = [Float](repeating: .nan, count: m * n)
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        gemm(.none, .none, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: c,
                             ldc: n, backend: backend)
                    }
                }
            }
            XCTAssertFalse(c.contains { $0.isNaN }, "\(backend)")
        }
    }

    func testEmptyInnerDimensionScalesC() {
        var c: [Float] = [1, 2, 3, 4]
        let empty: [Float] = [0]
        empty.withUnsafeBufferPointer { a in
            c.withUnsafeMutableBufferPointer { c in
                gemm(.none, .none, m: 2, n: 2, k: 0, a: a, lda: 1, b: a, ldb: 2, beta: 2,
                     c: c, ldc: 2, backend: .native)
            }
        }
        XCTAssertEqual(c, [2, 4, 6, 8])
    }

    func testSameBitsAtAnyThreadCount() {
        let (m, n, k) = (150, 130, 900)
        let a = randomFloats(m * k, seed: 4), b = randomFloats(n * k, seed: 5)
        func run(threads: Int) -> [Float] {
            var c = [Float](repeating: 0, count: m * n)
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        gemm(.none, .transposed, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: k,
                             c: c, ldc: n, pool: ThreadPool(threadCount: threads), backend: .native)
                    }
                }
            }
            return c
        }
        XCTAssertEqual(run(threads: 1), run(threads: 2))
        XCTAssertEqual(run(threads: 1), run(threads: 3))
    }

    func testMatvecAgainstFloat64() {
        for (rows, k) in [(1, 1), (3, 17), (17, 3), (100, 64), (1000, 100), (64, 1000)] {
            let lda = k + 4
            let a = randomFloats(rows * lda, seed: UInt64(rows * 7 + k))
            let x = randomFloats(k, seed: 77)
            let y0 = randomFloats(rows, seed: 78)
            var expected = [Double](repeating: 0, count: rows)
            for r in 0..<rows {
                var sum = 0.0
                for p in 0..<k { sum += Double(a[r * lda + p]) * Double(x[p]) }
                expected[r] = 2 * sum + 0.25 * Double(y0[r])
            }
            for isa in InstructionSet.supported {
                var y = y0
                a.withUnsafeBufferPointer { a in
                    x.withUnsafeBufferPointer { x in
                        y.withUnsafeMutableBufferPointer { y in
                            matvec(rows: rows, k: k, alpha: 2, a: a, lda: lda, x: x, beta: 0.25,
                                   y: y, pool: ThreadPool(threadCount: 2), isa: isa)
                        }
                    }
                }
                XCTAssertLessThan(maxAbsDifference(y, expected), 1e-5 * Double(k).squareRoot() + 1e-6,
                                  "\(isa) rows=\(rows) k=\(k)")
            }
        }
    }

    func testPeakLoopMeasuresSomething() {
        // The benchmark divides by this; it must be a finite positive rate.
        let peak = InstructionSet.best.measuredPeakGFLOPS(iterations: 100_000)
        XCTAssertTrue(peak.isFinite && peak > 0)
    }
}
