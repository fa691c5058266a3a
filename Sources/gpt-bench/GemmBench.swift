import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench gemm`: GFLOP/s of the Swift gemm and of the system BLAS on GPT-2 shapes.
struct GemmBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "Swift gemm vs OpenBLAS on GPT-2 shapes (M=1024), at 1 and 2 threads.")

    @Option(help: "Thread counts to measure, comma-separated.")
    var threads = ThreadList(argument: "1,2")!

    @Option(help: "Rows of A (tokens in a batch).")
    var m = 1024

    @Option(help: "Only this shape, as NxK (for example 2304x768).")
    var shape: String?

    @Option(help: "Microkernel: portable, avx2 or avx512 (default: the best this CPU runs).")
    var isa: String?

    @Flag(help: "One JSON object per measurement.")
    var json = false

    func chosenISA() throws -> InstructionSet {
        guard let isa else { return .best }
        let names: [String: InstructionSet] = ["portable": .portable, "avx2": .avx2FMA, "avx512": .avx512]
        guard let chosen = names[isa.lowercased()] else {
            throw ValidationError("--isa must be portable, avx2 or avx512, got '\(isa)'")
        }
        guard InstructionSet.supported.contains(chosen) else {
            throw ValidationError("this CPU does not support \(chosen)")
        }
        return chosen
    }

    func run() throws {
        var shapes = [(2304, 768), (3072, 768), (768, 3072), (50257, 768)]
        if let shape {
            let parts = shape.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else {
                throw ValidationError("--shape must look like 2304x768 (N x K), got '\(shape)'")
            }
            shapes = [(parts[0], parts[1])]
        }
        let isa = try chosenISA()
        matchSystemBlas(to: isa)
        let blas = systemBlasAvailable
        let peakPerCore = isa.measuredPeakGFLOPS()
        if !json {
            print("gemm C(M×N) = A(M×K)·B(K×N), fp32, Swift microkernel \(isa); reference: \(blas ? gemmBackendDescription : "no system BLAS found")")
            print(String(format: "peak: an FMA loop with %@ vectors measures %.0f GFLOP/s on one core", isa.description, peakPerCore))
            print("Swift/BLAS: the median ratio of rounds that alternate (GFLOP/s: the median of the rounds)")
            print("   M      N      K  thr   Swift GF/s  BLAS GF/s  Swift/BLAS  % of peak")
        }
        for (n, k) in shapes {
            let a = (0..<(m * k)).map { Float(($0 * 7919) % 1000) / 1000 - 0.5 }
            let b = (0..<(k * n)).map { Float(($0 * 104_729) % 997) / 997 - 0.5 }
            var c = [Float](repeating: 0, count: m * n)
            for threadCount in threads.counts {
                let pool = ThreadPool(threadCount: threadCount)
                let flops = 2.0 * Double(m) * Double(n) * Double(k)
                func run(_ backend: GemmBackend) {
                    a.withUnsafeBufferPointer { a in
                        b.withUnsafeBufferPointer { b in
                            c.withUnsafeMutableBufferPointer { c in
                                gemm(.none, .none, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: c, ldc: n, pool: pool, backend: backend)
                            }
                        }
                    }
                }
                // With a BLAS, the two take turns in rounds; the ratio is the median of the rounds'.
                let swift: Double, reference: Double?, ratio: Double?
                if blas {
                    let times = measureAlternating({ run(.isa(isa)) }, { run(.blas) })
                    (swift, reference, ratio) = (flops / times.a / 1e9, flops / times.b / 1e9, 1 / times.ratio)
                } else {
                    (swift, reference, ratio) = (flops / measure { run(.isa(isa)) } / 1e9, nil, nil)
                }
                let peakShare = swift / (peakPerCore * Double(threadCount))
                if json {
                    print(jsonLine(["bench": "gemm", "m": m, "n": n, "k": k, "threads": threadCount,
                                    "swift_gflops": swift, "blas_gflops": reference,
                                    "ratio": ratio, "isa": isa.description,
                                    "peak_gflops_per_core": peakPerCore, "peak_share": peakShare]))
                } else {
                    let ref = reference.map { String(format: "%9.1f", $0) } ?? "        -"
                    let versus = ratio.map { String(format: "%10.2fx", $0) } ?? "          -"
                    print(String(format: "%4d %6d %6d %4d %12.1f", m, n, k, threadCount, swift)
                          + "  " + ref + "  " + versus + String(format: " %9.0f%%", peakShare * 100))
                }
            }
        }
    }
}
