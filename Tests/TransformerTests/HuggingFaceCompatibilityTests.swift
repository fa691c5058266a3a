import Foundation
import TestSupport
import XCTest
@testable import Transformer

/// Checkpoints cross over with Hugging Face transformers both ways (python3 with torch and
/// transformers; CI installs them and sets SWIFTGPT_REQUIRE_ASSETS=1 so this cannot skip there).
final class HuggingFaceCompatibilityTests: XCTestCase {
    func testCheckpointsCrossBothWays() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hf-\(UUID())")
        defer { try? FileManager.default.removeItem(at: root) }
        let theirs = root.appendingPathComponent("from-transformers"), ours = root.appendingPathComponent("from-swiftgpt")

        // 1. transformers saves a random GPT2LMHeadModel of its own shape; we load it.
        let output = try runPython("""
            import json, sys, torch
            from transformers import GPT2Config, GPT2LMHeadModel
            torch.manual_seed(0)
            config = GPT2Config(vocab_size=50, n_positions=12, n_embd=24, n_layer=2, n_head=3, bos_token_id=0, eos_token_id=0)
            model = GPT2LMHeadModel(config).eval()
            with torch.no_grad():
                for p in model.parameters(): p.add_(torch.randn_like(p) * 0.1)
            model.save_pretrained(sys.argv[1])
            tokens = torch.tensor([[3, 14, 15, 9, 2, 6, 5, 35, 8, 9, 7, 9]])
            with torch.no_grad(): logits = model(tokens).logits
            print(json.dumps({"tokens": tokens[0].tolist(), "logits": logits[0].flatten().tolist()}))
            """, [theirs.path])
        let expected = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [String: Any]
        let model = try Checkpoint.load(theirs)
        let tokens = (expected["tokens"] as! [Int]).map(Int32.init)
        try model.forward(tokens: tokens, targets: nil, batch: 1, length: tokens.count)
        let logits = (expected["logits"] as! [Double]).map(Float.init)
        XCTAssertLessThan(zip(Array(model.logits), logits).map { abs($0 - $1) }.max()!, 1e-4, "loading a transformers checkpoint")

        // 2. We save the fixture model; transformers loads it and gives our logits.
        let fixture = try ParityFixture("gpt-gelu")
        try Checkpoint.save(fixture.model, to: ours)
        try fixture.model.forward(tokens: fixture.tokens, targets: nil, batch: fixture.batch, length: fixture.length)
        let theirLogits = try runPython("""
            import json, sys, torch
            from transformers import GPT2LMHeadModel
            model = GPT2LMHeadModel.from_pretrained(sys.argv[1]).eval()
            tokens = torch.tensor(json.loads(sys.argv[2])).view(\(fixture.batch), \(fixture.length))
            with torch.no_grad(): print(json.dumps(model(tokens).logits.flatten().tolist()))
            """, [ours.path, "\(fixture.tokens)"])
        let values = (try JSONSerialization.jsonObject(with: Data(theirLogits.utf8)) as! [Double]).map(Float.init)
        XCTAssertEqual(values.count, fixture.model.logits.count)
        XCTAssertLessThan(zip(Array(fixture.model.logits), values).map { abs($0 - $1) }.max()!, 1e-4, "transformers loading ours")
    }
}


