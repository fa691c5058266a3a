// What the `gpt` and `gpt-bench` executables share: logging set-up and error reporting.
import ArgumentParser
import Foundation
import Logging

/// Log level from `SWIFTGPT_LOG` (trace, debug, info, notice, warning, error); warning by default.
public func bootstrapLogging() {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = ProcessInfo.processInfo.environment["SWIFTGPT_LOG"]
            .flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return handler
    }
}

extension AsyncParsableCommand {
    /// Parses the arguments and runs the chosen subcommand. Help and `--version` print as
    /// ArgumentParser intends; any error prints one line, `NAME: message`, on stderr and exits
    /// non-zero: no usage dump, no stack trace.
    public static func runReportingErrors() async {
        bootstrapLogging()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            var message = fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            if message.hasPrefix("Error: ") { message.removeFirst("Error: ".count) }
            let name = configuration.commandName ?? "swiftgpt"
            FileHandle.standardError.write(Data("\(name): \(message)\n".utf8))
            Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }
}
