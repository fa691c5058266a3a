import Foundation
import TestSupport
import XCTest
@testable import Generation
@testable import Transformer

/// The generator over SmolLM2 (fetched by scripts/fetch-assets.sh smollm2).
final class GeneratorTests: XCTestCase {
    func testStreamingYieldsTheSameTextAsGenerate() async throws {
        let loaded = try ModelLoader.load(path: try smolLM2Path())
        let (model, tokenizer, template) = (loaded.model, loaded.tokenizer, loaded.chatTemplate)
        let prompt = tokenizer.encode(try XCTUnwrap(template).render([.init(role: "user", content: "Name a color.")]), allowedSpecial: .all)
        let options = GenerationOptions(maxTokens: 12, sampling: SamplingOptions(temperature: 0.8, seed: 9))
        let generator = Generator(model: model, tokenizer: tokenizer)
        let direct = try generator.generate(prompt: prompt, options: options).text
        var streamed = ""
        for try await piece in generator.stream(prompt: prompt, options: options) { streamed += piece }
        XCTAssertEqual(streamed, direct)
        XCTAssertFalse(direct.isEmpty)
    }

    func testChatAnswersParis() throws {
        let loaded = try ModelLoader.load(path: try smolLM2Path())
        let (model, tokenizer, template) = (loaded.model, loaded.tokenizer, loaded.chatTemplate)
        let prompt = try XCTUnwrap(template).render([.init(role: "user", content: "What is the capital of France?")])
        let generator = Generator(model: model, tokenizer: tokenizer)
        let result = try generator.generate(prompt: tokenizer.encode(prompt, allowedSpecial: .all),
                                            options: GenerationOptions(maxTokens: 20, sampling: SamplingOptions(temperature: 0)))
        XCTAssertTrue(result.text.contains("Paris"), result.text)
        XCTAssertEqual(result.finishReason, .stop)
    }
}
