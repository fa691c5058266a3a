// Shared by the test targets: running the Python reference implementations.
import Foundation
import XCTest

/// Runs `python3 -c script arguments...` and returns its stdout. A missing module skips the test,
/// except under SWIFTGPT_REQUIRE_ASSETS=1 (CI), where every reference must be there and it fails.
public func runPython(_ script: String, _ arguments: [String] = []) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script] + arguments
    var environment = ProcessInfo.processInfo.environment
    environment["HF_HUB_OFFLINE"] = "1"
    environment["TRANSFORMERS_VERBOSITY"] = "error"
    process.environment = environment
    let output = Pipe(), errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        let message = String(decoding: errorData, as: UTF8.self)
        if message.contains("ModuleNotFoundError") && !assetsRequired {
            throw XCTSkip("python3 lacks a module the reference needs: \(message.suffix(200))")
        }
        throw PythonError(message: String(message.suffix(800)))
    }
    return String(decoding: data, as: UTF8.self)
}

/// Whether CI asked for every asset and reference to be present (SWIFTGPT_REQUIRE_ASSETS=1).
public var assetsRequired: Bool { ProcessInfo.processInfo.environment["SWIFTGPT_REQUIRE_ASSETS"] == "1" }

public struct PythonError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "python failed: \(message)" }
}

/// A file or directory that scripts/fetch-assets.sh puts in the cache ($SWIFTGPT_CACHE, default
/// ~/.cache/swiftgpt). Absent, the test is skipped, or fails under SWIFTGPT_REQUIRE_ASSETS=1.
public func assetURL(_ relativePath: String) throws -> URL {
    let cache = ProcessInfo.processInfo.environment["SWIFTGPT_CACHE"] ?? (NSHomeDirectory() + "/.cache/swiftgpt")
    let url = URL(fileURLWithPath: cache).appendingPathComponent(relativePath)
    if FileManager.default.fileExists(atPath: url.path) { return url }
    if assetsRequired { throw MissingAsset(path: url.path) }
    throw XCTSkip("asset \(url.path) is missing; run scripts/fetch-assets.sh")
}

public struct MissingAsset: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "asset \(path) is missing; run scripts/fetch-assets.sh" }
}
