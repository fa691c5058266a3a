import Foundation
import XCTest

/// A test case with a fresh directory of its own for each test, removed afterwards.
open class TemporaryDirectoryTestCase: XCTestCase {
    public var directory: URL!

    override open func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(type(of: self))-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override open func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }
}
