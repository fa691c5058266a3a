import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt info`: what a model is and what running it costs.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Architecture, parameters, and the memory and FLOPs a context length and batch need.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "Context length (tokens per sequence).") var ctx: Int?
    @Option(help: "Sequences at once.") var batch = 1

    func run() throws {
        let loaded = try ModelLoader.load(path: model, pool: .serial)
        let (tokenizer, template) = (loaded.tokenizer, loaded.chatTemplate)
        let config = loaded.model.config
        let context = ctx ?? min(config.contextLength, 2048)
        guard context > 0, batch > 0 else { throw ValidationError("--ctx and --batch must be positive") }
        let weightBytes = Double(loaded.model.weights.bytesPerToken)
        let kvDimension = config.keyValueHeadCount * config.headSize
        let kvBytes = 2.0 * Double(config.layerCount * context * kvDimension * batch) * 4
        let scoresBytes = Double(batch * config.headCount) * Double(context) * Double(context) * 4
        let embeddingParameters = config.vocabularySize * config.embeddingSize
            + (config.positions == .learned ? config.contextLength * config.embeddingSize : 0)
        let nonEmbedding = Double(config.parameterCount - embeddingParameters)
        // Forward FLOPs per token (Kaplan et al.): 2 N + 2 n_layer n_ctx d_attn, plus the output layer.
        let flopsPerToken = 2 * nonEmbedding + 2 * Double(config.layerCount * context * config.headCount * config.headSize)
            + 2 * Double(config.vocabularySize * config.embeddingSize)
        func size(_ bytes: Double) -> String {
            bytes >= 1e9 ? String(format: "%.2f GB", bytes / 1e9) : String(format: "%.1f MB", bytes / 1e6)
        }
        var rows: [(String, String)] = [
            ("model", model),
            ("architecture", config.family == .llama ? "Llama (RoPE, RMSNorm, SwiGLU\(config.keyValueHeadCount < config.headCount ? ", grouped-query attention" : ""))" : "GPT-2 (learned positions, LayerNorm, \(config.activation.rawValue.uppercased()) MLP)"),
            ("layers / heads / kv heads", "\(config.layerCount) / \(config.headCount) / \(config.keyValueHeadCount)"),
            ("width / head size / MLP", "\(config.embeddingSize) / \(config.headSize) / \(config.hiddenSize)"),
            ("vocabulary", "\(config.vocabularySize) (\(tokenizer.preTokenizer.rawValue) pre-tokenizer\(template.map { ", \($0.format.rawValue) chat" } ?? ""))"),
            ("context length", "\(config.contextLength)"),
            ("parameters", config.parameterCount.formatted() + String(format: " (%.1f M without embeddings)", nonEmbedding / 1e6)),
            ("weights in memory", size(weightBytes)),
            ("KV cache (fp32) at ctx \(context) x batch \(batch)", size(kvBytes) + String(format: "  (%.0f KB per token)", 2.0 * Double(config.layerCount * kvDimension) * 4 / 1e3)),
            ("attention scores, one layer, full pass", size(scoresBytes) + "  (grows with ctx², batch x heads x ctx x ctx)"),
            ("forward FLOPs per token at ctx \(context)", flopsPerToken >= 1e8 ? String(format: "%.2f GFLOP", flopsPerToken / 1e9) : String(format: "%.2f MFLOP", flopsPerToken / 1e6)),
        ]
        rows.append(("memory to generate (weights + cache)", size(weightBytes + kvBytes)))
        let width = rows.map(\.0.count).max() ?? 0
        for (key, value) in rows { print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value) }
    }
}
