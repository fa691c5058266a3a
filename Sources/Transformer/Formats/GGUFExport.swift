import BPE
import Foundation
import Kernels

/// Writes a model as a GGUF file that llama.cpp runs and `ModelLoader` reads back: llama.cpp's
/// metadata for the `llama` or `gpt2` architecture, the tokenizer and chat template, and every
/// tensor under GGUF's names (`TensorNames.gguf`: query/key rows permuted to GGUF's RoPE pairing,
/// gate and up split) in the chosen type; vectors (norms, biases) stay F32, as llama.cpp keeps them.
///
///     let loaded = try ModelLoader.load(path: "runs/shakespeare/model", ggufWeights: .dequantized)
///     try GGUFExport.write(loaded.model, tokenizer: loaded.tokenizer, chatTemplate: nil, type: .q8_0,
///                          to: URL(fileURLWithPath: "shakespeare.gguf"))
public enum GGUFExport {
    /// The types a model can be exported in.
    public static let types: [GGMLType] = [.f32, .f16, .q8_0, .q4_0, .q4_1]

    public static func write(_ model: LanguageModel, tokenizer: Tokenizer, chatTemplate: String?, type: GGMLType,
                             name: String = "SwiftGPT model", to url: URL) throws {
        guard types.contains(type) else {
            throw ModelError("\(url.path): cannot export as \(type); the types are \(types.map(\.description).joined(separator: ", "))")
        }
        let config = model.config
        guard tokenizer.vocabularySize <= config.vocabularySize else {
            throw ModelError("\(url.path): the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(config.vocabularySize)")
        }
        var writer = GGUFWriter()
        let arch = config.family.rawValue
        let fileType: UInt32 = [GGMLType.f32: 0, .f16: 1, .q4_0: 2, .q4_1: 3, .q8_0: 7][type]!
        writer.setMetadata([
            ("general.architecture", .string(arch)), ("general.name", .string(name)),
            ("general.file_type", .uint32(fileType)), ("general.quantization_version", .uint32(2)),
            ("\(arch).context_length", .uint32(UInt32(config.contextLength))),
            ("\(arch).embedding_length", .uint32(UInt32(config.embeddingSize))),
            ("\(arch).block_count", .uint32(UInt32(config.layerCount))),
            ("\(arch).feed_forward_length", .uint32(UInt32(config.hiddenSize))),
            ("\(arch).attention.head_count", .uint32(UInt32(config.headCount))),
            ("\(arch).vocab_size", .uint32(UInt32(config.vocabularySize))),
        ])
        switch config.positions {
        case .rotary(let base):
            writer.setMetadata([
                ("\(arch).attention.head_count_kv", .uint32(UInt32(config.keyValueHeadCount))),
                ("\(arch).attention.layer_norm_rms_epsilon", .float32(config.normEpsilon)),
                ("\(arch).rope.freq_base", .float32(base)),
                ("\(arch).rope.dimension_count", .uint32(UInt32(config.headSize))),
            ])
        case .learned:
            writer.setMetadata("\(arch).attention.layer_norm_epsilon", .float32(config.normEpsilon))
        }
        let eos = ["<|endoftext|>", "<|im_end|>", "</s>"].lazy.compactMap { tokenizer.id(of: $0) }.first
        let bos = ["<|im_start|>", "<|endoftext|>", "<s>"].lazy.compactMap { tokenizer.id(of: $0) }.first
        writer.setMetadata(try tokenizer.ggufMetadata(bosTokenID: bos, eosTokenID: eos, addBOSToken: false,
                                                      chatTemplate: chatTemplate))
        for spec in TensorSpec.all(config) {
            guard let entry = model.layout.entry(spec.name) else {
                throw ModelError("\(url.path): \(spec.name) is not an fp32 tensor of the model (load it with its weights dequantised)")
            }
            let values = UnsafeBufferPointer(rebasing: model.parameters[entry.range])
            let columns = spec.shape.count == 2 ? spec.shape[1] : nil
            for piece in TensorNames.gguf(spec, config: config) {
                var data = [Float](repeating: 0, count: piece.rows.count * (columns ?? 1))
                data.withUnsafeMutableBufferPointer {
                    TensorNames.write(piece, from: values, into: $0, columns: columns, config: config)
                }
                let dimensions = columns.map { [$0, piece.rows.count] } ?? [piece.rows.count]
                let pieceType = columns == nil || spec.name == "position_embd.weight" ? GGMLType.f32 : type
                do {
                    try writer.addTensor(piece.name, dimensions: dimensions, type: pieceType, values: data)
                } catch {
                    throw ModelError("\(url.path): \(error)")
                }
            }
        }
        try writer.write(to: url, pool: model.pool)
    }
}