/// Llama checkpoints cross over with transformers' LlamaForCausalLM both ways, and a GGUF
/// model (rows permuted for GGUF's RoPE pairing) converts to a Hugging Face directory that
/// transformers runs with the distribution of our GGUF path.
final class LlamaCheckpointTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("llama-\(UUID())")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: root) }

    func testCheckpointsCrossBothWays() throws {
        let theirs = root.appendingPathComponent("from-transformers"), ours = root.appendingPathComponent("from-swiftgpt")
        // 1. transformers saves a random LlamaForCausalLM (grouped-query attention, untied output); we load it.
        let output = try runPython("""
            import json, sys, torch
            from transformers import LlamaConfig, LlamaForCausalLM
            torch.manual_seed(0)
            config = LlamaConfig(vocab_size=50, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                                 num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-6, rope_theta=500.0,
                                 tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
            model = LlamaForCausalLM(config).eval()
            with torch.no_grad():
                for p in model.parameters(): p.add_(torch.randn_like(p) * 0.1)
            model.save_pretrained(sys.argv[1])
            tokens = torch.tensor([[3, 14, 15, 9, 2, 6, 5, 35, 8, 9, 7, 9, 32, 38, 4, 6]])
            with torch.no_grad(): logits = model(tokens).logits
            print(json.dumps({"tokens": tokens[0].tolist(), "logits": logits[0].flatten().tolist()}))
            """, [theirs.path])
        let expected = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [String: Any]
        let model = try Checkpoint.load(theirs)
        XCTAssertEqual(model.config.keyValueHeadCount, 2)
        XCTAssertEqual(model.config.positions, .rotary(base: 500))
        let tokens = (expected["tokens"] as! [Int]).map(Int32.init)
        try model.forward(tokens: tokens, targets: nil, batch: 1, length: tokens.count)
        let logits = (expected["logits"] as! [Double]).map(Float.init)
        XCTAssertLessThan(zip(Array(model.logits), logits).map { abs($0 - $1) }.max()!, 1e-4, "loading a transformers checkpoint")

        // 2. We save the tied Llama fixture; transformers loads it and gives our logits.
        for name in ["llama-tied", "llama-untied"] {
            let fixture = try ParityFixture(name)
            try Checkpoint.save(fixture.model, to: ours)
            try fixture.model.forward(tokens: fixture.tokens, targets: nil, batch: fixture.batch, length: fixture.length)
            let theirLogits = try runPython("""
                import json, sys, torch
                from transformers import AutoModelForCausalLM
                model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
                tokens = torch.tensor(json.loads(sys.argv[2])).view(\(fixture.batch), \(fixture.length))
                with torch.no_grad(): print(json.dumps(model(tokens).logits.flatten().tolist()))
                """, [ours.path, "\(fixture.tokens)"])
            let values = (try JSONSerialization.jsonObject(with: Data(theirLogits.utf8)) as! [Double]).map(Float.init)
            XCTAssertEqual(values.count, fixture.model.logits.count)
            XCTAssertLessThan(zip(Array(fixture.model.logits), values).map { abs($0 - $1) }.max()!, 1e-4, "\(name): transformers loading ours")
        }
    }

    /// SmolLM2's GGUF (attn_q/attn_k rows in GGUF's adjacent-pair layout) -> a Hugging Face
    /// directory -> transformers: the next-token distribution of our in-place GGUF path.
    func testSmolLM2GGUFConvertsToAHuggingFaceDirectory() throws {
        let path = try assetURL("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
        let dequantized = try ModelLoader.load(path: path, ggufWeights: .dequantized)
        XCTAssertEqual(dequantized.model.config.rotaryPairing, .adjacent)
        let directory = root.appendingPathComponent("smollm2")
        try Checkpoint.save(dequantized.model, tokenizer: dequantized.tokenizer, chatTemplate: dequantized.chatTemplateSource,
                            to: directory)
        let inPlace = try ModelLoader.load(path: path)
        let prompt = try XCTUnwrap(inPlace.chatTemplate).render([.init(role: "user", content: "What is the capital of France?")])
        let ids = inPlace.tokenizer.encode(prompt, allowedSpecial: .all)
        let ours = Array(try inPlace.model.forward(ids, cache: try KVCache(inPlace.model, capacity: ids.count)))
        let output = try runPython("""
            import json, sys, torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
            tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
            ids = json.loads(sys.argv[2])
            with torch.no_grad(): logits = model(torch.tensor([ids])).logits[0, -1]
            chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                                 tokenize=False, add_generation_prompt=True)
            print(json.dumps({"logprobs": torch.log_softmax(logits.double(), -1).tolist(), "ids": tokenizer(sys.argv[3])["input_ids"],
                              "chat": chat}))
            """, [directory.path, "\(ids)", prompt])
        let reference = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [String: Any]
        XCTAssertEqual(reference["ids"] as? [Int], ids, "transformers' tokenizer from our tokenizer.json")
        XCTAssertEqual(reference["chat"] as? String, prompt, "the chat template in tokenizer_config.json")
        let logprobs = reference["logprobs"] as! [Double]
        let maxLogit = Double(ours.max()!)
        let normalizer = log(ours.reduce(0.0) { $0 + exp(Double($1) - maxLogit) }) + maxLogit
        let kl = zip(logprobs, ours).reduce(0.0) { $0 + exp($1.0) * ($1.0 - (Double($1.1) - normalizer)) }
        XCTAssertLessThan(kl, 1e-4, "KL(transformers on the converted directory || our GGUF path)")
        XCTAssertEqual(logprobs.indices.max { logprobs[$0] < logprobs[$1] }, ours.indices.max { ours[$0] < ours[$1] })
        print("SmolLM2 GGUF -> Hugging Face: KL \(kl)")
    }
}
