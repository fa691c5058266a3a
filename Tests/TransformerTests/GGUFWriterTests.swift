import BPE
import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// GGUFWriter's files read back by our GGUFFile and by gguf-py's GGUFReader (pip gguf==0.19.0),
/// and tokenizers written as GGUF metadata loading back with the same ids.
final class GGUFWriterTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-writer-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    static let metadata: [(key: String, value: GGUFWriter.Value)] = [
        ("general.architecture", .string("llama")),
        ("general.name", .string("héllo wörld")),
        ("test.u32", .uint32(4_000_000_000)),
        ("test.i32", .int32(-2_000_000_000)),
        ("test.u64", .uint64((1 << 40) + 3)),
        ("test.i64", .int64(-(1 << 40))),
        ("test.f32", .float32(0.25)),
        ("test.f64", .float64(3.141592653589793)),
        ("test.bool", .bool(true)),
        ("test.strings", .stringArray(["a", "bc", "", "Ġthe"])),
        ("test.i32s", .int32Array([1, -2, 3])),
        ("test.f32s", .float32Array([0.5, -1.25])),
        ("test.no_strings", .stringArray([])),
    ]

    /// The GGUF value type names gguf-py reports for `metadata`.
    static let valueTypes: [String: [String]] = [
        "general.architecture": ["STRING"], "general.name": ["STRING"],
        "test.u32": ["UINT32"], "test.i32": ["INT32"], "test.u64": ["UINT64"], "test.i64": ["INT64"],
        "test.f32": ["FLOAT32"], "test.f64": ["FLOAT64"], "test.bool": ["BOOL"],
        "test.strings": ["ARRAY", "STRING"], "test.i32s": ["ARRAY", "INT32"], "test.f32s": ["ARRAY", "FLOAT32"],
        "test.no_strings": ["ARRAY", "STRING"],
    ]

    /// A tensor of each type from floats, one from encoded bytes, and 1-D and 3-D shapes; with
    /// the values each should read back as (what our dequantizer gives for our quantizer's bytes).
    static func tensors() -> [(name: String, dimensions: [Int], type: GGMLType, values: [Float], encoded: Bool, expected: [Float])] {
        var result: [(name: String, dimensions: [Int], type: GGMLType, values: [Float], encoded: Bool, expected: [Float])] = []
        func add(_ name: String, _ dimensions: [Int], _ type: GGMLType, seed: UInt64, encoded: Bool = false) {
            let values = randomValues(dimensions.reduce(1, *), seed: seed)
            var expected = [Float](repeating: 0, count: values.count)
            let bytes = values.withUnsafeBufferPointer { quantize(type, $0) }
            bytes.withUnsafeBytes { raw in
                expected.withUnsafeMutableBufferPointer { dequantize(type, raw.baseAddress!, count: values.count, into: $0.baseAddress!) }
            }
            result.append((name, dimensions, type, values, encoded, expected))
        }
        for (index, type) in [GGMLType.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1].enumerated() {
            add("blk.0.\(type.description.lowercased()).weight", [64, 3], type, seed: UInt64(index))
        }
        add("output_norm.weight", [5], .f32, seed: 10)
        add("cube", [32, 2, 3], .q8_0, seed: 11)
        add("encoded", [32, 2], .q4_1, seed: 12, encoded: true)
        return result
    }

    func writeSample(to url: URL) throws {
        var writer = GGUFWriter()
        writer.setMetadata(Self.metadata)
        for tensor in Self.tensors() {
            if tensor.encoded {
                let bytes = tensor.values.withUnsafeBufferPointer { quantize(tensor.type, $0) }
                try writer.addTensor(tensor.name, dimensions: tensor.dimensions, type: tensor.type, encodedBytes: bytes)
            } else {
                try writer.addTensor(tensor.name, dimensions: tensor.dimensions, type: tensor.type, values: tensor.values)
            }
        }
        try writer.write(to: url)
    }

    func testReadBackByGGUFFile() throws {
        let url = directory.appendingPathComponent("sample.gguf")
        try writeSample(to: url)
        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.metadata.count, Self.metadata.count)
        for (key, value) in Self.metadata { XCTAssertEqual(file.metadata[key], value.fileValue, key) }
        let tensors = Self.tensors()
        XCTAssertEqual(file.tensorOrder, tensors.map(\.name))
        var end = 0
        for tensor in tensors {
            let info = try file.tensor(tensor.name)
            XCTAssertEqual(info.dimensions, tensor.dimensions, tensor.name)
            XCTAssertEqual(info.type, tensor.type, tensor.name)
            XCTAssertEqual(info.offset % 32, 0, tensor.name)
            XCTAssertEqual(try file.floats(tensor.name), tensor.expected, tensor.name)
            if tensor.type == .f32 { XCTAssertEqual(try file.floats(tensor.name), tensor.values, tensor.name) }
            end = info.offset + (info.byteCount + 31) / 32 * 32
        }
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int, end)
        XCTAssertEqual(try temporaryFiles(), [])
    }

    func testReadBackByGGUFPy() throws {
        let url = directory.appendingPathComponent("sample.gguf")
        try writeSample(to: url)
        let script = """
        import sys, json
        from gguf import GGUFReader
        from gguf.quants import dequantize
        r = GGUFReader(sys.argv[1])
        from gguf.constants import GGUFValueType
        def types(f):
            # gguf-py takes an array's item type from its first item; an empty one has it in parts[3].
            names = [t.name for t in f.types]
            return names + [GGUFValueType(int(f.parts[3][0])).name] if names == ["ARRAY"] else names
        fields = {k: {"types": types(f), "contents": f.contents()} for k, f in r.fields.items()
                  if not k.startswith("GGUF.")}
        tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape],
                    "values": dequantize(t.data, t.tensor_type).ravel().tolist()} for t in r.tensors]
        print(json.dumps({"fields": fields, "tensors": tensors}))
        """
        let output = try runPython(script, [url.path])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let fields = try XCTUnwrap(json["fields"] as? [String: [String: Any]])
        XCTAssertEqual(Set(fields.keys), Set(Self.metadata.map(\.key)))
        for (key, types) in Self.valueTypes { XCTAssertEqual(fields[key]?["types"] as? [String], types, key) }
        XCTAssertEqual(fields["general.name"]?["contents"] as? String, "héllo wörld")
        XCTAssertEqual(fields["test.strings"]?["contents"] as? [String], ["a", "bc", "", "Ġthe"])
        XCTAssertEqual(fields["test.i32s"]?["contents"] as? [Int], [1, -2, 3])
        XCTAssertEqual(fields["test.u64"]?["contents"] as? Int, (1 << 40) + 3)

        let theirs = try XCTUnwrap(json["tensors"] as? [[String: Any]])
        let ours = Self.tensors()
        XCTAssertEqual(theirs.compactMap { $0["name"] as? String }, ours.map(\.name))
        for (tensor, reference) in zip(ours, theirs) {
            XCTAssertEqual(reference["type"] as? String, tensor.type.description, tensor.name)
            XCTAssertEqual(reference["shape"] as? [Int], tensor.dimensions, tensor.name)
            let values = try XCTUnwrap(reference["values"] as? [Double], tensor.name)
            XCTAssertEqual(values.count, tensor.expected.count, tensor.name)
            // gguf-py's dequantization rounds d * q + m apart where our kernel may fuse it.
            let difference = zip(values, tensor.expected).map { abs($0 - Double($1)) }.max() ?? 0
            XCTAssertLessThan(difference, 1e-6, tensor.name)
        }
    }

    func testOverwritingReplacesTheFileWhole() throws {
        let url = directory.appendingPathComponent("model.gguf")
        try writeSample(to: url)
        var writer = GGUFWriter()
        writer.setMetadata("general.name", .string("first"))
        writer.setMetadata("general.alignment", .uint32(64))
        writer.setMetadata("general.name", .string("second"))  // keeps its place, takes the value
        XCTAssertEqual(writer.metadata.map(\.key), ["general.name", "general.alignment"])
        try writer.addTensor("a", dimensions: [3], type: .f32, values: [1, 2, 3])
        try writer.addTensor("b", dimensions: [32], type: .q8_0, values: randomValues(32, seed: 1))
        try writer.write(to: url)
        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.metadata["general.name"]?.string, "second")
        XCTAssertEqual(file.tensorOrder, ["a", "b"])
        XCTAssertEqual(try file.tensor("b").offset % 64, 0)
        XCTAssertEqual(try file.floats("a"), [1, 2, 3])
        XCTAssertEqual(try temporaryFiles(), [])
    }

    // MARK: tokenizers

    /// Text with words, digits, punctuation, runs of spaces and non-ASCII letters to train on.
    static func trainingText() -> String {
        let syllables = ["the", "qu", "ick", "br", "own", "fox", "ju", "mps", "ov", "er", "la", "zy", "do", "g", "to",
                         "ken", "me", "rg", "es", "by", "te", "naï", "ve", "ca", "fé", "Stra", "ße", "日本", "語", "😀",
                         "'t", "'s", "20", "24", "314", "15", "he", "llo", ",", "wor", "ld", "!"]
        var generator = SplitMix64(seed: 42)
        var text = ""
        for i in 0..<6000 {
            for _ in 0...(generator.next() % 3) { text += syllables[Int(generator.next() % UInt64(syllables.count))] }
            text += i % 17 == 16 ? ".\n\n" : (i % 5 == 4 ? "  " : " ")
        }
        return text
    }

    static let heldOut = "Hello world's  end\n\n 1234567 naïve café 😀 <|endoftext|>the fox<|im_start|> x  \t y's 'll ’s 日本語!!"

    /// Writes `tokenizer` (and a tensor) as GGUF, then loads it back with `Tokenizer.fromGGUF`.
    func roundTrip(_ tokenizer: Tokenizer, _ entries: [(key: String, value: GGUFWriter.Value)]) throws -> (GGUFFile, Tokenizer) {
        var writer = GGUFWriter()
        writer.setMetadata("general.architecture", .string("llama"))
        writer.setMetadata(entries)
        try writer.addTensor("token_embd.weight", dimensions: [32, tokenizer.vocabularySize], type: .q8_0,
                             values: randomValues(32 * tokenizer.vocabularySize, seed: 5))
        let url = directory.appendingPathComponent("tokenizer-\(UUID()).gguf")
        try writer.write(to: url)
        let file = try GGUFFile(url: url)
        return (file, try Tokenizer.fromGGUF(file))
    }

    func testTrainedTokenizerRoundTrips() throws {
        let text = Self.trainingText()
        for pattern in [PreTokenizer.gpt2, .smollm] {
            let trainer = BPETrainer(vocabularySize: 256 + 150 + 2, specialTokens: ["<|endoftext|>", "<|im_start|>"],
                                     preTokenizer: pattern)
            let tokenizer = try trainer.train(texts: [text])
            let entries = try tokenizer.ggufMetadata(bosTokenID: 406, eosTokenID: 407, addBOSToken: false,
                                                     chatTemplate: "{{ messages }}")
            let (file, loaded) = try roundTrip(tokenizer, entries)
            let m = file.metadata
            XCTAssertEqual(m["tokenizer.ggml.model"]?.string, "gpt2")
            XCTAssertEqual(m["tokenizer.ggml.pre"]?.string, pattern == .gpt2 ? "gpt-2" : "smollm")
            XCTAssertEqual(m["tokenizer.ggml.bos_token_id"], .uint(406))
            XCTAssertEqual(m["tokenizer.ggml.eos_token_id"], .uint(407))
            XCTAssertEqual(m["tokenizer.ggml.add_bos_token"], .bool(false))
            XCTAssertEqual(m["tokenizer.chat_template"]?.string, "{{ messages }}")
            let types = try XCTUnwrap(m["tokenizer.ggml.token_type"]?.array?.compactMap(\.int))
            XCTAssertEqual(types, [Int](repeating: 1, count: 406) + [3, 3])
            XCTAssertEqual(m["tokenizer.ggml.merges"]?.array?.count, 150)

            XCTAssertEqual(loaded.preTokenizer, pattern)
            XCTAssertEqual(loaded.vocabularySize, tokenizer.vocabularySize)
            XCTAssertEqual(loaded.specialTokens, tokenizer.specialTokens)
            for sample in [Self.heldOut, String(text.prefix(3000))] {
                XCTAssertEqual(loaded.encode(sample, allowedSpecial: .all), tokenizer.encode(sample, allowedSpecial: .all), "\(pattern)")
                XCTAssertEqual(loaded.encodeOrdinary(sample), tokenizer.encodeOrdinary(sample), "\(pattern)")
            }
            for id in 0..<tokenizer.vocabularySize { XCTAssertEqual(try loaded.bytes(of: id), try tokenizer.bytes(of: id), "id \(id)") }
        }
    }

    /// SmolLM2's tokenizer, read from llama.cpp's GGUF and written again, gives the same
    /// tokens, token types and merges as llama.cpp's converter wrote.
    func testSmolLM2TokenizerMetadataEqualsLlamaCpp() throws {
        let original = try GGUFFile(url: try assetURL("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        let tokenizer = try Tokenizer.fromGGUF(original)
        let m = original.metadata
        let entries = try tokenizer.ggufMetadata(bosTokenID: m["tokenizer.ggml.bos_token_id"]?.int,
                                                 eosTokenID: m["tokenizer.ggml.eos_token_id"]?.int,
                                                 paddingTokenID: m["tokenizer.ggml.padding_token_id"]?.int,
                                                 addBOSToken: m["tokenizer.ggml.add_bos_token"]?.bool,
                                                 chatTemplate: m["tokenizer.chat_template"]?.string)
        for (key, value) in entries { XCTAssertTrue(m[key] == value.fileValue, key) }
        let (_, loaded) = try roundTrip(tokenizer, entries)
        let sample = Self.heldOut + " <|im_end|> 3.14159 " + Self.trainingText().prefix(2000)
        XCTAssertEqual(loaded.encode(sample, allowedSpecial: .all), tokenizer.encode(sample, allowedSpecial: .all))
    }

    /// GPT-2 from tiktoken's rank file (merges recovered from the ranks) gives the same ids.
    func testGPT2RankFileRoundTrips() throws {
        let tokenizer = try Tokenizer.loadTiktoken(try assetURL("tokenizers/gpt2.tiktoken"), pattern: .gpt2)
        let eos = tokenizer.id(of: "<|endoftext|>")
        let (file, loaded) = try roundTrip(tokenizer, try tokenizer.ggufMetadata(bosTokenID: eos, eosTokenID: eos))
        XCTAssertEqual(file.metadata["tokenizer.ggml.merges"]?.array?.count, 50_000)
        let sample = Self.heldOut + Self.trainingText().prefix(5000)
        XCTAssertEqual(loaded.encode(sample, allowedSpecial: .all), tokenizer.encode(sample, allowedSpecial: .all))
    }

    // MARK: errors

    func testBadInputIsRefusedWithAReason() throws {
        func expectError(_ contains: String, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body()) { XCTAssertTrue("\($0)".contains(contains), "'\($0)' should mention '\(contains)'") }
        }
        var writer = GGUFWriter()
        expectError("tensor w: row length 40 is not a multiple of Q4_0's block of 32") {
            try writer.addTensor("w", dimensions: [40, 2], type: .q4_0, values: [Float](repeating: 0, count: 80))
        }
        expectError("tensor w: 63 values given for dimensions [32, 2] (64 elements)") {
            try writer.addTensor("w", dimensions: [32, 2], type: .f32, values: [Float](repeating: 0, count: 63))
        }
        expectError("tensor e: 10 bytes given, but 32 Q8_0 values take 34") {
            try writer.addTensor("e", dimensions: [32], type: .q8_0, encodedBytes: [UInt8](repeating: 0, count: 10))
        }
        expectError("5 dimensions") { try writer.addTensor("w", dimensions: [1, 1, 1, 1, 1], type: .f32, values: [0]) }
        expectError("at least 1") { try writer.addTensor("w", dimensions: [4, 0], type: .f32, values: []) }
        expectError("1 to 63 bytes") { try writer.addTensor("", dimensions: [1], type: .f32, values: [0]) }
        expectError("1 to 63 bytes") { try writer.addTensor(String(repeating: "x", count: 64), dimensions: [1], type: .f32, values: [0]) }
        try writer.addTensor("w", dimensions: [1], type: .f32, values: [0])
        expectError("tensor w: added twice") { try writer.addTensor("w", dimensions: [1], type: .f32, values: [0]) }
        XCTAssertEqual(writer.tensorNamesInOrder, ["w"])

        let missing = directory.appendingPathComponent("no/such/dir/x.gguf")
        expectError("\(missing.path): cannot write") { try writer.write(to: missing) }
        writer.setMetadata("general.alignment", .int32(32))
        expectError("general.alignment must be a u32 power of two") { try writer.write(to: directory.appendingPathComponent("x.gguf")) }
        writer.setMetadata("general.alignment", .uint32(48))
        expectError("general.alignment must be a u32 power of two") { try writer.write(to: directory.appendingPathComponent("x.gguf")) }
        writer.setMetadata("", .bool(true))
        writer.setMetadata("general.alignment", .uint32(32))
        expectError("metadata key '' must have 1 to 65535 bytes") { try writer.write(to: directory.appendingPathComponent("x.gguf")) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("x.gguf").path))
        XCTAssertEqual(try temporaryFiles(), [])

        let tokenizer = try BPETrainer(vocabularySize: 260, specialTokens: ["<|endoftext|>"]).train(texts: ["aaab aab ab"])
        expectError("tokenizer: eos_token_id 260 is outside the vocabulary (0..<260)") { _ = try tokenizer.ggufMetadata(eosTokenID: 260) }
        let cl100k = try BPETrainer(vocabularySize: 260, preTokenizer: .cl100k).train(texts: ["aaab aab ab"])
        expectError("the cl100k pre-tokenizer has no tokenizer.ggml.pre name") { _ = try cl100k.ggufMetadata() }
    }

    /// Files the writer left behind under a temporary name.
    func temporaryFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".tmp") }
    }
}

/// Uniform values in [-1, 1) from a fixed seed.
private func randomValues(_ count: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in generator.nextUnitFloat() * 2 - 1 }
}
