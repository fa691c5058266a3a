import Foundation
import TestSupport
import XCTest
@testable import BPE

final class TokenizerTests: XCTestCase {
    func gpt2() throws -> Tokenizer { try loadAsset("gpt2.tiktoken", pattern: .gpt2) }

    func tortureText() throws -> String {
        String(decoding: try Data(contentsOf: fixtureURL("torture.txt")), as: UTF8.self)
    }

    func testHuggingFaceVocabAndMergesEqualTheRankFile() throws {
        // GPT-2's vocab.json + merges.txt (explicit merge list) against its tiktoken ranks.
        let merged = try Tokenizer.load(path: try assetURL("tokenizers/gpt2").path)
        XCTAssertEqual(merged.mergeSource, .mergeList)
        let ranks = try gpt2()
        let text = try tortureText()
        XCTAssertEqual(merged.encodeOrdinary(text), ranks.encodeOrdinary(text))
        XCTAssertEqual(merged.specialTokens, ["<|endoftext|>": 50256])
    }

    func testMergeListRecoveredFromRanksMatchesMergesFile() throws {
        let recovered = try gpt2().mergeList()
        let hf = try Tokenizer.load(path: try assetURL("tokenizers/gpt2").path)
        let listed = try hf.mergeList()
        XCTAssertEqual(recovered.count, 50000)
        XCTAssertTrue(zip(recovered, listed).allSatisfy { $0.left == $1.left && $0.right == $1.right })
    }

    func testSpecialTokensOnlyWhenAllowed() throws {
        let tokenizer = try gpt2()
        let text = "a<|endoftext|>b"
        XCTAssertEqual(tokenizer.encode(text), [64, 27, 91, 437, 1659, 5239, 91, 29, 65])
        XCTAssertEqual(tokenizer.encode(text, allowedSpecial: .all), [64, 50256, 65])
        XCTAssertEqual(tokenizer.encode(text, allowedSpecial: .some(["<|other|>"])), tokenizer.encodeOrdinary(text))
        XCTAssertEqual(try tokenizer.decode([64, 50256, 65]), text)
        XCTAssertEqual(tokenizer.id(of: "<|endoftext|>"), 50256)
        XCTAssertEqual(tokenizer.id(of: " the"), 262)
    }

