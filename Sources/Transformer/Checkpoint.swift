import BPE
import Foundation
import Kernels

/// A Hugging Face style checkpoint directory:
///
///     config.json              GPT2Config keys (model_type "gpt2")
///     model.safetensors        "transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", ...
///                              (Conv1D [in, out] layout; the tied lm_head is not stored)
///     generation_config.json
///     tokenizer.json, vocab.json, merges.txt   when a tokenizer is saved with the model
///
/// so `GPT2LMHeadModel.from_pretrained(dir)` loads what we save and we load what it saves.
public enum Checkpoint {
    /// Writes the model (and tokenizer) into `directory`, each file through a temporary file.
    public static func save(_ model: GPT, tokenizer: Tokenizer? = nil, to directory: URL) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelError("\(directory.path): cannot create the directory (\((error as NSError).localizedDescription))")
        }
        let config = model.config
        let eos = tokenizer?.id(of: "<|endoftext|>") ?? (config.vocabularySize - 1)
        let configJSON: [String: Any] = [
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": config.vocabularySize, "n_positions": config.contextLength, "n_ctx": config.contextLength,
            "n_embd": config.embeddingSize, "n_layer": config.layerCount, "n_head": config.headCount,
            "n_inner": config.hiddenSize,
            "activation_function": config.activation == .relu ? "relu" : "gelu_new",
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
            "layer_norm_epsilon": config.normEpsilon, "initializer_range": 0.02,
            "tie_word_embeddings": config.tiedEmbeddings, "bos_token_id": eos, "eos_token_id": eos,
            "torch_dtype": "float32", "swiftgpt_bias": config.bias,
        ]
        try writeJSON(configJSON, to: directory.appendingPathComponent("config.json"))
        try writeJSON(["bos_token_id": eos, "eos_token_id": eos], to: directory.appendingPathComponent("generation_config.json"))
        let tensors = model.layout.entries.map { entry in
            (name: entry.name == "lm_head.weight" ? entry.name : "transformer." + entry.name, shape: entry.shape,
             values: UnsafeBufferPointer(rebasing: model.parameters[entry.offset..<(entry.offset + entry.count)]))
        }
        try SafetensorsFile.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
        try tokenizer?.writeHuggingFaceFiles(to: directory)
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
        let modelType = json["model_type"] as? String ?? "gpt2"
        guard modelType == "gpt2" else { throw ModelError("\(url.path): model_type \"\(modelType)\" is not supported here (gpt2)") }
        func integer(_ key: String, _ fallback: Int? = nil) throws -> Int {
            if let value = json[key] as? Int { return value }
            if let fallback { return fallback }
            throw ModelError("\(url.path): \"\(key)\" is missing or not an integer")
        }
        let embedding = try integer("n_embd")
        let activationName = json["activation_function"] as? String ?? "gelu_new"
        let activation: ModelConfig.Activation
        switch activationName {
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": activation = .gelu
        case "relu": activation = .relu
        default: throw ModelError("\(url.path): activation_function \"\(activationName)\" is not supported (gelu_new, relu)")
        }
        var config = ModelConfig.gpt2(
            layers: try integer("n_layer"), heads: try integer("n_head"), embedding: embedding,
            vocabularySize: try integer("vocab_size"), contextLength: try integer("n_positions", json["n_ctx"] as? Int),
            activation: activation, bias: json["swiftgpt_bias"] as? Bool ?? true,
            dropout: Float(json["resid_pdrop"] as? Double ?? 0))
        if let inner = json["n_inner"] as? Int { config.hiddenSize = inner }
        if let epsilon = json["layer_norm_epsilon"] as? Double { config.normEpsilon = Float(epsilon) }
        config.tiedEmbeddings = json["tie_word_embeddings"] as? Bool ?? true
        let problems = config.problems
        guard problems.isEmpty else { throw ModelError("\(url.path): " + problems.joined(separator: "; ")) }
        return config
    }

    /// Loads a checkpoint directory: the config, then every tensor, checked against it. With
    /// `trainable` false the model has no gradient buffers (for generation: half the memory).
    public static func load(_ directory: URL, pool: ThreadPool = .shared, trainable: Bool = true) throws -> GPT {
        var config = try loadConfig(directory)
        config.dropout = 0
        let model = try GPT(config: config, pool: pool, trainable: trainable)
        let file = try SafetensorsFile(url: directory.appendingPathComponent("model.safetensors"))
        for entry in model.layout.entries {
            // GPT2LMHeadModel saves "transformer."-prefixed names; GPT2Model saves bare ones.
            let candidates = ["transformer." + entry.name, entry.name]
            guard let name = candidates.first(where: { file.tensors[$0] != nil }) else {
                throw ModelError("\(file.url.path): tensor transformer.\(entry.name) is missing")
            }
            let shape = file.tensors[name]!.shape
            guard shape == entry.shape else {
                throw ModelError("\(file.url.path): tensor \(name) has shape \(shape) but the config needs \(entry.shape)")
            }
            try file.read(name, into: model.parameter(entry.name))
        }
        return model
    }

    private static func writeJSON(_ object: [String: Any], to url: URL) throws {
        do {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: url, options: .atomic)
        } catch {
            throw ModelError("\(url.path): cannot write (\((error as NSError).localizedDescription))")
        }
    }
}
