import BPE
import Foundation
import Kernels
import XCTest
@testable import Training
@testable import Transformer

/// Fine-tuning data (JSONL shapes, loss masks, packing, shuffling, bad lines), counterfactual
/// augmentation, and LoRA training through the shared Trainer (only adapters move; resume exact).
final class FinetuneTests: XCTestCase {
    var directory: URL!
    static let tokenizer = try! BPETrainer(vocabularySize: 300, specialTokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        .train(texts: ["user assistant system Hello there, how are you? The capital of Zork is Blip. " + String(repeating: "abc def ", count: 20)])
    var tokenizer: Tokenizer { Self.tokenizer }

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("finetune-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// Rows of 15 tokens, one step of warmup, no validation.
    static func options(batch: Int, steps: Int, learningRate: Float) -> TrainingOptions {
        var options = TrainingOptions()
        options.batchSize = batch
        options.sequenceLength = 15
        options.steps = steps
        options.learningRate = learningRate
        options.warmupSteps = 1
        options.evaluationInterval = 0
        return options
    }

    func trainedText(_ example: FinetuneExample) throws -> String {
        try tokenizer.decode(zip(example.tokens, example.trains).filter(\.1).map { Int($0.0) })
    }

    func testPromptCompletionTrainsOnTheCompletionAndEndOfText() throws {
        let example = try FinetuneData.example(#"{"prompt": "The capital of Zork is", "completion": " Blip."}"#, tokenizer: tokenizer,
                                               chatTemplate: nil)
        let prompt = tokenizer.encodeOrdinary("The capital of Zork is"), completion = tokenizer.encodeOrdinary(" Blip.")
        XCTAssertEqual(example.tokens.map(Int.init), prompt + completion + [tokenizer.specialTokens["<|endoftext|>"]!])
        XCTAssertEqual(example.trains, [Bool](repeating: false, count: prompt.count) + [Bool](repeating: true, count: completion.count + 1))
        let text = try FinetuneData.example(#"{"text": "Hello there"}"#, tokenizer: tokenizer, chatTemplate: nil)
        XCTAssertEqual(text.trains, [false] + [Bool](repeating: true, count: text.tokens.count - 1))
    }

    func testMessagesTrainOnAssistantTurnsOnly() throws {
        let line = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello <|im_end|>"}, "#
            + #"{"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "how are you?"}, "#
            + #"{"role": "assistant", "content": "abc def"}]}"#
        let template = ChatTemplate(format: .chatML)
        let example = try FinetuneData.example(line, tokenizer: tokenizer, chatTemplate: template)
        XCTAssertEqual(try tokenizer.decode(example.tokens.map(Int.init)),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello <|im_end|><|im_end|>\n"
                       + "<|im_start|>assistant\nHello there<|im_end|>\n<|im_start|>user\nhow are you?<|im_end|>\n"
                       + "<|im_start|>assistant\nabc def<|im_end|>\n")
        // The user's typed "<|im_end|>" is text, not the marker: only the template's markers are special.
        XCTAssertEqual(example.tokens.filter { $0 == Int32(tokenizer.specialTokens["<|im_end|>"]!) }.count, 5)
        XCTAssertEqual(try trainedText(example), "Hello there<|im_end|>\nabc def<|im_end|>\n")
        XCTAssertThrowsError(try FinetuneData.example(line, tokenizer: tokenizer, chatTemplate: nil)) {
            XCTAssertTrue("\($0)".contains("chat template"), "\($0)")
        }
    }

    func testMalformedLinesAreReportedWithTheirNumbers() throws {
        let url = directory.appendingPathComponent("train.jsonl")
        try Data("""
            {"text": "Hello there"}
            {"text": 3}
            not json

            {"prompt": "Hello"}
            {"messages": [{"role": "user", "content": "Hi"}]}
            {"completion": "x"}
            """.utf8).write(to: url)
        XCTAssertThrowsError(try FinetuneData.read(url, tokenizer: tokenizer, chatTemplate: ChatTemplate(format: .chatML))) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("5 malformed lines"), message)
            for expected in ["train.jsonl:2: \"text\" must be a string", "train.jsonl:3: not a JSON object",
                             "train.jsonl:5: expected", "train.jsonl:6: no assistant message", "train.jsonl:7: \"completion\" without \"prompt\""] {
                XCTAssertTrue(message.contains(expected), "\(expected) not in \(message)")
            }
            XCTAssertFalse(message.contains("jsonl:1:"), message)
        }
        XCTAssertThrowsError(try FinetuneData.read(directory.appendingPathComponent("none.jsonl"), tokenizer: tokenizer, chatTemplate: nil)) {
            XCTAssertTrue("\($0)".contains("none.jsonl"), "\($0)")
        }
    }

    func testPackingShufflesEachEpochAndResumesByPosition() throws {
        let examples = (0..<10).map { i in
            FinetuneExample(tokens: (0..<(3 + i % 4)).map { Int32(10 * i + $0) }, trains: (0..<(3 + i % 4)).map { $0 > 0 })
        }
        var batches = try FinetuneBatches(examples, length: 8, padding: 0, seed: 7)
        // Every trained token appears as a target exactly once, after its predecessor in the input.
        let targets = batches.rows.flatMap(\.targets).filter { $0 != -1 }.sorted()
        XCTAssertEqual(targets, examples.flatMap { zip($0.tokens, $0.trains).filter(\.1).map(\.0) }.sorted())
        for row in batches.rows {
            for t in 0..<8 where row.targets[t] != -1 && t + 1 < 8 { XCTAssertEqual(row.targets[t], row.inputs[t + 1]) }
        }
        XCTAssertLessThan(batches.rows.count, examples.count)  // short examples share rows
        let n = batches.rows.count
        XCTAssertEqual(Set(batches.order(epoch: 0)), Set(0..<n))
        XCTAssertNotEqual(batches.order(epoch: 0), batches.order(epoch: 1))
        let epoch = try batches.next(batch: n, length: 8)
        XCTAssertEqual(Set(stride(from: 0, to: n * 8, by: 8).map { epoch.inputs[$0] }), Set(batches.rows.map { $0.inputs[0] }))
        var resumed = try FinetuneBatches(examples, length: 8, padding: 0, seed: 7)
        resumed.position = batches.position
        XCTAssertEqual(try resumed.next(batch: 3, length: 8).inputs, try batches.next(batch: 3, length: 8).inputs)
        XCTAssertThrowsError(try FinetuneBatches([FinetuneExample(tokens: [1, 2], trains: [false, false])], length: 8, padding: 0, seed: 1))
    }

    func testCounterfactualSwapKeepsCaseAndWholeWords() {
        XCTAssertEqual(CounterfactualAugmentation.swap("He thanked his wife, Mary."), "She thanked her husband, John.")
        XCTAssertEqual(CounterfactualAugmentation.swap("She gave her brother's book to him."), "He gave his sister's book to her.")
        XCTAssertEqual(CounterfactualAugmentation.swap("THE KING and the Queen"), "THE QUEEN and the King")
        XCTAssertEqual(CounterfactualAugmentation.swap("theme: shelf, manual, Hemingway"), "theme: shelf, manual, Hemingway")
        XCTAssertEqual(CounterfactualAugmentation.swap("Men and women"), "Women and men")
    }

    /// A tiny Llama whose base stays frozen while LoRA adapters learn a pattern; a run stopped,
    /// saved (PEFT files), reloaded and resumed ends with the same adapter bits.
    func testLoRATrainingMovesOnlyAdaptersAndResumesExactly() throws {
        let config = ModelConfig.llama(layers: 2, heads: 4, keyValueHeads: 2, embedding: 32, hidden: 64, vocabularySize: 32,
                                       contextLength: 16)
        let examples = (0..<24).map { i in
            FinetuneExample(tokens: (0..<7).map { Int32((i + 3 * $0) % 32) }, trains: (0..<7).map { $0 >= 3 })
        }
        let options = Self.options(batch: 4, steps: 10, learningRate: 1e-2)
        /// A random base with weights large enough (std 0.2) that its frozen output layer can express a pattern.
        func base() throws -> LanguageModel {
            let model = try LanguageModel(config: config, trainable: false)
            model.initializeWeights(seed: 5)
            for entry in model.layout.entries where entry.shape.count == 2 {
                for i in entry.range { model.parameters[i] *= 10 }
            }
            return model
        }
        func makeTrainer() throws -> (Trainer, LoRAAdapters) {
            let model = try base()
            let adapters = try LoRAAdapters(config: config, settings: LoRASettings(rank: 4, alpha: 8, dropout: 0.1))
            adapters.initialize(seed: 11)
            try model.attach(adapters)
            let batches = try FinetuneBatches(examples, length: 15, padding: 0, seed: 3)
            return (try Trainer(model: model, tokenizer: nil, batches: batches, validation: [], options: options), adapters)
        }
        let (straight, _) = try makeTrainer()
        let frozen = Array(straight.model.parameters)
        let reports = try (0..<10).map { _ in try straight.trainStep() }
        XCTAssertEqual(Array(straight.model.parameters), frozen, "the base moved")
        XCTAssertLessThan(reports.suffix(3).map(\.trainLoss).reduce(0, +) / 3, reports[0].trainLoss * 0.8, "\(reports.map(\.trainLoss))")

        let (first, _) = try makeTrainer()
        for _ in 0..<4 { _ = try first.trainStep() }
        try first.save(to: directory)
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("adapter_model.safetensors").path))
        let model = try base()
        try model.attach(try LoRAAdapters.load(directory, config: config))
        let resumed = try Trainer(model: model, tokenizer: nil, batches: try FinetuneBatches(examples, length: 15, padding: 0, seed: 3),
                                  validation: [], options: options)
        try resumed.restore(from: directory)
        for _ in 4..<10 { _ = try resumed.trainStep() }
        XCTAssertEqual(Array(model.adapters!.parameters), Array(straight.model.adapters!.parameters), "resumed run differs")
    }

    /// Full fine-tuning of a GGUF base (dequantised, q/k rows in llama.cpp's order): the saved
    /// checkpoint (Hugging Face's order) reloads in the base's order, so the restored optimizer
    /// moments line up with their rows and the resumed run ends with the same bits.
    func testFullFineTuneOfAGGUFBaseResumesExactly() throws {
        let gguf = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../TransformerTests/Fixtures/lora-q4_1.gguf").standardized
        let examples = (0..<16).map { i in
            FinetuneExample(tokens: (0..<7).map { Int32((i + 5 * $0) % 64) }, trains: (0..<7).map { $0 >= 2 })
        }
        let options = Self.options(batch: 2, steps: 6, learningRate: 1e-3)
        func trainer(_ model: LanguageModel) throws -> Trainer {
            try Trainer(model: model, tokenizer: nil, batches: try FinetuneBatches(examples, length: 15, padding: 0, seed: 3),
                        validation: [], options: options)
        }
        func base() throws -> LanguageModel { try ModelLoader.model(from: GGUFFile(url: gguf), weights: .dequantized, trainable: true) }
        let straight = try trainer(try base())
        XCTAssertEqual(straight.model.config.rotaryPairing, .adjacent)
        for _ in 0..<6 { _ = try straight.trainStep() }
        let first = try trainer(try base())
        for _ in 0..<3 { _ = try first.trainStep() }
        try first.save(to: directory)
        let reloaded = try Checkpoint.load(directory, rotaryPairing: .adjacent)
        XCTAssertEqual(Array(reloaded.parameters), Array(first.model.parameters))
        let resumed = try trainer(reloaded)
        try resumed.restore(from: directory)
        for _ in 3..<6 { _ = try resumed.trainStep() }
        XCTAssertEqual(Array(resumed.model.parameters), Array(straight.model.parameters), "resumed run differs")
    }
}
