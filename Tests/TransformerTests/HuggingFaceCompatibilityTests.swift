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