    func testDecodeOfEncodeIsIdentityOnRandomText() throws {
        // Random scalars from every plane, with extra weight on spaces, digits, marks and ASCII.
        var generator = SplitMix64(seed: 2024)
        func randomScalar() -> Unicode.Scalar {
            let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0x09...0x0D, 0x300...0x36F, 0xA0...0x24F,
                                                0x370...0x10FF, 0x3000...0x30FF, 0x4E00...0x9FFF,
                                                0xAC00...0xD7A3, 0x1F300...0x1FAFF, 0x0...0x10FFFF]
            while true {
                let pool = pools[Int(generator.next() % UInt64(pools.count))]
                let value = pool.lowerBound + UInt32(generator.next() % UInt64(pool.count))
                if let scalar = Unicode.Scalar(value) { return scalar }
            }
        }
        let tokenizers = try TiktokenParityTests.encodings.map { try loadAsset($0.file, pattern: $0.pattern) }
        for _ in 0..<200 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int(generator.next() % 40) { scalars.append(randomScalar()) }
            let text = String(scalars)
            for tokenizer in tokenizers {
                XCTAssertEqual(try tokenizer.decode(tokenizer.encodeOrdinary(text)), text, "\(tokenizer.preTokenizer)")
            }
        }
    }

    func testO200kASCIIFastPathSplitsAsTheGeneralScanner() {
        // The general scanner is held to tiktoken by the parity fixtures; the ASCII fast path
        // (words split by case, contractions, punctuation) must cut every text the same way.
        // Texts mix the cases it decides with the ones it hands over (accents, marks, digits).
        let atoms = ["a", "b", "Z", "HTTP", "Server", "the", "'", "'s", "'LL", "'re", " ", "  ", "\t", "\n",
                     "\r\n", ".", ",", "/", "--", "\"", "é", "É", "\u{301}", "ß", "7", "42", "٣", "_", "!?"]
        var generator = SplitMix64(seed: 7)
        for _ in 0..<3000 {
            var text = ""
            for _ in 0..<Int(generator.next() % 24) { text += atoms[Int(generator.next() % UInt64(atoms.count))] }
            var utf8 = Array(text.utf8)
            utf8.withUnsafeMutableBufferPointer { buffer in
                let scanner = Scanner(bytes: UnsafeBufferPointer(buffer))
                var i = 0
                while i < buffer.count {
                    let end = scanner.o200kPiece(at: i)
                    XCTAssertEqual(end, scanner.o200kGeneralPiece(at: i), "\(text.debugDescription) at byte \(i)")
                    i = end
                }
            }
        }
    }

    func testByteStringTableFindsWhatItHoldsAndForgets() {
        // Keys of every storage class: inline short (<= 8 bytes), inline long (<= 16), arena
        // (> 16); values inline (<= 3) and in the arena; enough keys to rehash twice.
        let table = ByteStringTable(expectedCount: 16)
        let keys = (0..<200).map { i in Array("k\(i)-\(String(repeating: "x", count: i % 40))".utf8) }
        func values(_ i: Int) -> [Int32] { (0..<(1 + i % 5)).map { Int32(i * 10 + $0) } }
        func find(_ key: [UInt8]) -> [Int32]? {
            key.withUnsafeBufferPointer { b in
                table.find(b.baseAddress!, b.count, hash: ByteStringTable.hash(b.baseAddress!, b.count))
                    .map { Array(UnsafeBufferPointer(start: $0.0, count: $0.1)) }
            }
        }
        for round in 0..<2 {
            for (i, key) in keys.enumerated() {
                key.withUnsafeBufferPointer { b in
                    values(i).withUnsafeBufferPointer { v in
                        table.insert(b.baseAddress!, b.count, hash: ByteStringTable.hash(b.baseAddress!, b.count),
                                     values: v.baseAddress!, valueCount: v.count)
                    }
                }
            }
            XCTAssertEqual(table.count, keys.count)
            for (i, key) in keys.enumerated() { XCTAssertEqual(find(key), values(i), "round \(round), key \(i)") }
            XCTAssertNil(find(Array("absent".utf8)))
            table.removeAll()
            XCTAssertEqual(table.count, 0)
            XCTAssertNil(find(keys[7]))
        }
    }

    func testBatchedMergeMatchesOnePieceAtATime() throws {
        // The lockstep BPE of a whole batch against the plain loop, one piece at a time, for a
        // rank file (merged id = rank) and a merge list (merged id from the vocabulary).
        let tokenizers = [try gpt2(), try Tokenizer.load(path: try assetURL("tokenizers/gpt2").path)]
        var generator = SplitMix64(seed: 11)
        let atoms = ["the", "ing", " ", "  ", "q", "zz", "é", "ß", "日本", "🙂", "\n", "'", "Ab", "xyzzy", "0", "-"]
        var pieces: [[UInt8]] = (0..<300).map { _ in
            var text = ""
            for _ in 0..<Int(1 + generator.next() % 12) { text += atoms[Int(generator.next() % UInt64(atoms.count))] }
            return Array(text.utf8)
        }
        pieces.append(Array(repeating: 0x20, count: 300))
        pieces.append(Array("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".utf8))
        for tokenizer in tokenizers {
            let batch = BatchedMerge()
            batch.begin(tokenizer: tokenizer)
            for (tag, piece) in pieces.enumerated() {
                piece.withUnsafeBufferPointer { batch.add($0, tag: tag) }
            }
            batch.run()
            for (tag, piece) in pieces.enumerated() {
                let expected = piece.withUnsafeBufferPointer { tokenizer.mergeParts(of: $0, belowRank: .max) }
                XCTAssertEqual(Array(batch.result(tag: tag)), expected, "\(tokenizer.mergeSource) piece \(tag)")
            }
        }
    }

    func testIncrementalDecoderHoldsBackPartialCharacters() throws {
        let tokenizer = try gpt2()
        let text = try tortureText()
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        var output = ""
        for id in tokenizer.encodeOrdinary(text) {
            let piece = try decoder.append(id)
            XCTAssertFalse(piece.contains("\u{FFFD}"), "emitted a partial character")
            output += piece
        }
        output += decoder.finish()
        XCTAssertEqual(output, text)
        // "😀" is split over two GPT-2 tokens: nothing comes out until the second.
        let emoji = tokenizer.encodeOrdinary("😀")
        XCTAssertGreaterThan(emoji.count, 1)
        var second = IncrementalDecoder(tokenizer: tokenizer)
        XCTAssertEqual(try second.append(emoji[0]), "")
        XCTAssertEqual(try emoji.dropFirst().map { try second.append($0) }.joined(), "😀")
        // An unfinished character at the end comes out as U+FFFD.
        var third = IncrementalDecoder(tokenizer: tokenizer)
        XCTAssertEqual(try third.append(emoji[0]), "")
        XCTAssertEqual(third.finish(), "\u{FFFD}")
    }

    func testInvalidUTF8OffsetIsReported() {
        XCTAssertNil(firstInvalidUTF8Offset(Array("héllo 😀".utf8)))
        XCTAssertEqual(firstInvalidUTF8Offset([0x61, 0x62, 0xFF, 0x63]), 2)
        XCTAssertEqual(firstInvalidUTF8Offset([0x61, 0xC3]), 1)  // truncated é
        XCTAssertEqual(firstInvalidUTF8Offset(Array("é".utf8) + [0xE2, 0x82]), 2)
    }

    func testErrorsNameWhatIsWrong() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bpe-errors-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func expectError(_ contains: String, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body()) { error in
                XCTAssertTrue("\(error)".contains(contains), "\(error) should mention \(contains)")
            }
        }
        expectError("no such file") { _ = try Tokenizer.load(path: directory.path + "/missing.tiktoken") }
        let bad = directory.appendingPathComponent("bad_gpt2.tiktoken")
        try "IQ== 0\nnot-base64!! 1\n".write(to: bad, atomically: true, encoding: .utf8)
        expectError("bad_gpt2.tiktoken:2") { _ = try Tokenizer.load(path: bad.path) }
        let partial = directory.appendingPathComponent("partial_gpt2.tiktoken")
        try "IQ== 0\n".write(to: partial, atomically: true, encoding: .utf8)
        expectError("no token for the byte 0x20") { _ = try Tokenizer.load(path: partial.path) }

        let vocab = (0..<256).map { "\(jsonString(ByteEncoder.encode([UInt8($0)]))):\($0)" }
        try ("{" + vocab.joined(separator: ",") + #","ab":256}"#).write(to: directory.appendingPathComponent("vocab.json"), atomically: true, encoding: .utf8)
        try "#version: 0.2\na zz\n".write(to: directory.appendingPathComponent("merges.txt"), atomically: true, encoding: .utf8)
        expectError("'zz', which is not in the vocabulary") { _ = try Tokenizer.load(path: directory.path) }
        try "#version: 0.2\na b\nab\n".write(to: directory.appendingPathComponent("merges.txt"), atomically: true, encoding: .utf8)
        expectError("merges.txt:3") { _ = try Tokenizer.load(path: directory.path) }
        try "{not json".write(to: directory.appendingPathComponent("vocab.json"), atomically: true, encoding: .utf8)
        expectError("not valid JSON") { _ = try Tokenizer.load(path: directory.path) }

        let tokenizer = try gpt2()
        expectError("token id 50257 at position 1") { _ = try tokenizer.decode([1, 50257]) }
        expectError("token id -1") { _ = try tokenizer.decode([-1]) }
    }
}

