import Foundation

// LoRA adapters in PEFT's layout, so that `peft` loads what we train onto the `transformers`
// model of the same base and we load what it trains:
//
//     adapter_config.json         {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": [...], ...}
//     adapter_model.safetensors   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight  (r, C)
//                                 base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight  (NH·hd, r) ...
//
// A model read from GGUF keeps q and k rows in llama.cpp's RoPE pairing; lora_B's rows of
// q_proj and k_proj are permuted to Hugging Face's on the way out and back on the way in
// (`TensorNames.outsideRow`), so the adapter means the same on the Hugging Face model.

extension LoRAAdapters {
    static let keyPrefix = "base_model.model."

    /// Every adapter tensor (`values`: the parameters or the gradients) under PEFT's key, in
    /// Hugging Face's row order.
    public func peftTensors(_ values: FloatBuffer) -> [(name: String, shape: [Int], values: [Float])] {
        layout.entries.map { entry in
            var out = [Float](repeating: 0, count: entry.count)
            let ours = UnsafeBufferPointer(rebasing: values[entry.range])
            out.withUnsafeMutableBufferPointer { out in
                if let piece = bPiece(entry.name) {
                    TensorNames.write(piece, from: ours, into: out, columns: entry.shape[1], config: config)
                } else {
                    _ = out.update(fromContentsOf: ours)
                }
            }
            return (Self.keyPrefix + entry.name, entry.shape, out)
        }
    }

    /// For a lora_B tensor of a RoPE-permuted module, its rows as a piece to convert; else nil.
    private func bPiece(_ name: String) -> TensorPiece? {
        guard name.hasSuffix(".lora_B.weight"),
              let target = targets.first(where: { $0.module + ".lora_B.weight" == name }),
              target.piece.rotaryHeads != nil else { return nil }
        return TensorPiece(name: name, rows: 0..<target.rows.count, transposed: false, rotaryHeads: target.piece.rotaryHeads)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `directory` (created
    /// if needed; each file written to a temporary name and renamed).
    public func save(to directory: URL, baseModel: String? = nil) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelError("\(directory.path): cannot create the directory (\((error as NSError).localizedDescription))")
        }
        let modules = Set(targets.map { target in
            target.module.split(separator: ".").drop { !$0.allSatisfy(\.isNumber) }.dropFirst().joined(separator: ".")
        }).sorted()
        let json: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": settings.rank, "lora_alpha": Double(settings.alpha),
            "lora_dropout": Double(settings.dropout), "target_modules": modules, "bias": "none",
            "fan_in_fan_out": config.family == .gpt2, "use_rslora": false, "use_dora": false, "inference_mode": true,
            "init_lora_weights": true, "base_model_name_or_path": baseModel ?? NSNull(),
        ]
        let configURL = directory.appendingPathComponent("adapter_config.json")
        do {
            let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: configURL, options: .atomic)
        } catch {
            throw ModelError("\(configURL.path): cannot write (\((error as NSError).localizedDescription))")
        }
        let tensors = peftTensors(parameters), all = tensors.flatMap(\.values)
        try all.withUnsafeBufferPointer { all in
            var offset = 0
            let views = tensors.map { tensor in
                defer { offset += tensor.values.count }
                return (tensor.name, tensor.shape, UnsafeBufferPointer(rebasing: all[offset..<(offset + tensor.values.count)]))
            }
            try SafetensorsFile.write(views, metadata: ["format": "pt"], to: directory.appendingPathComponent("adapter_model.safetensors"))
        }
    }

    /// Reads a PEFT LoRA adapter directory for a model of `config`. Refuses, by name, what PEFT
    /// can hold but these adapters cannot: DoRA, rsLoRA, per-module ranks, trained biases,
    /// modules other than the projections.
    public static func load(_ directory: URL, config: ModelConfig) throws -> LoRAAdapters {
        let configURL = directory.appendingPathComponent("adapter_config.json")
        guard let data = FileManager.default.contents(atPath: configURL.path) else {
            throw ModelError("\(configURL.path): missing or unreadable (a PEFT adapter directory holds adapter_config.json)")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError("\(configURL.path): not a JSON object")
        }
        func refuse(_ why: String) -> ModelError { ModelError("\(configURL.path): \(why)") }
        guard (json["peft_type"] as? String)?.uppercased() == "LORA" else {
            throw refuse("peft_type \(json["peft_type"] ?? "missing") is not LORA")
        }
        guard let rank = (json["r"] as? NSNumber)?.intValue, rank > 0 else { throw refuse("r is missing or not a positive integer") }
        guard let alpha = (json["lora_alpha"] as? NSNumber)?.floatValue else { throw refuse("lora_alpha is missing") }
        for flag in ["use_dora", "use_rslora"] where (json[flag] as? Bool) == true { throw refuse("\(flag) is not supported") }
        if let bias = json["bias"] as? String, bias != "none" { throw refuse("bias \"\(bias)\" is not supported (none)") }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let pattern = json[key] as? [String: Any], !pattern.isEmpty { throw refuse("\(key) is not supported") }
        }
        let file = try SafetensorsFile(url: directory.appendingPathComponent("adapter_model.safetensors"))
        var modules = Set<String>()
        for key in file.tensors.keys {
            guard key.hasPrefix(keyPrefix), let range = key.range(of: ".lora_", options: .backwards),
                  [".lora_A.weight", ".lora_B.weight"].contains(String(key[range.lowerBound...])) else {
                throw ModelError("\(file.url.path): tensor \(key) is not a LoRA A or B weight under \(keyPrefix)")
            }
            modules.insert(String(key[key.index(key.startIndex, offsetBy: keyPrefix.count)..<range.lowerBound]))
        }
        let shortNames = Set(modules.map { shortName($0, family: config.family) })
        let settings = LoRASettings(rank: rank, alpha: alpha, dropout: (json["lora_dropout"] as? NSNumber)?.floatValue ?? 0,
                                    targets: targetNames(config.family).filter(shortNames.contains))
        let adapters = try LoRAAdapters(config: config, settings: settings)
        let known = Set(adapters.targets.map(\.module))
        if let stray = modules.subtracting(known).sorted().first {
            throw ModelError("\(file.url.path): module \(stray) is not a projection of this \(config.family) model")
        }
        for entry in adapters.layout.entries {
            let key = keyPrefix + entry.name
            guard let info = file.tensors[key] else {
                throw ModelError("\(file.url.path): tensor \(key) is missing (adapters on some layers only are not supported)")
            }
            guard info.shape == entry.shape else {
                throw ModelError("\(file.url.path): tensor \(key) has shape \(info.shape), expected \(entry.shape)")
            }
            let values = try file.read(key), ours = adapters.tensor(entry.name)
            values.withUnsafeBufferPointer { values in
                if let piece = adapters.bPiece(entry.name) {
                    TensorNames.read(piece, from: values, into: ours, columns: entry.shape[1], config: config)
                } else {
                    _ = ours.update(fromContentsOf: values)
                }
            }
        }
        return adapters
    }
}
