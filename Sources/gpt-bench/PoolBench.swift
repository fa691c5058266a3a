import ArgumentParser
import Dispatch
import Foundation
import SwiftGPT

/// `gpt-bench pool`: the cost of one parallel region, SwiftGPT's pool vs `concurrentPerform`.
///
/// Each region runs one piece of about `--work` µs per thread, so both threads really run (an
/// empty body lets concurrentPerform run everything on the caller and hides its cost). The
/// overhead is the region's wall time minus the time of one piece run alone.
struct PoolBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Overhead of one parallel region: SwiftGPT's ThreadPool vs DispatchQueue.concurrentPerform.")

    @Option(help: "Threads (the pool's size and concurrentPerform's iterations).")
    var threads = 2

    @Option(help: "Microseconds of work in each piece.")
    var work = 5.0

    @Flag(help: "One JSON object per measurement.")
    var json = false

    func run() throws {
        guard threads > 0, work > 0 else { throw ValidationError("--threads and --work must be positive") }
        let pool = ThreadPool(threadCount: threads)
        let results = UnsafeMutablePointer<Double>.allocate(capacity: threads * 8)
        defer { results.deallocate() }
        results.initialize(repeating: 0, count: threads * 8)
        // A dependent chain of multiply-adds: about 1 ns each, so `iterations` ≈ ns of work.
        let iterations = Int(work * 1000)
        let address = Int(bitPattern: results)
        let piece: @Sendable (Int) -> Void = { i in
            var x = Double(i)
            for _ in 0..<iterations { x = x * 0.999_999 + 1e-9 }
            UnsafeMutablePointer<Double>(bitPattern: address)![i * 8] = x
        }
        let calls = 5000
        let alone = measure { for _ in 0..<calls { piece(0) } } / Double(calls)
        let poolWall = measure { for _ in 0..<calls { pool.parallelFor(threads, piece) } } / Double(calls)
        let dispatchWall = measure {
            for _ in 0..<calls { DispatchQueue.concurrentPerform(iterations: threads, execute: piece) }
        } / Double(calls)
        let poolOverhead = (poolWall - alone) * 1e6, dispatchOverhead = (dispatchWall - alone) * 1e6
        if json {
            print(jsonLine(["bench": "pool", "threads": threads, "work_us": alone * 1e6,
                            "pool_overhead_us": poolOverhead, "dispatch_overhead_us": dispatchOverhead]))
        } else {
            print(String(format: "parallel region of %d pieces of %.1f µs on %d threads: overhead per call ThreadPool %.2f µs, concurrentPerform %.2f µs",
                         threads, alone * 1e6, threads, poolOverhead, dispatchOverhead))
        }
    }
}
