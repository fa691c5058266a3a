import ArgumentParser
import Foundation
import CommandSupport
import SwiftGPT

/// `gpt`: the SwiftGPT command line. Each job is a subcommand; `gpt help SUBCOMMAND` says more.
@main
struct RootCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt",
        abstract: "Build, tune, evaluate and serve GPT-style language models.",
        version: swiftGPTVersion,
        subcommands: [SystemCommand.self, TokenizerCommand.self, PrepareCommand.self, TrainCommand.self, GenerateCommand.self, ChatCommand.self, InfoCommand.self, ExportCommand.self, EvalCommand.self, BiasCommand.self, ServeCommand.self, FinetuneCommand.self, MergeLoRACommand.self])

    static func main() async { await runReportingErrors() }
}
