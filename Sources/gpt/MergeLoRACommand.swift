import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt merge-lora`: a model with a LoRA adapter folded into its weights, written as a
/// checkpoint directory or (for a path ending in .gguf) a GGUF file.
struct MergeLoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge-lora",
        abstract: "Fold a LoRA adapter (PEFT layout) into its base model; write a checkpoint directory or a .gguf file.")

    @Option(help: "The base model: a .gguf file or a checkpoint directory.") var model: String
    @Option(help: "The LoRA adapter directory (adapter_config.json, adapter_model.safetensors).") var lora: String
    @Option(help: "A checkpoint directory to write, or a FILE.gguf.") var out: String
    @Option(help: "Tensor type of the matrices in a GGUF: f32, f16, q8_0, q4_0 or q4_1.") var type: String = "f16"

    func run() throws {
        let outURL = URL(fileURLWithPath: out), gguf = outURL.pathExtension.lowercased() == "gguf"
        let ggmlType = try ExportCommand.tensorType(type)
        let loaded = try ModelLoader.load(path: model, lora: lora, ggufWeights: .dequantized)
        try loaded.model.mergeAdapters()
        if gguf {
            try GGUFExport.write(loaded.model, tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplateSource, type: ggmlType,
                                 name: URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent, to: outURL)
        } else {
            try Checkpoint.save(loaded.model, tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplateSource, to: outURL)
        }
        print("\(out): \(loaded.model.config.family.rawValue) with \(lora) merged")
    }
}
