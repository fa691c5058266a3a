import Foundation
import Kernels
import TestSupport
import XCTest
@testable import Transformer

/// LoRA on a tiny random Llama against PyTorch + PEFT (scripts/make-lora-fixtures.py): adapters
/// read from PEFT's own save_pretrained output, gradients of every lora_A / lora_B within 1e-3
/// relative, over a dense base (Hugging Face layout) and over the same base quantised to Q4_1
/// in a GGUF file used in place (QLoRA-style; llama.cpp's RoPE row order, which the adapter I/O
/// must undo); and `peft` loading adapters we wrote gives our logits.
final class LoRATests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// The fixture's model (frozen) with PEFT's adapters attached, and its tokens and targets.
    func model(_ name: String) throws -> (LanguageModel, LoRAAdapters, SafetensorsFile, tokens: [Int32], targets: [Int32]) {
        let file = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("\(name).safetensors"))
        let model: LanguageModel
        if name == "lora-q4_1" {
            model = try ModelLoader.model(from: GGUFFile(url: Self.fixtures.appendingPathComponent("lora-q4_1.gguf")), weights: .inPlace)
            XCTAssertEqual(model.config.rotaryPairing, .adjacent)
            guard case .quantized(.q4_1, _, _, _) = model.weights.blocks[0].qkv.blocks[0] else { throw XCTSkip("not in place") }
        } else {
            model = try ParityFixture(name, trainable: false).model
        }
        XCTAssertFalse(model.trainable)
        let adapters = try LoRAAdapters.load(Self.fixtures.appendingPathComponent("\(name)-adapter"), config: model.config)
        XCTAssertEqual(adapters.settings.rank, 4)
        XCTAssertEqual(adapters.settings.scale, 2)
        XCTAssertEqual(adapters.targets.count, 2 * 7)
        try model.attach(adapters)
        return (model, adapters, file, try file.read("tokens").map { Int32($0) }, try file.read("targets").map { Int32($0) })
    }

    func checkAgainstPEFT(_ name: String) throws {
        let (model, adapters, file, tokens, targets) = try model(name)
        let loss = try XCTUnwrap(model.forward(tokens: tokens, targets: targets, batch: 2, length: 8))
        XCTAssertEqual(loss, try file.read("loss")[0], accuracy: 1e-4)
        let logits = try file.read("logits")
        XCTAssertLessThan(zip(model.logits, logits).map { abs($0 - $1) }.max()!, 1e-4)
        model.zeroGradients()
        model.backward()
        let ours = adapters.peftTensors(adapters.gradients)
        XCTAssertEqual(ours.count, 28)
        for tensor in ours {
            let expected = try file.read("grad." + tensor.name)
            let scale = expected.map(abs).max()!, error = zip(tensor.values, expected).map { abs($0 - $1) }.max()!
            XCTAssertGreaterThan(scale, 1e-4, tensor.name)
            XCTAssertLessThan(error / scale, 1e-3, "\(name) \(tensor.name): error \(error), scale \(scale)")
        }
    }

    func testGradientsMatchPEFTOnDenseBase() throws { try checkAgainstPEFT("lora-dense") }

    func testGradientsMatchPEFTOnQ4_1BaseInPlace() throws { try checkAgainstPEFT("lora-q4_1") }

    func testOnlyAdaptersTrain() throws {
        let (model, adapters, _, tokens, targets) = try model("lora-dense")
        let before = Array(model.parameters)
        model.zeroGradients()
        try model.forward(tokens: tokens, targets: targets, batch: 2, length: 8, training: true, dropoutSeed: 3)
        model.backward()
        XCTAssertEqual(model.trainedTensors.values.baseAddress, adapters.parameters.baseAddress)
        XCTAssertEqual(Array(model.parameters), before)
    }

    /// The adapters folded into the weights give the adapted model's outputs with plain linears.
    func testFusedWeightsComputeTheSame() throws {
        let (model, _, _, tokens, _) = try model("lora-dense")
        try model.forward(tokens: tokens, targets: nil, batch: 2, length: 8)
        let adapted = Array(model.logits)
        let plain = try ParityFixture("lora-dense", trainable: false).model
        for (l, block) in model.weights.blocks.enumerated() {
            for (linear, name) in [(block.qkv, "attn_qkv"), (block.attentionOutput, "attn_output"), (block.up, "ffn_up"), (block.down, "ffn_down")] {
                _ = plain.parameter("blk.\(l).\(name).weight").update(fromContentsOf: linear.fused())
            }
        }
        try plain.forward(tokens: tokens, targets: nil, batch: 2, length: 8)
        XCTAssertLessThan(zip(plain.logits, adapted).map { abs($0 - $1) }.max()!, 1e-4)
        XCTAssertGreaterThan(zip(plain.logits, try ParityFixture("lora-dense").model.logitsOf(tokens)).map { abs($0 - $1) }.max()!, 1e-2)
    }

    /// Generation through the KV cache applies the adapters as the training forward does, and
    /// merging them into a dequantised copy of the Q4_1 base computes the same function.
    func testCachedGenerationAndMergeMatchTheAdaptedModel() throws {
        let (model, _, _, tokens, _) = try model("lora-q4_1")
        let adapted = try model.logitsOf(tokens)
        let cache = try KVCache(model, capacity: 8)
        let last = Array(try model.forward(tokens[0..<8].map(Int.init), cache: cache))
        let V = model.config.vocabularySize
        XCTAssertLessThan(zip(last, adapted[(7 * V)..<(8 * V)]).map { abs($0 - $1) }.max()!, 1e-4)

        let merged = try ModelLoader.model(from: GGUFFile(url: Self.fixtures.appendingPathComponent("lora-q4_1.gguf")), weights: .dequantized)
        try merged.attach(try LoRAAdapters.load(Self.fixtures.appendingPathComponent("lora-q4_1-adapter"), config: merged.config))
        try merged.mergeAdapters()
        XCTAssertNil(merged.adapters)
        XCTAssertLessThan(zip(try merged.logitsOf(tokens), adapted).map { abs($0 - $1) }.max()!, 1e-4)
        // Quantised matrices in place cannot take the merge.
        XCTAssertThrowsError(try model.mergeAdapters()) { XCTAssertTrue("\($0)".contains("dequantised"), "\($0)") }
    }

    func testSaveAndLoadRoundTrip() throws {
        let (model, adapters, _, _, _) = try model("lora-q4_1")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try adapters.save(to: directory)
        let again = try LoRAAdapters.load(directory, config: model.config)
        XCTAssertEqual(Array(again.parameters), Array(adapters.parameters))
        XCTAssertEqual(again.settings, adapters.settings)
    }

    /// peft loads the adapters we write (q/k rows back in Hugging Face's order) onto the
    /// transformers model of the same (dequantised) base and gives our logits.
    func testPEFTLoadsOurAdapters() throws {
        let (model, adapters, _, tokens, _) = try model("lora-q4_1")
        var generator = SplitMix64(seed: 9)
        for i in adapters.parameters.indices { adapters.parameters[i] = generator.nextNormal() * 0.1 }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try adapters.save(to: directory)
        try model.forward(tokens: tokens, targets: nil, batch: 2, length: 8)
        let script = """
        import json, sys, torch
        from safetensors import safe_open
        from transformers import LlamaConfig, LlamaForCausalLM
        from peft import PeftModel
        f = safe_open(sys.argv[1], "pt")
        config = json.loads(f.metadata()["config"])
        config = {k: v for k, v in config.items() if k not in ("batch", "length")}
        config["attn_implementation"] = "eager"
        model = LlamaForCausalLM(LlamaConfig(**config)).float()
        model.load_state_dict({k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("param.")}, strict=True)
        model = PeftModel.from_pretrained(model, sys.argv[2])
        tokens = f.get_tensor("tokens").long()
        with torch.no_grad():
            print(json.dumps(model(input_ids=tokens).logits.reshape(-1).tolist()))
        """
        let output = try runPython(script, [Self.fixtures.appendingPathComponent("lora-q4_1.safetensors").path, directory.path])
        let theirs = try JSONDecoder().decode([Float].self, from: Data(output.utf8))
        XCTAssertEqual(theirs.count, model.logits.count)
        XCTAssertLessThan(zip(theirs, model.logits).map { abs($0 - $1) }.max()!, 1e-3)
    }

    /// GPT-2's projections are Conv1D modules in transformers ([in, out] weights): peft loads our
    /// adapters on all four (c_attn, attn c_proj, c_fc, mlp c_proj) and gives our logits.
    func testPEFTLoadsOurGPT2Adapters() throws {
        let fixture = try ParityFixture("gpt-gelu", trainable: false)
        let model = fixture.model
        let adapters = try LoRAAdapters(config: model.config, settings: LoRASettings(rank: 2, alpha: 4, dropout: 0))
        XCTAssertEqual(Set(adapters.targets.map(\.shortName)), ["c_attn", "c_proj", "c_fc", "mlp.c_proj"])
        var generator = SplitMix64(seed: 4)
        for i in adapters.parameters.indices { adapters.parameters[i] = generator.nextNormal() * 0.2 }
        try model.attach(adapters)
        try model.forward(tokens: fixture.tokens, targets: nil, batch: fixture.batch, length: fixture.length)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try adapters.save(to: directory)
        let script = """
        import json, sys, torch
        from safetensors import safe_open
        from transformers import GPT2Config, GPT2LMHeadModel
        from peft import PeftModel
        f = safe_open(sys.argv[1], "pt")
        c = json.loads(f.metadata()["config"])
        config = GPT2Config(vocab_size=c["vocab_size"], n_positions=c["n_positions"], n_embd=c["n_embd"], n_layer=c["n_layer"],
                            n_head=c["n_head"], activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            attn_implementation="eager")
        model = GPT2LMHeadModel(config).float()
        missing, unexpected = model.load_state_dict({"transformer." + k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("param.")},
                                                    strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        model.tie_weights()
        model = PeftModel.from_pretrained(model, sys.argv[2])
        with torch.no_grad():
            print(json.dumps(model(input_ids=f.get_tensor("tokens").long()).logits.reshape(-1).tolist()))
        """
        let output = try runPython(script, [ParityFixture.url("gpt-gelu").path, directory.path])
        let theirs = try JSONDecoder().decode([Float].self, from: Data(output.utf8))
        XCTAssertEqual(theirs.count, model.logits.count)
        XCTAssertLessThan(zip(theirs, model.logits).map { abs($0 - $1) }.max()!, 1e-3)
    }

    func testBadAdaptersAreRefusedByName() throws {
        let config = try ParityFixture("lora-dense", trainable: false).model.config
        XCTAssertThrowsError(try LoRAAdapters(config: config, settings: LoRASettings(targets: ["q", "c_attn"]))) {
            XCTAssertTrue("\($0)".contains("c_attn"), "\($0)")
        }
        XCTAssertThrowsError(try LoRAAdapters(config: config, settings: LoRASettings(rank: 0)))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        XCTAssertThrowsError(try LoRAAdapters.load(directory, config: config)) { XCTAssertTrue("\($0)".contains("adapter_config.json")) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data(#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true}"#.utf8)
            .write(to: directory.appendingPathComponent("adapter_config.json"))
        XCTAssertThrowsError(try LoRAAdapters.load(directory, config: config)) { XCTAssertTrue("\($0)".contains("use_dora"), "\($0)") }
        // An adapter for a model of another shape.
        let small = try LoRAAdapters(config: .llama(layers: 1, heads: 4, keyValueHeads: 2, embedding: 64, hidden: 96,
                                                    vocabularySize: 64, contextLength: 16), settings: LoRASettings())
        try small.save(to: directory)
        XCTAssertThrowsError(try LoRAAdapters.load(directory, config: config)) { XCTAssertTrue("\($0)".contains("missing"), "\($0)") }
    }
}

extension LanguageModel {
    /// The logits of a training-shaped forward pass over (2, 8) tokens, copied.
    func logitsOf(_ tokens: [Int32]) throws -> [Float] {
        try forward(tokens: tokens, targets: nil, batch: 2, length: 8)
        return Array(logits)
    }
}
