import Foundation
import Kernels

/// The shape of a LoRA fine-tune: rank r, alpha (the update is scaled by alpha / r), dropout on
/// the adapters' inputs, and which projections carry adapters (short names per family).
public struct LoRASettings: Codable, Sendable, Equatable {
    public var rank = 8
    public var alpha: Float = 16
    public var dropout: Float = 0.05
    /// Short target names (`LoRAAdapters.targetNames`); nil: every attention and MLP projection.
    public var targets: [String]?

    public init(rank: Int = 8, alpha: Float = 16, dropout: Float = 0.05, targets: [String]? = nil) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
    }

    public var scale: Float { alpha / Float(rank) }
}

/// A model's LoRA adapters: one per Hugging Face module a target names (a fused projection such
/// as q|k|v gets one per module), A (r, IN) and B (rows, r) in one fp32 arena with their
/// gradients, named as PEFT names them without its `base_model.model.` prefix:
///
///     model.layers.0.self_attn.q_proj.lora_A.weight  (r, C)     model.layers.0.self_attn.q_proj.lora_B.weight  (NH·hd, r)
///     transformer.h.0.attn.c_attn.lora_A.weight      (r, C)     transformer.h.0.attn.c_attn.lora_B.weight      (3C, r)
///
/// B rows of q_proj and k_proj are in the model's own RoPE pairing (`TensorNames`); the PEFT
/// reader and writer convert them.
public final class LoRAAdapters: @unchecked Sendable {
    /// One adapted module.
    public struct Target: Sendable {
        /// Our tensor without ".weight" ("blk.0.attn_qkv") and the rows of it the module is.
        public let tensor: String
        public let rows: Range<Int>
        public let inputs: Int
        /// The Hugging Face module ("model.layers.0.self_attn.q_proj") and its short name ("q").
        public let module: String
        public let shortName: String
        /// How its rows are stored in Hugging Face's layout (RoPE pairing of q and k).
        public let piece: TensorPiece
    }

    public let config: ModelConfig
    public let settings: LoRASettings
    public let targets: [Target]
    public let layout: ParameterLayout
    public let parameters: FloatBuffer
    public let gradients: FloatBuffer

    /// Short target names a family accepts, in order.
    public static func targetNames(_ family: ModelConfig.Family) -> [String] {
        family == .llama ? ["q", "k", "v", "o", "gate", "up", "down"] : ["c_attn", "c_proj", "c_fc", "mlp.c_proj"]
    }

    /// Zeroed adapters for `config` (call `initialize` or load them next).
    public init(config: ModelConfig, settings: LoRASettings) throws {
        let known = Self.targetNames(config.family)
        let wanted = settings.targets ?? known
        guard settings.rank > 0 else { throw ModelError("LoRA rank must be positive, got \(settings.rank)") }
        guard settings.dropout >= 0 && settings.dropout < 1 else {
            throw ModelError("LoRA dropout must be in [0, 1), got \(settings.dropout)")
        }
        guard !wanted.isEmpty else { throw ModelError("no LoRA targets given") }
        for name in wanted where !known.contains(name) {
            throw ModelError("unknown LoRA target \"\(name)\" for a \(config.family) model (known: \(known.joined(separator: ", ")))")
        }
        var targets: [Target] = []
        for spec in TensorSpec.all(config) where spec.name.hasPrefix("blk.") && spec.name.hasSuffix(".weight") && spec.shape.count == 2 {
            for piece in TensorNames.huggingFace(spec, config: config) {
                let module = String(piece.name.dropLast(".weight".count))
                let short = Self.shortName(module, family: config.family)
                guard wanted.contains(short) else { continue }
                targets.append(Target(tensor: String(spec.name.dropLast(".weight".count)), rows: piece.rows,
                                      inputs: spec.shape[1], module: module, shortName: short, piece: piece))
            }
        }
        var specs: [TensorSpec] = []
        for target in targets {
            specs.append(TensorSpec(name: target.module + ".lora_A.weight", shape: [settings.rank, target.inputs]))
            specs.append(TensorSpec(name: target.module + ".lora_B.weight", shape: [target.rows.count, settings.rank]))
        }
        self.config = config
        self.settings = settings
        self.targets = targets
        layout = ParameterLayout(specs)
        parameters = .allocate(capacity: max(1, layout.totalCount))
        parameters.initialize(repeating: 0)
        gradients = .allocate(capacity: max(1, layout.totalCount))
        gradients.initialize(repeating: 0)
    }

    deinit {
        parameters.deallocate()
        gradients.deallocate()
    }

    /// "model.layers.3.self_attn.q_proj" -> "q"; "transformer.h.0.mlp.c_proj" -> "mlp.c_proj".
    static func shortName(_ module: String, family: ModelConfig.Family) -> String {
        let parts = module.split(separator: ".")
        let last = String(parts.last!)
        switch family {
        case .llama: return last.hasSuffix("_proj") ? String(last.dropLast("_proj".count)) : last
        case .gpt2: return parts.dropLast().last == "mlp" && last == "c_proj" ? "mlp.c_proj" : last
        }
    }

    /// PEFT's initialisation: A uniform in ±1/sqrt(IN) (kaiming_uniform with a = sqrt(5)), B zeros,
    /// so the adapted model starts as the base model.
    public func initialize(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        for target in targets {
            let a = tensor(target.module + ".lora_A.weight"), bound = 1 / Float(target.inputs).squareRoot()
            for i in a.indices { a[i] = (2 * generator.nextUnitFloat() - 1) * bound }
            tensor(target.module + ".lora_B.weight").update(repeating: 0)
        }
    }

    public func tensor(_ name: String) -> FloatBuffer {
        guard let e = layout.entry(name) else { preconditionFailure("no LoRA tensor \(name)") }
        return FloatBuffer(rebasing: parameters[e.range])
    }

    public func gradient(_ name: String) -> FloatBuffer {
        guard let e = layout.entry(name) else { preconditionFailure("no LoRA tensor \(name)") }
        return FloatBuffer(rebasing: gradients[e.range])
    }

    /// The adapters on our tensor `tensor` ("blk.0.attn_qkv"), as views into the arena.
    func adapters(on tensor: String) -> [LoRAAdapter] {
        targets.enumerated().filter { $0.element.tensor == tensor }.map { index, target in
            LoRAAdapter(rows: target.rows, rank: settings.rank, scale: settings.scale, dropout: settings.dropout,
                        site: 1_000_000 + index, a: self.tensor(target.module + ".lora_A.weight"),
                        b: self.tensor(target.module + ".lora_B.weight"),
                        aGradient: gradient(target.module + ".lora_A.weight"), bGradient: gradient(target.module + ".lora_B.weight"))
        }
    }
}

/// The tensors a training run updates: a model's own arena (full fine-tuning) or its adapters'.
public struct TrainedTensors {
    public let layout: ParameterLayout
    public let values: FloatBuffer
    public let gradients: FloatBuffer
}
