import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt system`: what the kernels will run with on this machine.
struct SystemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "system",
        abstract: "Show the CPU features, gemm backend and thread count the kernels use.")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        let facts: [(String, String)] = [
            ("version", swiftGPTVersion),
            ("instruction set", InstructionSet.best.description
                + (InstructionSet.best == InstructionSet.hardware ? "" : " (SWIFTGPT_ISA; the CPU has \(InstructionSet.hardware))")),
            ("gemm backend", gemmBackendDescription),
            ("threads", String(ThreadPool.defaultThreadCount)),
        ]
        if json {
            let object = Dictionary(uniqueKeysWithValues: facts.map { ($0.0.replacingOccurrences(of: " ", with: "_"), $0.1) })
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            let width = facts.map(\.0.count).max() ?? 0
            for (key, value) in facts {
                print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
            }
        }
    }
}
