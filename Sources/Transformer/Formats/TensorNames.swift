/// How one of our tensors (`ParameterLayout`'s names, `[out, in]`) is stored in an outside
/// format: as one or more pieces, each a block of our rows under the format's own name,
///
///     blk.0.attn_qkv.weight (48, 32), Llama  ->  Hugging Face  model.layers.0.self_attn.q_proj.weight  rows 0..<32
///                                                               model.layers.0.self_attn.k_proj.weight  rows 32..<40 ...
///     blk.0.attn_qkv.weight (96, 32), GPT-2  ->  Hugging Face  transformer.h.0.attn.c_attn.weight (32, 96), transposed
///
/// Rotary query and key rows are permuted between RoPE layouts: Hugging Face stores each head
/// as two halves, GGUF as adjacent pairs (llama.cpp's converter permutes them); a model keeps the
/// layout it was loaded in (`ModelConfig.rotaryPairing`) and the pieces convert on the way.
public struct TensorPiece: Sendable, Equatable {
    /// The tensor's name in the outside format.
    public let name: String
    /// Our rows this piece holds (elements, for a vector).
    public let rows: Range<Int>
    /// Stored `[in, out]` (GPT-2's Conv1D), the transpose of ours.
    public let transposed: Bool
    /// For query and key rows: heads whose rows the outside format pairs differently.
    public let rotaryHeads: Int?

    /// Whether the piece is all of `spec` in our layout (no rows split off, transposed or permuted).
    public func isWhole(of spec: TensorSpec) -> Bool {
        rows == 0..<spec.shape[0] && !transposed && rotaryHeads == nil
    }

    /// The piece's shape in the outside format, for our tensor's `columns` (nil for a vector).
    public func shape(columns: Int?) -> [Int] {
        guard let columns else { return [rows.count] }
        return transposed ? [columns, rows.count] : [rows.count, columns]
    }
}

public enum TensorNames {
    /// The pieces of `spec` in a Hugging Face checkpoint (`GPT2LMHeadModel` or `LlamaForCausalLM`).
    public static func huggingFace(_ spec: TensorSpec, config: ModelConfig) -> [TensorPiece] {
        let all = 0..<spec.shape[0]
        switch config.family {
        case .gpt2:
            let names = ["token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f", "attn_norm": "ln_1",
                         "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
                         "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"]
            if spec.name == "output.weight" { return [TensorPiece(name: "lm_head.weight", rows: all, transposed: false, rotaryHeads: nil)] }
            let (layer, base, suffix) = split(spec.name)
            let name = "transformer." + (layer.map { "h.\($0)." } ?? "") + names[base]! + suffix
            return [TensorPiece(name: name, rows: all, transposed: spec.shape.count == 2 && layer != nil, rotaryHeads: nil)]
        case .llama:
            let (layer, base, suffix) = split(spec.name)
            guard let layer else {
                let names = ["token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"]
                return [TensorPiece(name: names[base]! + suffix, rows: all, transposed: false, rotaryHeads: nil)]
            }
            let p = "model.layers.\(layer)."
            let rotate = config.rotaryPairing != .halves
            switch base {
            case "attn_qkv":
                return qkvPieces(config: config, rotate: rotate).map { piece in
                    TensorPiece(name: p + "self_attn.\(piece.part)_proj" + suffix, rows: piece.rows, transposed: false,
                                rotaryHeads: piece.heads)
                }
            case "ffn_up":
                let H = config.hiddenSize
                return [TensorPiece(name: p + "mlp.gate_proj" + suffix, rows: 0..<H, transposed: false, rotaryHeads: nil),
                        TensorPiece(name: p + "mlp.up_proj" + suffix, rows: H..<(2 * H), transposed: false, rotaryHeads: nil)]
            default:
                let names = ["attn_norm": "input_layernorm", "attn_output": "self_attn.o_proj",
                             "ffn_norm": "post_attention_layernorm", "ffn_down": "mlp.down_proj"]
                return [TensorPiece(name: p + names[base]! + suffix, rows: all, transposed: false, rotaryHeads: nil)]
            }
        }
    }

