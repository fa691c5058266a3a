import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt export`: a model (checkpoint directory or GGUF) as a GGUF file for llama.cpp.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a GGUF file (f32, f16, q8_0, q4_0, q4_1) with its tokenizer and chat template.")

    @Option(help: "A checkpoint directory or a .gguf file.") var model: String
    @Option(help: "The GGUF file to write.") var out: String
    @Option(help: "Tensor type of the matrices: f32, f16, q8_0, q4_0 or q4_1 (norms stay f32).") var type: String = "f16"

    func run() throws {
        let ggmlType = try Self.tensorType(type)
        let loaded = try ModelLoader.load(path: model, ggufWeights: .dequantized)
        try GGUFExport.write(loaded.model, tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplateSource, type: ggmlType,
                             name: URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent,
                             to: URL(fileURLWithPath: out))
        let bytes = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        print(String(format: "%@: %@ %@, %.1f MB", out, loaded.model.config.family.rawValue, ggmlType.description, Double(bytes) / 1e6))
    }

    /// The GGUF tensor type `--type` names (f32, f16, q8_0, q4_0, q4_1).
    static func tensorType(_ name: String) throws -> GGMLType {
        guard let type = GGUFExport.types.first(where: { $0.description.lowercased() == name.lowercased() }) else {
            throw ValidationError("--type \(name) is not one of \(GGUFExport.types.map { $0.description.lowercased() }.joined(separator: ", "))")
        }
        return type
    }
}
