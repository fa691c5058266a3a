import XCTest
@testable import Transformer

final class ModelConfigTests: XCTestCase {
    func testGPT2ParameterCountMatchesHuggingFace() {
        // sum(p.numel() for p in GPT2LMHeadModel(GPT2Config()).parameters()) == 124,439,808
        XCTAssertEqual(ModelConfig.gpt2(layers: 12, heads: 12, embedding: 768).parameterCount, 124_439_808)
        // gpt2-medium: 354,823,168
        XCTAssertEqual(ModelConfig.gpt2(layers: 24, heads: 16, embedding: 1024).parameterCount, 354_823_168)
    }

    func testSmolLM2ParameterCount() {
        // SmolLM2-135M: 30 layers, width 576, 9 heads / 3 KV heads, SwiGLU 1536, tied: 134,515,008.
        let config = ModelConfig(
            family: .llama, vocabularySize: 49152, contextLength: 8192, embeddingSize: 576,
            layerCount: 30, headCount: 9, keyValueHeadCount: 3, hiddenSize: 1536,
            activation: .swiglu, norm: .rmsNorm, normEpsilon: 1e-5,
            positions: .rotary(base: 100_000), bias: false, tiedEmbeddings: true, dropout: 0)
        XCTAssertEqual(config.problems, [])
        XCTAssertEqual(config.parameterCount, 134_515_008)
    }

    func testProblemsNameTheField() {
        var config = ModelConfig.gpt2(layers: 2, heads: 3, embedding: 64)
        XCTAssertEqual(config.problems, ["n_embd (64) must be a multiple of n_head (3)"])
        config = ModelConfig.gpt2(layers: 0, heads: 4, embedding: 64, dropout: 1)
        XCTAssertEqual(config.problems.count, 2)
        XCTAssertTrue(config.problems[0].contains("n_layer"))
        XCTAssertTrue(config.problems[1].contains("dropout"))
    }
}
