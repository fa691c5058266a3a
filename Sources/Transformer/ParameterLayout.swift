/// The tensors of a model under one naming for both families (GGUF's names, with the query, key
/// and value projections fused, and SwiGLU's gate and up projections fused), every matrix
/// `[out, in]`:
///
///     token_embd.weight          (V, C)
///     position_embd.weight       (maxT, C)                  learned positions only
///     blk.{l}.attn_norm.weight   (C)      .bias (C)         bias: LayerNorm with biases only
///     blk.{l}.attn_qkv.weight    (NH·hd + 2·NKV·hd, C)      .bias
///     blk.{l}.attn_output.weight (C, NH·hd)                 .bias
///     blk.{l}.ffn_norm.weight    (C)      .bias (C)
///     blk.{l}.ffn_up.weight      (H, C), or (2H, C) gate|up for SwiGLU        .bias
///     blk.{l}.ffn_down.weight    (C, H)                     .bias
///     output_norm.weight (C)  output_norm.bias (C)          output.weight (V, C) when not tied
///
/// `Formats/TensorNames.swift` maps these to Hugging Face's and GGUF's names and layouts.
public struct TensorSpec: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
    /// Matrices take weight decay; biases and norm gains do not (nanoGPT's rule: dim >= 2).
    public var decays: Bool { shape.count >= 2 }

    /// Every tensor of a model of `config`, in storage order (a layer's tensors together).
    public static func all(_ config: ModelConfig) -> [TensorSpec] {
        let c = config.embeddingSize, attention = config.headCount * config.headSize
        let layerNormBias = config.norm == .layerNorm && config.bias
        var specs = [TensorSpec(name: "token_embd.weight", shape: [config.vocabularySize, c])]
        if config.positions == .learned { specs.append(.init(name: "position_embd.weight", shape: [config.contextLength, c])) }
        func norm(_ name: String) {
            specs.append(.init(name: name + ".weight", shape: [c]))
            if layerNormBias { specs.append(.init(name: name + ".bias", shape: [c])) }
        }
        func linear(_ name: String, out: Int, in inputs: Int) {
            specs.append(.init(name: name + ".weight", shape: [out, inputs]))
            if config.bias { specs.append(.init(name: name + ".bias", shape: [out])) }
        }
        for l in 0..<config.layerCount {
            let p = "blk.\(l)."
            norm(p + "attn_norm")
            linear(p + "attn_qkv", out: config.qkvSize, in: c)
            linear(p + "attn_output", out: c, in: attention)
            norm(p + "ffn_norm")
            linear(p + "ffn_up", out: config.mlpInputSize, in: c)
            linear(p + "ffn_down", out: c, in: config.hiddenSize)
        }
        norm("output_norm")
        if !config.tiedEmbeddings { specs.append(.init(name: "output.weight", shape: [config.vocabularySize, c])) }
        return specs
    }
}

/// Where each fp32 tensor of a model lives in its parameter arena (and, at the same offsets, in
/// its gradient arena). Tensors used in place from a file (quantised GGUF weights) are not here.
public struct ParameterLayout: Sendable {
    public struct Entry: Sendable {
        public let spec: TensorSpec
        public let offset: Int
        public var name: String { spec.name }
        public var shape: [Int] { spec.shape }
        public var count: Int { spec.count }
        public var decays: Bool { spec.decays }
        public var range: Range<Int> { offset..<(offset + count) }
    }

    public let entries: [Entry]
    public let totalCount: Int
    private let indexByName: [String: Int]

    /// The layout of `specs`, one after another.
    public init(_ specs: [TensorSpec]) {
        var offset = 0
        var entries: [Entry] = []
        for spec in specs {
            entries.append(Entry(spec: spec, offset: offset))
            offset += spec.count
        }
        self.entries = entries
        totalCount = offset
        indexByName = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    /// Every tensor of `config` in the arena (a model that trains all its weights).
    public init(config: ModelConfig) { self.init(TensorSpec.all(config)) }

    public func entry(_ name: String) -> Entry? { indexByName[name].map { entries[$0] } }
}
