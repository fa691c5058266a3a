import ArgumentParser
import Foundation
import CommandSupport
import SwiftGPT

/// `gpt-bench`: speed figures of SwiftGPT next to their references, measured in the same run.
/// Build in release: `swift run -c release gpt-bench gemm`.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt-bench",
        abstract: "Measure SwiftGPT against reference implementations (release builds only).",
        version: swiftGPTVersion,
        subcommands: [GemmBench.self, PoolBench.self, TokenizerBench.self, TrainBench.self, GenerateBench.self, LogitsBench.self, QuantizedBench.self, ServeBench.self, AnswersBench.self, PronounsBench.self])

    static func main() async { await runReportingErrors() }
}

/// Seconds per run of `body`: the median of at least `minimumRuns` runs after one warm-up,
/// running more while the total stays under `budget` seconds.
func measure(minimumRuns: Int = 3, budget: Double = 1.0, _ body: () -> Void) -> Double {
    body()
    var times: [Double] = []
    let start = DispatchTime.now().uptimeNanoseconds
    while times.count < minimumRuns
        || (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < budget && times.count < 1000) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }
    return median(times)
}

/// Seconds per run of `a` and of `b`, and the ratio of a's time to b's: the two take turns in
/// rounds, each round a `measure` of a then one of b, so that each ratio compares the same
/// minutes of a shared machine. Rounds rather than single runs: a library's threads spin for a
/// while after a call (OpenBLAS's ~70 ms) and slow the other's next runs, which a round's median
/// sheds. Each time is the median of its rounds, the ratio the median of the rounds' ratios.
func measureAlternating(rounds: Int = 7, _ a: () -> Void, _ b: () -> Void) -> (a: Double, b: Double, ratio: Double) {
    var timesA: [Double] = [], timesB: [Double] = []
    for _ in 0..<rounds {
        timesA.append(measure(minimumRuns: 5, budget: 0.3, a))
        timesB.append(measure(minimumRuns: 5, budget: 0.3, b))
    }
    return (median(timesA), median(timesB), medianRatio(timesA, to: timesB))
}

/// The middle value (the upper of the two middle ones for an even count).
func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// The median of a[i] / b[i]: a ratio between measurements that took turns, round by round, so
/// that each ratio compares the same minutes of a shared machine.
func medianRatio(_ a: [Double], to b: [Double]) -> Double { median(zip(a, b).map { $0 / $1 }) }

/// One JSON object on one line, keys in the order given; nil values print as null.
func jsonLine(_ fields: KeyValuePairs<String, Any?>) -> String {
    let parts = fields.map { key, value -> String in
        let text: String
        switch value {
        case nil: text = "null"
        case let string as String: text = "\"\(string)\""
        case let double as Double: text = String(format: "%.4g", double)
        case let some?: text = "\(some)"
        }
        return "\"\(key)\":\(text)"
    }
    return "{" + parts.joined(separator: ",") + "}"
}

/// Parses "1,2" into thread counts.
struct ThreadList: ExpressibleByArgument {
    var counts: [Int]
    init?(argument: String) {
        let parsed = argument.split(separator: ",").compactMap { Int($0) }
        guard !parsed.isEmpty, parsed.allSatisfy({ $0 > 0 }) else { return nil }
        counts = parsed
    }
}

extension KVStorage: ExpressibleByArgument {}
