/// Where each parameter tensor lives in the model's single parameter buffer, under its Hugging
/// Face name (without the `transformer.` prefix) and shape.
///
///     wte.weight            (V, C)
///     wpe.weight            (maxT, C)
///     h.{l}.ln_1.weight     (C)        h.{l}.ln_1.bias     (C)
///     h.{l}.attn.c_attn.weight (C, 3C) h.{l}.attn.c_attn.bias (3C)   Conv1D layout: [in, out]
///     h.{l}.attn.c_proj.weight (C, C)  h.{l}.attn.c_proj.bias (C)
///     h.{l}.ln_2.weight     (C)        h.{l}.ln_2.bias     (C)
///     h.{l}.mlp.c_fc.weight (C, H)     h.{l}.mlp.c_fc.bias (H)
///     h.{l}.mlp.c_proj.weight (H, C)   h.{l}.mlp.c_proj.bias (C)
///     ln_f.weight (C)  ln_f.bias (C)   [lm_head.weight (V, C) when not tied]
///
/// Biases are absent when `config.bias` is false. Layers are stored one after another, so a
/// layer's tensors are contiguous.
public struct ParameterLayout: Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Matrices take weight decay; biases and norm gains do not (nanoGPT's rule: dim >= 2).
        public var decays: Bool { shape.count >= 2 }
    }

    public let entries: [Entry]
    public let totalCount: Int
    private let indexByName: [String: Int]

    public init(config: ModelConfig) {
        let c = config.embeddingSize, h = config.hiddenSize
        var shapes: [(String, [Int])] = [("wte.weight", [config.vocabularySize, c])]
        if config.positions == .learned { shapes.append(("wpe.weight", [config.contextLength, c])) }
        func add(_ name: String, _ shape: [Int], bias: Int? = nil) {
            shapes.append((name + ".weight", shape))
            if let bias, config.bias { shapes.append((name + ".bias", [bias])) }
        }
        for layer in 0..<config.layerCount {
            let p = "h.\(layer)."
            add(p + "ln_1", [c], bias: c)
            add(p + "attn.c_attn", [c, 3 * c], bias: 3 * c)
            add(p + "attn.c_proj", [c, c], bias: c)
            add(p + "ln_2", [c], bias: c)
            add(p + "mlp.c_fc", [c, h], bias: h)
            add(p + "mlp.c_proj", [h, c], bias: c)
        }
        add("ln_f", [c], bias: c)
        if !config.tiedEmbeddings { shapes.append(("lm_head.weight", [config.vocabularySize, c])) }
        var offset = 0
        var entries: [Entry] = []
        for (name, shape) in shapes {
            entries.append(Entry(name: name, shape: shape, offset: offset))
            offset += shape.reduce(1, *)
        }
        self.entries = entries
        totalCount = offset
        indexByName = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    public func entry(_ name: String) -> Entry? { indexByName[name].map { entries[$0] } }

    /// The range of `name` in the buffer; the name must exist (a programming error otherwise).
    public func range(_ name: String) -> Range<Int> {
        guard let e = entry(name) else { preconditionFailure("no parameter \(name)") }
        return e.offset..<(e.offset + e.count)
    }
}
