import CommandSupport
import Foundation
import TestSupport
import XCTest
@testable import BPE

/// One long text encoded in parts on several threads: exactly the ids of one encode.
final class ConcurrentEncodingTests: XCTestCase {
    func encodeInParts(_ tokenizer: Tokenizer, _ text: String, partLength: Int, threads: Int = 3) throws -> (ids: [Int], parts: Int) {
        let bytes = Array(text.utf8)
        let results = ResultsByPart()
        let parts = try bytes.withUnsafeBufferPointer {
            try tokenizer.encodeOrdinaryConcurrently($0, threads: threads, partLength: partLength) { results.set($0, $1) }
        }
        return (results.joined(count: parts), parts)
    }

    /// Every printable ASCII character before "\n", after assorted contexts, and every kind of
    /// character after it; cut at every place the cutter allows (partLength 1).
    func testPartsGiveTheIdsOfTheWhole() throws {
        var text = ""
        let contexts = ["word", " ", "  ", "'", "12", "1234", "\r", "\n", "\t", "é", "😀", "'s", "don't", " ?"]
        for byte in UInt8(0x21)...UInt8(0x7E) {
            for context in contexts {
                for after in ["The", "s", "ll", "\n", " x", "12", "/a", "é", "'s", "\r\nA", "?"] {
                    text += "\(context)\(Character(Unicode.Scalar(byte)))\n\(after)"
                }
            }
        }
        text += String(decoding: try Data(contentsOf: fixtureURL("torture.txt")), as: UTF8.self)
        let sample = try shakespeareSample(bytes: 200_000)
        for encoding in TiktokenParityTests.encodings + [(name: "smollm", file: "gpt2.tiktoken", pattern: PreTokenizer.smollm)] {
            let tokenizer = try loadAsset(encoding.file, pattern: encoding.pattern)
            let tiny = try encodeInParts(tokenizer, text, partLength: 1)
            XCTAssertGreaterThan(tiny.parts, 4000, encoding.name)
            XCTAssertEqual(tiny.ids, tokenizer.encodeOrdinary(text), encoding.name)
            let large = try encodeInParts(tokenizer, sample, partLength: 10_000)
            XCTAssertGreaterThan(large.parts, 10, encoding.name)
            XCTAssertEqual(large.ids, tokenizer.encodeOrdinary(sample), encoding.name)
        }
        // And against tiktoken itself, on the torture text.
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL("torture-ids.json"))) as! [String: Any]
        let expected = fixture["encodings"] as! [String: [String: Any]]
        let torture = try String(contentsOf: fixtureURL("torture.txt"), encoding: .utf8)
        for encoding in TiktokenParityTests.encodings {
            let ids = try encodeInParts(try loadAsset(encoding.file, pattern: encoding.pattern), torture, partLength: 1).ids
            XCTAssertEqual(ids, expected[encoding.name]!["text"] as! [Int], encoding.name)
        }
    }

    func testInvalidUTF8IsRefusedWithItsOffset() throws {
        let tokenizer = try loadAsset("gpt2.tiktoken", pattern: .gpt2)
        var bytes = Array(String(repeating: "Some text.\nMore text.\n", count: 2000).utf8)
        for bad in [3, 20_000, bytes.count - 1] {
            let saved = bytes[bad]
            bytes[bad] = 0xFF
            XCTAssertThrowsError(try bytes.withUnsafeBufferPointer {
                try tokenizer.encodeOrdinaryConcurrently($0, threads: 2, partLength: 100) { _, _ in }
            }) { XCTAssertEqual("\($0)", "invalid UTF-8 at byte offset \(bad)") }
            bytes[bad] = saved
        }
    }
}

/// Each part's ids, set from the encoding threads.
final class ResultsByPart: @unchecked Sendable {
    private var parts: [Int: [Int]] = [:]
    private let lock = NSLock()

    func set(_ part: Int, _ ids: [Int]) { lock.withLock { parts[part] = ids } }

    func joined(count: Int) -> [Int] { lock.withLock { (0..<count).flatMap { parts[$0] ?? [] } } }
}

/// Ids as text, as `gpt tokenizer encode` writes them: the same digits as Swift's description.
final class TokenIDTextTests: XCTestCase {
    func testFormatMatchesDescription() throws {
        var generator = SplitMix64(seed: 3)
        var ids = [0, 1, 9, 10, 99, 100, 101, 999, 1000, 50256, 100_000, 199_999, Int.max, Int.min, -1, -10, -12345]
        ids += (0..<2000).map { _ in Int.random(in: 0..<300_000, using: &generator) }
        ids += (1..<19).map { (0..<$0).reduce(1) { value, _ in value * 10 } }
        let expected = ids.map(String.init).joined(separator: " ")
        XCTAssertEqual(String(decoding: TokenIDText.format(ids), as: UTF8.self), expected + "\n")
        XCTAssertEqual(String(decoding: TokenIDText.format(ids, leadingSpace: true, newline: false), as: UTF8.self), " " + expected)
        XCTAssertEqual(TokenIDText.format([]), [0x0A])
        let parsable = ids.filter { $0 >= 0 && $0 < Int.max / 10 }
        XCTAssertEqual(try TokenIDText.parse(Data(TokenIDText.format(parsable))), parsable)
    }
}
