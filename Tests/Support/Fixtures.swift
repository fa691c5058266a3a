import Foundation
import Kernels
import Transformer

/// A PyTorch reference fixture for a tiny random model (scripts/make-gpt-fixtures.py,
/// scripts/make-llama-fixtures.py), with our model loaded from it:
///
///     param.<Hugging Face name>   the parameters        tokens, targets  (B, T) as float
///     grad.<Hugging Face name>    d loss / d parameter  logits, loss, adamw_losses
///
/// GPT-2 fixtures use `GPT2Model`'s bare names ("h.0.attn.c_attn.weight"), Llama fixtures
/// `LlamaForCausalLM`'s; both are read through `TensorNames`, as checkpoints are.
public struct ParityFixture {
    public let file: SafetensorsFile
    public let model: LanguageModel
    public let tokens: [Int32], targets: [Int32]
    public let batch: Int, length: Int

    /// The committed fixture `name` (gpt-gelu, gpt-relu, llama-tied, llama-untied, lora-dense, lora-q4_1).
    public static func url(_ name: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../TransformerTests/Fixtures/\(name).safetensors").standardized
    }

    public init(_ name: String, dropout: Float = 0, pool: ThreadPool = .shared, trainable: Bool = true) throws {
        file = try SafetensorsFile(url: Self.url(name))
        let meta = try JSONSerialization.jsonObject(with: Data(file.metadata["config"]!.utf8)) as! [String: Any]
        var config: ModelConfig
        if meta["model_type"] as? String == "llama" {
            let rope = meta["rope_parameters"] as? [String: Any]
            config = .llama(layers: meta["num_hidden_layers"] as! Int, heads: meta["num_attention_heads"] as! Int,
                            keyValueHeads: meta["num_key_value_heads"] as! Int, embedding: meta["hidden_size"] as! Int,
                            hidden: meta["intermediate_size"] as! Int, vocabularySize: meta["vocab_size"] as! Int,
                            contextLength: meta["max_position_embeddings"] as! Int,
                            ropeBase: (rope?["rope_theta"] as? NSNumber)?.floatValue ?? 10_000,
                            normEpsilon: (meta["rms_norm_eps"] as! NSNumber).floatValue,
                            tiedEmbeddings: meta["tie_word_embeddings"] as! Bool)
        } else {
            config = .gpt2(layers: meta["n_layer"] as! Int, heads: meta["n_head"] as! Int, embedding: meta["n_embd"] as! Int,
                           vocabularySize: meta["vocab_size"] as! Int, contextLength: meta["n_positions"] as! Int,
                           activation: meta["activation"] as? String == "relu" ? .relu : .gelu)
        }
        config.dropout = dropout
        let model = try LanguageModel(config: config, pool: pool, trainable: trainable)
        self.model = model
        for entry in model.layout.entries {
            for piece in TensorNames.huggingFace(entry.spec, config: config) {
                let values = try file.read("param." + Self.fixtureName(piece.name))
                values.withUnsafeBufferPointer {
                    TensorNames.read(piece, from: $0, into: model.parameter(entry.name),
                                     columns: entry.shape.count == 2 ? entry.shape[1] : nil, config: config)
                }
            }
        }
        tokens = try file.read("tokens").map { Int32($0) }
        targets = try file.read("targets").map { Int32($0) }
        batch = meta["batch"] as! Int
        length = meta["length"] as! Int
    }

    static func fixtureName(_ name: String) -> String {
        name.hasPrefix("transformer.") ? String(name.dropFirst("transformer.".count)) : name
    }

    /// For every tensor of the fixture: the largest difference between our gradient (in the
    /// fixture's layout) and PyTorch's, and the largest magnitude of PyTorch's.
    public func gradientErrors() throws -> [(name: String, error: Float, scale: Float)] {
        var result: [(name: String, error: Float, scale: Float)] = []
        for entry in model.layout.entries {
            let columns = entry.shape.count == 2 ? entry.shape[1] : nil
            for piece in TensorNames.huggingFace(entry.spec, config: model.config) {
                let expected = try file.read("grad." + Self.fixtureName(piece.name))
                let ours = FloatBuffer.allocate(capacity: expected.count)
                defer { ours.deallocate() }
                TensorNames.write(piece, from: UnsafeBufferPointer(model.gradient(entry.name)), into: ours, columns: columns,
                                  config: model.config)
                let error = zip(ours, expected).map { abs($0 - $1) }.max() ?? 0
                result.append((piece.name, error, expected.map(abs).max() ?? 0))
            }
        }
        return result
    }
}

/// SmolLM2-135M-Instruct's GGUF file in the asset cache (scripts/fetch-assets.sh smollm2).
public func smolLM2Path() throws -> String { try assetURL("models/SmolLM2-135M-Instruct.Q4_1.gguf").path }
