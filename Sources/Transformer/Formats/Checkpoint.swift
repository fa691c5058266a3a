import BPE
import Foundation
import Kernels

/// A Hugging Face style checkpoint directory, for either family:
///
///     config.json              GPT2Config keys (model_type "gpt2") or LlamaConfig keys ("llama")
///     model.safetensors        Hugging Face names and layouts (`TensorNames.huggingFace`):
///                              "transformer.h.0.attn.c_attn.weight" (Conv1D [in, out]) or
///                              "model.layers.0.self_attn.q_proj.weight" ([out, in]); a tied
///                              output matrix is not stored
///     generation_config.json
///     tokenizer.json, vocab.json, merges.txt   when a tokenizer is saved with the model
///     tokenizer_config.json    the chat template, when there is one
///
/// so `AutoModelForCausalLM.from_pretrained(dir)` loads what we save and we load what it saves.
public enum Checkpoint {
    /// Writes the model (and tokenizer, chat template) into `directory`, each file through a
    /// temporary file renamed into place. Every tensor must be fp32 in the model's arena.
    public static func save(_ model: LanguageModel, tokenizer: Tokenizer? = nil, chatTemplate: String? = nil,
                            to directory: URL) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelError("\(directory.path): cannot create the directory (\((error as NSError).localizedDescription))")
        }
        let config = model.config
        let eos = tokenizer.flatMap { t in ["<|endoftext|>", "<|im_end|>", "</s>"].lazy.compactMap { t.id(of: $0) }.first }
            ?? (config.vocabularySize - 1)
        let bos = tokenizer.flatMap { t in ["<|endoftext|>", "<|im_start|>", "<s>"].lazy.compactMap { t.id(of: $0) }.first } ?? eos
        try writeJSON(configJSON(config, bos: bos, eos: eos), to: directory.appendingPathComponent("config.json"))
        try writeJSON(["bos_token_id": bos, "eos_token_id": eos], to: directory.appendingPathComponent("generation_config.json"))
        var tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = []
        var held: [FloatBuffer] = []
        defer { held.forEach { $0.deallocate() } }
        for spec in TensorSpec.all(config) where !(spec.name == "output.weight" && config.tiedEmbeddings) {
            guard let entry = model.layout.entry(spec.name) else {
                throw ModelError("\(spec.name) is not an fp32 tensor of the model (load it with its weights dequantised to save it)")
            }
            let values = UnsafeBufferPointer(rebasing: model.parameters[entry.range])
            let columns = spec.shape.count == 2 ? spec.shape[1] : nil
            for piece in TensorNames.huggingFace(spec, config: config) {
                if piece.isWhole(of: spec) {
                    tensors.append((piece.name, spec.shape, values))  // stored as it is: no copy
                    continue
                }
                let buffer = FloatBuffer.allocate(capacity: piece.rows.count * (columns ?? 1))
                held.append(buffer)
                TensorNames.write(piece, from: values, into: buffer, columns: columns, config: config)
                tensors.append((piece.name, piece.shape(columns: columns), UnsafeBufferPointer(buffer)))
            }
        }
        try SafetensorsFile.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
        try tokenizer?.writeHuggingFaceFiles(to: directory)
        if let tokenizer {
            var tokenizerConfig: [String: Any] = ["tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.contextLength,
                                                  "clean_up_tokenization_spaces": false]
            if let token = try? tokenizer.decode([eos]) { tokenizerConfig["eos_token"] = token }
            if let token = try? tokenizer.decode([bos]) { tokenizerConfig["bos_token"] = token }
            if let chatTemplate { tokenizerConfig["chat_template"] = chatTemplate }
            try writeJSON(tokenizerConfig, to: directory.appendingPathComponent("tokenizer_config.json"))
        }
    }

    /// config.json's keys for `config`.
    static func configJSON(_ config: ModelConfig, bos: Int, eos: Int) -> [String: Any] {
        switch config.family {
        case .gpt2:
            return [
                "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                "vocab_size": config.vocabularySize, "n_positions": config.contextLength, "n_ctx": config.contextLength,
                "n_embd": config.embeddingSize, "n_layer": config.layerCount, "n_head": config.headCount,
                "n_inner": config.hiddenSize,
                "activation_function": config.activation == .relu ? "relu" : "gelu_new",
                "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
                "layer_norm_epsilon": config.normEpsilon, "initializer_range": 0.02,
                "tie_word_embeddings": config.tiedEmbeddings, "bos_token_id": bos, "eos_token_id": eos,
                "torch_dtype": "float32", "swiftgpt_bias": config.bias,
            ]
        case .llama:
            var base: Float = 10_000
            if case .rotary(let b) = config.positions { base = b }
            return [
                "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "vocab_size": config.vocabularySize, "hidden_size": config.embeddingSize,
                "intermediate_size": config.hiddenSize, "num_hidden_layers": config.layerCount,
                "num_attention_heads": config.headCount, "num_key_value_heads": config.keyValueHeadCount,
                "head_dim": config.headSize, "max_position_embeddings": config.contextLength,
                "rms_norm_eps": config.normEpsilon, "rope_theta": base, "hidden_act": "silu",
                "attention_bias": false, "mlp_bias": false, "attention_dropout": config.dropout,
                "tie_word_embeddings": config.tiedEmbeddings, "bos_token_id": bos, "eos_token_id": eos,
                "torch_dtype": "float32", "initializer_range": 0.02,
            ]
        }
    }

    /// The model config of a checkpoint directory's config.json.
    public static func loadConfig(_ directory: URL) throws -> ModelConfig {
        let url = directory.appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError("\(url.path): cannot read (is \(directory.path) a checkpoint directory?)")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError("\(url.path): not a JSON object")
        }
        func integer(_ key: String, _ fallback: Int? = nil) throws -> Int {
            if let value = json[key] as? Int { return value }
            if let fallback { return fallback }
            throw ModelError("\(url.path): \"\(key)\" is missing or not an integer")
        }
        func number(_ key: String) -> Float? { (json[key] as? NSNumber).map { $0.floatValue } }
        var config: ModelConfig
        let modelType = json["model_type"] as? String ?? "gpt2"
        switch modelType {
        case "gpt2":
            let activationName = json["activation_function"] as? String ?? "gelu_new"
            let activation: ModelConfig.Activation
            switch activationName {
            case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": activation = .gelu
            case "relu": activation = .relu
            default: throw ModelError("\(url.path): activation_function \"\(activationName)\" is not supported (gelu_new, relu)")
            }
            config = ModelConfig.gpt2(
                layers: try integer("n_layer"), heads: try integer("n_head"), embedding: try integer("n_embd"),
                vocabularySize: try integer("vocab_size"), contextLength: try integer("n_positions", json["n_ctx"] as? Int),
                activation: activation, bias: json["swiftgpt_bias"] as? Bool ?? true, dropout: number("resid_pdrop") ?? 0)
            if let inner = json["n_inner"] as? Int { config.hiddenSize = inner }
            if let epsilon = number("layer_norm_epsilon") { config.normEpsilon = epsilon }
            config.tiedEmbeddings = json["tie_word_embeddings"] as? Bool ?? true
        case "llama":
            let activation = json["hidden_act"] as? String ?? "silu"
            guard activation == "silu" else { throw ModelError("\(url.path): hidden_act \"\(activation)\" is not supported (silu)") }
            for key in ["attention_bias", "mlp_bias"] where json[key] as? Bool == true {
                throw ModelError("\(url.path): \(key) true is not supported")
            }
            let rope = json["rope_parameters"] as? [String: Any] ?? json["rope_scaling"] as? [String: Any]
            if let type = rope?["rope_type"] as? String ?? rope?["type"] as? String, type != "default" {
                throw ModelError("\(url.path): rope scaling \"\(type)\" is not supported")
            }
            let base = number("rope_theta") ?? (rope?["rope_theta"] as? NSNumber)?.floatValue ?? 10_000
            let heads = try integer("num_attention_heads"), embedding = try integer("hidden_size")
            config = ModelConfig.llama(
                layers: try integer("num_hidden_layers"), heads: heads,
                keyValueHeads: try integer("num_key_value_heads", heads), embedding: embedding,
                hidden: try integer("intermediate_size"), vocabularySize: try integer("vocab_size"),
                contextLength: try integer("max_position_embeddings"), ropeBase: base,
                normEpsilon: number("rms_norm_eps") ?? 1e-6,
                tiedEmbeddings: json["tie_word_embeddings"] as? Bool ?? false, dropout: number("attention_dropout") ?? 0)
            if let headSize = json["head_dim"] as? Int, heads > 0, headSize != embedding / heads {
                throw ModelError("\(url.path): head_dim \(headSize) differs from hidden_size / num_attention_heads (\(embedding / max(1, heads))); not supported")
            }
        default:
            throw ModelError("\(url.path): model_type \"\(modelType)\" is not supported here (gpt2, llama)")
        }
        let problems = config.problems
        guard problems.isEmpty else { throw ModelError("\(url.path): " + problems.joined(separator: "; ")) }
        return config
    }

    /// Loads a checkpoint directory: the config, then every tensor, checked against it. With
    /// `trainable` false the model has no gradient buffers (for generation: half the memory).
    /// `rotaryPairing` is the RoPE row order to hold q and k in (a run that began from a GGUF
    /// file resumes in its order, so that its optimizer moments line up with the rows).
    public static func load(_ directory: URL, pool: ThreadPool = .shared, trainable: Bool = true,
                            rotaryPairing: ModelConfig.RotaryPairing = .halves) throws -> LanguageModel {
        var config = try loadConfig(directory)
        config.dropout = 0
        config.rotaryPairing = rotaryPairing
        let model = try LanguageModel(config: config, pool: pool, trainable: trainable)
        let file = try SafetensorsFile(url: directory.appendingPathComponent("model.safetensors"))
        for entry in model.layout.entries {
            let columns = entry.shape.count == 2 ? entry.shape[1] : nil
            for piece in TensorNames.huggingFace(entry.spec, config: config) {
                // GPT2LMHeadModel saves "transformer."-prefixed names; GPT2Model saves bare ones.
                let bare = piece.name.hasPrefix("transformer.") ? String(piece.name.dropFirst("transformer.".count)) : piece.name
                guard let name = [piece.name, bare].first(where: { file.tensors[$0] != nil }) else {
                    throw ModelError("\(file.url.path): tensor \(piece.name) is missing")
                }
                let shape = file.tensors[name]!.shape, expected = piece.shape(columns: columns)
                guard shape == expected else {
                    throw ModelError("\(file.url.path): tensor \(name) has shape \(shape) but the config needs \(expected)")
                }
                let values = try file.read(name)
                values.withUnsafeBufferPointer {
                    TensorNames.read(piece, from: $0, into: model.parameter(entry.name), columns: columns, config: config)
                }
            }
        }
        return model
    }

    /// The chat template in a checkpoint directory's tokenizer_config.json, if any.
    public static func chatTemplate(in directory: URL) -> String? {
        let url = directory.appendingPathComponent("tokenizer_config.json")
        guard let data = FileManager.default.contents(atPath: url.path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return json["chat_template"] as? String
    }

    static func writeJSON(_ object: [String: Any], to url: URL) throws {
        do {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: url, options: .atomic)
        } catch {
            throw ModelError("\(url.path): cannot write (\((error as NSError).localizedDescription))")
        }
    }
}
