import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench quantized`: the quantised matrix-vector product (decoding's inner loop) per
/// instruction set, on a matrix that stays in cache (the kernel's compute speed: what decides
/// decode speed where cores, not memory, are the limit, as on AVX2 desktops) and on one that
/// streams from memory (SmolLM2's MLP width).
struct QuantizedBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantized",
        abstract: "Quantised matrix-vector (and few-vector) products per ISA: GB/s of weights, in cache and from memory.")

    @Option(help: "Tensor types, comma-separated: q4_0, q4_1, q8_0.") var types = "q4_1,q8_0"
    @Option(help: "Vectors multiplied at once (1: matrix-vector), comma-separated.") var vectors = ThreadList(argument: "1,16")!
    @Flag(help: "One JSON object per measurement.") var json = false

    func run() throws {
        let names: [String: GGMLType] = ["q4_0": .q4_0, "q4_1": .q4_1, "q8_0": .q8_0]
        let chosen = try types.split(separator: ",").map { name -> GGMLType in
            guard let type = names[String(name).lowercased()] else { throw ValidationError("unknown type '\(name)' (q4_0, q4_1, q8_0)") }
            return type
        }
        var generator = SplitMix64(seed: 5)
        let k = 576
        for type in chosen {
            for (label, rows) in [("in cache", 64), ("from memory", 49_152)] {
                let values = (0..<(rows * k)).map { _ in generator.nextNormal() * 0.05 }
                let bytes = values.withUnsafeBufferPointer { quantize(type, $0, pool: .serial) }
                for n in vectors.counts {
                    let x = (0..<(n * k)).map { _ in generator.nextNormal() }
                    var y = [Float](repeating: 0, count: n * rows)
                    for isa in InstructionSet.supported {
                        let repeats = max(1, 200_000_000 / (rows * k * max(1, n)))
                        var best = Double.infinity
                        bytes.withUnsafeBytes { w in
                            x.withUnsafeBufferPointer { xs in
                                y.withUnsafeMutableBufferPointer { ys in
                                    for _ in 0..<3 {
                                        let start = DispatchTime.now().uptimeNanoseconds
                                        for _ in 0..<repeats {
                                            if n == 1 {
                                                quantizedMatvec(type, rows: rows, k: k, weights: w.baseAddress!, x: xs, y: ys, pool: .serial, isa: isa)
                                            } else {
                                                quantizedMatmul(type, rows: rows, k: k, weights: w.baseAddress!, n: n, x: xs, ldx: k, y: ys,
                                                                ldy: rows, pool: .serial, isa: isa)
                                            }
                                        }
                                        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(repeats))
                                    }
                                }
                            }
                        }
                        let gigabytes = Double(bytes.count) / best / 1e9, gflops = 2.0 * Double(rows * k * n) / best / 1e9
                        if json {
                            print(jsonLine(["bench": "quantized", "type": "\(type)", "isa": "\(isa)", "matrix": label, "rows": rows,
                                            "vectors": n, "weight_gb_per_sec": gigabytes, "gflops": gflops]))
                        } else {
                            print(String(format: "%@ %@ %dx%d, %2d vector(s), %@: %6.1f GB/s of weights, %6.1f GFLOP/s (1 thread)",
                                         "\(type)", label, rows, k, n, "\(isa)".padding(toLength: 8, withPad: " ", startingAt: 0),
                                         gigabytes, gflops))
                        }
                    }
                }
            }
        }
    }
}
