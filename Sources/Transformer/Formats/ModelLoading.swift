import BPE
import Foundation
import Kernels

/// Loading a model from either kind of path every command takes: a `.gguf` file (Llama or GPT-2
/// architecture) or a checkpoint directory (ours, or Hugging Face transformers' GPT-2 / Llama).
public enum ModelLoader {
    /// How a GGUF file's matrices are held.
    public enum GGUFWeights: Sendable {
        /// Used in place from the memory-mapped file, quantised as stored (generation; with
        /// `trainable` the norms train and the matrices stay frozen).
        case inPlace
        /// Dequantised into fp32 in the model's arena (full fine-tuning, conversion to a checkpoint).
        case dequantized
    }

    public struct Loaded {
        public let model: LanguageModel
        public let tokenizer: Tokenizer
        /// The chat template's source text, if the model has one.
        public let chatTemplateSource: String?
        public var chatTemplate: ChatTemplate? { chatTemplateSource.map { ChatTemplate(recognizing: $0) } }
    }

    /// A model, its tokenizer and chat template from `path`, for generation (no gradients) or,
    /// with `trainable`, for training; with `lora`, a PEFT adapter directory attached to it
    /// (generation, evaluation and serving with a fine-tune's adapters).
    public static func load(path: String, lora: String? = nil, pool: ThreadPool = .shared, trainable: Bool = false,
                            ggufWeights: GGUFWeights = .inPlace) throws -> Loaded {
        let loaded = try load(path: path, pool: pool, trainable: trainable, ggufWeights: ggufWeights)
        if let lora {
            try loaded.model.attach(try LoRAAdapters.load(URL(fileURLWithPath: lora), config: loaded.model.config))
        }
        return loaded
    }

    private static func load(path: String, pool: ThreadPool, trainable: Bool, ggufWeights: GGUFWeights) throws -> Loaded {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError("\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            let url = URL(fileURLWithPath: path)
            let model = try Checkpoint.load(url, pool: pool, trainable: trainable)
            return Loaded(model: model, tokenizer: try Tokenizer.load(path: path), chatTemplateSource: Checkpoint.chatTemplate(in: url))
        }
        let file = try GGUFFile(url: URL(fileURLWithPath: path))
        let model = try self.model(from: file, weights: ggufWeights, pool: pool, trainable: trainable)
        return Loaded(model: model, tokenizer: try Tokenizer.fromGGUF(file),
                      chatTemplateSource: file.metadata["tokenizer.chat_template"]?.string)
    }

    /// The model config a GGUF file's metadata describes (`llama.*` or `gpt2.*`).
    public static func config(of file: GGUFFile) throws -> ModelConfig {
        guard let architecture = file.metadata["general.architecture"]?.string else {
            throw ModelError("\(file.url.path): general.architecture is missing")
        }
        guard ["llama", "gpt2"].contains(architecture) else {
            throw ModelError("\(file.url.path): architecture \"\(architecture)\" is not supported (llama, gpt2)")
        }
        func integer(_ key: String) throws -> Int {
            guard let value = file.metadata["\(architecture).\(key)"]?.int else {
                throw ModelError("\(file.url.path): \(architecture).\(key) is missing")
            }
            return value
        }
        let embedding = try integer("embedding_length"), heads = try integer("attention.head_count")
        let vocabulary = file.metadata["\(architecture).vocab_size"]?.int
            ?? file.metadata["tokenizer.ggml.tokens"]?.array?.count
            ?? file.tensors["token_embd.weight"].map { $0.rowCount } ?? 0
        switch architecture {
        case "llama":
            var config = ModelConfig.llama(
                layers: try integer("block_count"), heads: heads,
                keyValueHeads: file.metadata["llama.attention.head_count_kv"]?.int ?? heads, embedding: embedding,
                hidden: try integer("feed_forward_length"), vocabularySize: vocabulary,
                contextLength: try integer("context_length"),
                ropeBase: Float(file.metadata["llama.rope.freq_base"]?.double ?? 10_000),
                normEpsilon: Float(file.metadata["llama.attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
                tiedEmbeddings: file.tensors["output.weight"] == nil)
            config.rotaryPairing = .adjacent
            if let rope = file.metadata["llama.rope.dimension_count"]?.int, rope != embedding / max(1, heads) {
                throw ModelError("\(file.url.path): partial rotary embeddings (\(rope) of \(embedding / max(1, heads)) dimensions) are not supported")
            }
            return config
        case "gpt2":
            var config = ModelConfig.gpt2(layers: try integer("block_count"), heads: heads, embedding: embedding,
                                          vocabularySize: vocabulary, contextLength: try integer("context_length"))
            config.hiddenSize = try integer("feed_forward_length")
            config.normEpsilon = Float(file.metadata["gpt2.attention.layer_norm_epsilon"]?.double ?? 1e-5)
            config.tiedEmbeddings = file.tensors["output.weight"] == nil
            config.bias = file.tensors["blk.0.attn_qkv.bias"] != nil
            return config
        default:
            throw ModelError("\(file.url.path): architecture \"\(architecture)\" is not supported (llama, gpt2)")
        }
    }

    /// A model over a GGUF file's tensors: vectors (norms, biases) and position embeddings in
    /// fp32 in the arena; matrices in place or dequantised into the arena, as `weights` says.
    public static func model(from file: GGUFFile, weights: GGUFWeights = .inPlace, pool: ThreadPool = .shared,
                             trainable: Bool = false) throws -> LanguageModel {
        let config = try config(of: file)
        let problems = config.problems
        guard problems.isEmpty else { throw ModelError("\(file.url.path): " + problems.joined(separator: "; ")) }
        let specs = TensorSpec.all(config)
        var arena: [TensorSpec] = [], external: [String: [WeightMatrix]] = [:]
        var sources: [String: [(TensorPiece, GGUFFile.TensorInfo)]] = [:]
        for spec in specs {
            let columns = spec.shape.count == 2 ? spec.shape[1] : nil
            var found: [(TensorPiece, GGUFFile.TensorInfo)] = []
            for piece in TensorNames.gguf(spec, config: config) {
                let info = try file.tensor(piece.name)
                // GGUF lists dimensions fastest first: [columns, rows].
                let expected = piece.shape(columns: columns).reversed().map { $0 }
                guard info.dimensions == expected || (columns == nil && info.elementCount == piece.rows.count) else {
                    throw ModelError("\(file.url.path): tensor \(piece.name) has shape \(info.dimensions), expected \(expected)")
                }
                found.append((piece, info))
            }
            sources[spec.name] = found
            let inPlace = weights == .inPlace && spec.shape.count == 2 && spec.name != "position_embd.weight"
            if inPlace {
                external[spec.name] = found.map { piece, info in
                    .quantized(info.type, file.bytes(of: info), rows: piece.rows.count, columns: columns!)
                }
            } else {
                arena.append(spec)
            }
        }
        let model = try LanguageModel(config: config, layout: ParameterLayout(arena), external: external, owner: file,
                                      pool: pool, trainable: trainable)
        for entry in model.layout.entries {
            let columns = entry.shape.count == 2 ? entry.shape[1] : nil
            for (piece, info) in sources[entry.name]! {
                let values = try file.floats(info.name)
                values.withUnsafeBufferPointer {
                    TensorNames.read(piece, from: $0, into: model.parameter(entry.name), columns: columns, config: config)
                }
            }
        }
        return model
    }
}