/// A seeded generator for the property tests (BPE depends on nothing of ours, Kernels included).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// vocab.json + merges.txt read as bytes: JSON escapes, and errors that name the file and place.
final class VocabularyParsingTests: XCTestCase {
    func testEscapesAndErrors() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vocab-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // The 256 byte tokens, written with a mix of escapes: \u0120 for "Ġ", \" and \\, a raw UTF-8 "Ċ".
        var entries: [String] = []
        for byte in 0..<256 {
            let text = ByteEncoder.encode([UInt8(byte)])
            let escaped: String
            switch text {
            case "\"": escaped = #"\""#
            case "\\": escaped = #"\\"#
            case "Ġ": escaped = #"\u0120"#
            default: escaped = text
            }
            entries.append("\"\(escaped)\" : \(byte)")
        }
        entries.append(#""\u0120t": 256"#)
        entries.append(#""<|endoftext|>": 257"#)
        try Data(("{\n  " + entries.joined(separator: ",\n  ") + "\n}\n").utf8).write(to: directory.appendingPathComponent("vocab.json"))
        try Data("#version: 0.2\r\nĠ t\r\n".utf8).write(to: directory.appendingPathComponent("merges.txt"))
        let tokenizer = try Tokenizer.load(path: directory.path)
        XCTAssertEqual(tokenizer.encode(" t \"\\"), [256, 32, 34, 92])
        XCTAssertEqual(tokenizer.id(of: "<|endoftext|>"), 257)

        func expectError(_ vocab: String, _ merges: String = "", _ message: String, line: UInt = #line) throws {
            try Data(vocab.utf8).write(to: directory.appendingPathComponent("vocab.json"))
            try Data(merges.utf8).write(to: directory.appendingPathComponent("merges.txt"))
            XCTAssertThrowsError(try Tokenizer.load(path: directory.path), line: line) {
                XCTAssertTrue("\($0)".contains(message), "\($0) should mention \(message)", line: line)
            }
        }
        try expectError(#"{"a": -1}"#, "", "the id of 'a' is not a non-negative integer")
        try expectError(#"{"a": 1, "b" 2}"#, "", "expected ':' at byte offset")
        try expectError(#"{"a": 1, "b": 2"#, "", "unexpected end")
        try expectError(#"{"a\q": 1}"#, "", "invalid escape")
        try expectError(#"{"a": 0, "b": 1}"#, "a c\n", "names 'c', which is not in the vocabulary")
        try expectError(#"{"a": 0, "b": 1}"#, "a b\n", "makes 'ab', which is not in the vocabulary")
        try expectError(#"{"a": 0, "b": 1}"#, "#version: 0.2\na\n", "merges.txt:2: expected 'left right'")
        try expectError(#"{"☃": 0}"#, "", "not in GPT-2's byte alphabet")
    }
}
