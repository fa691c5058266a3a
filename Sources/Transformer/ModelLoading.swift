import BPE
import Foundation
import Kernels

/// Loading a model for generation from either kind of path every command takes: a `.gguf` file
/// (Llama or GPT-2 architecture) or a checkpoint directory written by `gpt train` (or by
/// Hugging Face transformers for GPT-2).
public enum ModelLoader {
    public static func load(path: String, pool: ThreadPool = .shared) throws -> (model: InferenceModel, tokenizer: Tokenizer, chatTemplate: ChatTemplate?) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError("\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            let url = URL(fileURLWithPath: path)
            let gpt = try Checkpoint.load(url, pool: pool, trainable: false)
            let tokenizer = try Tokenizer.load(path: path)
            return (try inferenceModel(from: gpt), tokenizer, nil)
        }
        let file = try GGUFFile(url: URL(fileURLWithPath: path))
        let model = try inferenceModel(from: file, pool: pool)
        let tokenizer = try Tokenizer.fromGGUF(file)
        let template = file.metadata["tokenizer.chat_template"]?.string.map { ChatTemplate(recognizing: $0) }
        return (model, tokenizer, template)
    }

    /// The model config a GGUF file's metadata describes (`llama.*` or `gpt2.*`).
    public static func config(of file: GGUFFile) throws -> ModelConfig {
        guard let architecture = file.metadata["general.architecture"]?.string else {
            throw ModelError("\(file.url.path): general.architecture is missing")
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
            let config = ModelConfig(
                family: .llama, vocabularySize: vocabulary, contextLength: try integer("context_length"),
                embeddingSize: embedding, layerCount: try integer("block_count"), headCount: heads,
                keyValueHeadCount: file.metadata["llama.attention.head_count_kv"]?.int ?? heads,
                hiddenSize: try integer("feed_forward_length"), activation: .swiglu, norm: .rmsNorm,
                normEpsilon: Float(file.metadata["llama.attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
                positions: .rotary(base: Float(file.metadata["llama.rope.freq_base"]?.double ?? 10_000)),
                bias: false, tiedEmbeddings: file.tensors["output.weight"] == nil, dropout: 0)
            if let rope = file.metadata["llama.rope.dimension_count"]?.int, rope != embedding / heads {
                throw ModelError("\(file.url.path): partial rotary embeddings (\(rope) of \(embedding / heads) dimensions) are not supported")
            }
            return config
        case "gpt2":
            var config = ModelConfig.gpt2(layers: try integer("block_count"), heads: heads, embedding: embedding,
                                          vocabularySize: vocabulary, contextLength: try integer("context_length"))
            config.hiddenSize = try integer("feed_forward_length")
            config.normEpsilon = Float(file.metadata["gpt2.attention.layer_norm_epsilon"]?.double ?? 1e-5)
            config.tiedEmbeddings = file.tensors["output.weight"] == nil
            return config
        default:
            throw ModelError("\(file.url.path): architecture \"\(architecture)\" is not supported (llama, gpt2)")
        }
    }

    static func inferenceModel(from file: GGUFFile, pool: ThreadPool) throws -> InferenceModel {
        let config = try config(of: file)
        let problems = config.problems
        guard problems.isEmpty else { throw ModelError("\(file.url.path): " + problems.joined(separator: "; ")) }
        func matrix(_ name: String, rows: Int, columns: Int) throws -> InferenceModel.Matrix {
            let info = try file.tensor(name)
            guard info.dimensions.count == 2, info.dimensions[0] == columns, info.dimensions[1] == rows else {
                throw ModelError("\(file.url.path): tensor \(name) has shape \(info.dimensions), expected [\(columns), \(rows)]")
            }
            return .quantized(info.type, file.bytes(of: info), rows: rows, columns: columns)
        }
        func vector(_ name: String, _ count: Int) throws -> [Float] {
            let info = try file.tensor(name)
            guard info.elementCount == count else {
                throw ModelError("\(file.url.path): tensor \(name) has \(info.elementCount) elements, expected \(count)")
            }
            return try file.floats(name)
        }
        func optionalVector(_ name: String, _ count: Int) throws -> [Float]? {
            file.tensors[name] == nil ? nil : try vector(name, count)
        }
        let C = config.embeddingSize, H = config.hiddenSize, V = config.vocabularySize
        let kv = config.keyValueHeadCount * config.headSize
        var layers: [InferenceModel.Layer] = []
        for l in 0..<config.layerCount {
            let p = "blk.\(l)."
            let qkv: [InferenceModel.Linear]
            let gate: InferenceModel.Linear?
            if config.family == .llama {
                qkv = [InferenceModel.Linear(weight: try matrix(p + "attn_q.weight", rows: C, columns: C), bias: nil),
                       InferenceModel.Linear(weight: try matrix(p + "attn_k.weight", rows: kv, columns: C), bias: nil),
                       InferenceModel.Linear(weight: try matrix(p + "attn_v.weight", rows: kv, columns: C), bias: nil)]
                gate = InferenceModel.Linear(weight: try matrix(p + "ffn_gate.weight", rows: H, columns: C), bias: nil)
            } else {
                qkv = [InferenceModel.Linear(weight: try matrix(p + "attn_qkv.weight", rows: 3 * C, columns: C),
                                             bias: try optionalVector(p + "attn_qkv.bias", 3 * C))]
                gate = nil
            }
            layers.append(InferenceModel.Layer(
                attentionNorm: .init(weight: try vector(p + "attn_norm.weight", C), bias: try optionalVector(p + "attn_norm.bias", C)),
                qkv: qkv,
                attentionOutput: .init(weight: try matrix(p + "attn_output.weight", rows: C, columns: C), bias: try optionalVector(p + "attn_output.bias", C)),
                mlpNorm: .init(weight: try vector(p + "ffn_norm.weight", C), bias: try optionalVector(p + "ffn_norm.bias", C)),
                gate: gate,
                up: .init(weight: try matrix(p + "ffn_up.weight", rows: H, columns: C), bias: try optionalVector(p + "ffn_up.bias", H)),
                down: .init(weight: try matrix(p + "ffn_down.weight", rows: C, columns: H), bias: try optionalVector(p + "ffn_down.bias", C))))
        }
        let embedding = try matrix("token_embd.weight", rows: V, columns: C)
        return InferenceModel(
            config: config, tokenEmbedding: embedding,
            positionEmbedding: config.positions == .learned ? try vector("position_embd.weight", config.contextLength * C) : nil,
            layers: layers,
            outputNorm: .init(weight: try vector("output_norm.weight", C), bias: try optionalVector("output_norm.bias", C)),
            output: config.tiedEmbeddings ? embedding : try matrix("output.weight", rows: V, columns: C),
            owner: file, pool: pool)
    }

    /// An inference model over a trained GPT's weights (Conv1D [in, out] matrices transposed to
    /// [out, in] rows).
    public static func inferenceModel(from gpt: GPT) throws -> InferenceModel {
        let config = gpt.config
        let storage = DenseStorage()
        func matrix(_ name: String) -> InferenceModel.Matrix {
            let entry = gpt.layout.entry(name + ".weight")!
            let (input, output) = (entry.shape[0], entry.shape[1])
            let source = gpt.parameter(name + ".weight")
            let buffer = storage.make(input * output)
            for i in 0..<input { for o in 0..<output { buffer[o * input + i] = source[i * output + o] } }
            return .dense(buffer, rows: output, columns: input)
        }
        func vector(_ name: String) -> [Float]? { gpt.layout.entry(name).map { _ in Array(gpt.parameter(name)) } }
        func linear(_ name: String) -> InferenceModel.Linear { .init(weight: matrix(name), bias: vector(name + ".bias")) }
        let C = config.embeddingSize, V = config.vocabularySize
        let embedding = storage.make(V * C)
        _ = embedding.update(fromContentsOf: gpt.parameter("wte.weight"))
        let layers = (0..<config.layerCount).map { l -> InferenceModel.Layer in
            let p = "h.\(l)."
            return InferenceModel.Layer(
                attentionNorm: .init(weight: vector(p + "ln_1.weight")!, bias: vector(p + "ln_1.bias")),
                qkv: [linear(p + "attn.c_attn")], attentionOutput: linear(p + "attn.c_proj"),
                mlpNorm: .init(weight: vector(p + "ln_2.weight")!, bias: vector(p + "ln_2.bias")),
                gate: nil, up: linear(p + "mlp.c_fc"), down: linear(p + "mlp.c_proj"))
        }
        let outputMatrix: InferenceModel.Matrix
        if config.tiedEmbeddings {
            outputMatrix = .dense(embedding, rows: V, columns: C)
        } else {
            let head = storage.make(V * C)
            _ = head.update(fromContentsOf: gpt.parameter("lm_head.weight"))
            outputMatrix = .dense(head, rows: V, columns: C)
        }
        return InferenceModel(config: config, tokenEmbedding: .dense(embedding, rows: V, columns: C),
                              positionEmbedding: Array(gpt.parameter("wpe.weight")), layers: layers,
                              outputNorm: .init(weight: vector("ln_f.weight")!, bias: vector("ln_f.bias")),
                              output: outputMatrix, owner: storage, pool: gpt.pool)
    }
}

/// Owns the fp32 buffers of an inference model built from a checkpoint.
final class DenseStorage {
    private var buffers: [UnsafeMutableBufferPointer<Float>] = []
    func make(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        buffer.initialize(repeating: 0)
        buffers.append(buffer)
        return buffer
    }
    deinit { buffers.forEach { $0.deallocate() } }
}