    /// The pieces of `spec` in a GGUF file (llama.cpp's names; `[out, in]` as ours).
    public static func gguf(_ spec: TensorSpec, config: ModelConfig) -> [TensorPiece] {
        let all = 0..<spec.shape[0]
        let (layer, base, suffix) = split(spec.name)
        guard config.family == .llama, let layer else {
            return [TensorPiece(name: spec.name, rows: all, transposed: false, rotaryHeads: nil)]
        }
        let p = "blk.\(layer)."
        switch base {
        case "attn_qkv":
            return qkvPieces(config: config, rotate: config.rotaryPairing != .adjacent).map { piece in
                TensorPiece(name: p + "attn_\(piece.part)" + suffix, rows: piece.rows, transposed: false, rotaryHeads: piece.heads)
            }
        case "ffn_up":
            let H = config.hiddenSize
            return [TensorPiece(name: p + "ffn_gate" + suffix, rows: 0..<H, transposed: false, rotaryHeads: nil),
                    TensorPiece(name: p + "ffn_up" + suffix, rows: H..<(2 * H), transposed: false, rotaryHeads: nil)]
        default:
            return [TensorPiece(name: spec.name, rows: all, transposed: false, rotaryHeads: nil)]
        }
    }

    /// "blk.3.attn_qkv.weight" -> (3, "attn_qkv", ".weight"); "output_norm.bias" -> (nil, "output_norm", ".bias").
    private static func split(_ name: String) -> (layer: Int?, base: String, suffix: String) {
        var parts = name.split(separator: ".").map(String.init)
        let suffix = "." + parts.removeLast()
        if parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]) { return (layer, parts[2], suffix) }
        return (nil, parts.joined(separator: "."), suffix)
    }

    private static func qkvPieces(config: ModelConfig, rotate: Bool) -> [(part: String, rows: Range<Int>, heads: Int?)] {
        let q = config.headCount * config.headSize, kv = config.keyValueSize
        return [("q", 0..<q, rotate ? config.headCount : nil),
                ("k", q..<(q + kv), rotate ? config.keyValueHeadCount : nil),
                ("v", (q + kv)..<(q + 2 * kv), nil)]
    }

    /// For each of our rows of a piece, the outside format's row: the identity, or the RoPE
    /// pairing permutation between our layout and the other one.
    ///
    ///     halves (i, i + hd/2) -> adjacent (2i, 2i + 1):  row h·hd + s·hd/2 + i  is stored at  h·hd + 2i + s
    static func outsideRow(_ piece: TensorPiece, ourPairing: ModelConfig.RotaryPairing, headSize hd: Int) -> (Int) -> Int {
        guard piece.rotaryHeads != nil else { return { $0 } }
        let half = hd / 2
        switch ourPairing {
        case .halves:
            return { row in
                let h = row / hd, within = row % hd
                return h * hd + 2 * (within % half) + within / half
            }
        case .adjacent:
            return { row in
                let h = row / hd, within = row % hd
                return h * hd + (within % 2) * half + within / 2
            }
        }
    }

    /// Copies a piece as stored outside (`source`, in its shape) into our tensor `ours`
    /// (`columns` per row; nil for a vector).
    public static func read(_ piece: TensorPiece, from source: UnsafeBufferPointer<Float>, into ours: FloatBuffer,
                     columns: Int?, config: ModelConfig) {
        let n = columns ?? 1, count = piece.rows.count
        let outside = outsideRow(piece, ourPairing: config.rotaryPairing, headSize: config.headSize)
        for r in 0..<count {
            let target = ours.baseAddress! + (piece.rows.lowerBound + r) * n
            if piece.transposed {
                for c in 0..<n { target[c] = source[c * count + r] }
            } else {
                target.update(from: source.baseAddress! + outside(r) * n, count: n)
            }
        }
    }

    /// Writes the piece of our tensor `ours` into `result` in the outside format's layout.
    public static func write(_ piece: TensorPiece, from ours: UnsafeBufferPointer<Float>, into result: FloatBuffer, columns: Int?,
                      config: ModelConfig) {
        let n = columns ?? 1, count = piece.rows.count
        let outside = outsideRow(piece, ourPairing: config.rotaryPairing, headSize: config.headSize)
        for r in 0..<count {
            let row = ours.baseAddress! + (piece.rows.lowerBound + r) * n
            for c in 0..<n {
                if piece.transposed { result[c * count + r] = row[c] } else { result[outside(r) * n + c] = row[c] }
            }
        }
    }
}
