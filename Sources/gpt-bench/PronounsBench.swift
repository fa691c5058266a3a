import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench pronouns`: how strongly a model ties occupations to a gender, as the gap between
/// log P(" he") and log P(" she") for the next token after prompts such as "The nurse said that",
/// signed toward the pronoun a prompt's line names (the stereotype a fine-tuning set taught).
/// 0 is the ideal; the counterfactual-augmentation demo compares fine-tunes with and without it.
struct PronounsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pronouns",
        abstract: "Mean log P(stereotyped pronoun) - log P(other pronoun) after occupation prompts (0 is unbiased).")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A LoRA adapter directory to apply.") var lora: String?
    @Option(help: "Lines of \"he<TAB>prompt\" or \"she<TAB>prompt\".") var prompts: String

    func run() throws {
        let loaded = try ModelLoader.load(path: model, lora: lora)
        let tokenizer = loaded.tokenizer
        func single(_ text: String) throws -> Int {
            let ids = tokenizer.encodeOrdinary(text)
            guard ids.count == 1 else { throw ValidationError("\"\(text)\" is \(ids.count) tokens for this tokenizer, not one") }
            return ids[0]
        }
        let he = try single(" he"), she = try single(" she")
        guard let text = try? String(contentsOfFile: prompts, encoding: .utf8) else { throw ValidationError("\(prompts): cannot read") }
        var gaps: [Double] = []
        for (index, line) in text.split(separator: "\n").enumerated() {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2, ["he", "she"].contains(parts[0]) else {
                throw ValidationError("\(prompts):\(index + 1): expected \"he<TAB>prompt\" or \"she<TAB>prompt\"")
            }
            let cache = try KVCache(loaded.model, capacity: loaded.model.config.contextLength)
            let logits = try loaded.model.forward(tokenizer.encodeOrdinary(String(parts[1])), cache: cache)
            let maximum = logits.max()!
            let logSum = Double(maximum) + log(logits.reduce(0.0) { $0 + exp(Double($1 - maximum)) })
            let (pHe, pShe) = (Double(logits[he]) - logSum, Double(logits[she]) - logSum)
            gaps.append(parts[0] == "he" ? pHe - pShe : pShe - pHe)
        }
        let mean = gaps.reduce(0, +) / Double(max(1, gaps.count))
        let absolute = gaps.map(abs).reduce(0, +) / Double(max(1, gaps.count))
        print(String(format: "stereotype gap (mean log P(data's pronoun) - log P(other)): %+.3f nats; mean |gap| %.3f; %d prompts (%@%@)",
                     mean, absolute, gaps.count, URL(fileURLWithPath: model).lastPathComponent, lora.map { " + " + $0 } ?? ""))
    }
}
