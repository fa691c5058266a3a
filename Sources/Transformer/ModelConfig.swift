/// The shape of a decoder-only transformer: one type for the GPT-2 family (learned positions,
/// LayerNorm, GELU or ReLU MLP, biases) and the Llama family (RoPE, RMSNorm, SwiGLU MLP,
/// grouped-query attention, no biases).
///
///     let gpt2 = ModelConfig.gpt2(layers: 12, heads: 12, embedding: 768)   // 124,439,808 parameters
public struct ModelConfig: Equatable, Sendable, Codable {
    public enum Family: String, Sendable, Codable { case gpt2, llama }
    /// The MLP's nonlinearity: `gelu` (tanh form, GPT-2), `relu` (the original transformer),
    /// or `swiglu` (Llama: down(silu(gate(x)) * up(x))).
    public enum Activation: String, Sendable, Codable { case gelu, relu, swiglu }
    public enum Norm: String, Sendable, Codable { case layerNorm, rmsNorm }
    public enum Positions: Equatable, Sendable, Codable {
        case learned
        case rotary(base: Float)
    }
    /// Which dimensions of a head RoPE turns together: Hugging Face's `halves` (i, i + hd/2) or
    /// GGUF's `adjacent` pairs (2i, 2i + 1). The same model in the other layout has the rows of its
    /// query and key projections permuted (`RotaryPairing.permutation`).
    public enum RotaryPairing: String, Sendable, Codable { case halves, adjacent }

    public var family: Family
    public var vocabularySize: Int
    /// The longest sequence the model attends over (GPT-2's `n_positions`, block size).
    public var contextLength: Int
    public var embeddingSize: Int
    public var layerCount: Int
    public var headCount: Int
    /// Key/value heads; fewer than `headCount` means grouped-query attention.
    public var keyValueHeadCount: Int
    /// Width of the MLP's hidden layer (4 × embedding in GPT-2).
    public var hiddenSize: Int
    public var activation: Activation
    public var norm: Norm
    public var normEpsilon: Float
    public var positions: Positions
    /// Biases on the linear layers and norms (GPT-2) or none (Llama).
    public var bias: Bool
    /// The output layer shares the token embedding matrix.
    public var tiedEmbeddings: Bool
    public var dropout: Float
    /// The layout of the query and key projections' rows (rotary models only).
    public var rotaryPairing: RotaryPairing = .halves

    public var headSize: Int { embeddingSize / headCount }
    /// Width of the keys (and of the values) of one position: key/value heads × head size.
    public var keyValueSize: Int { keyValueHeadCount * headSize }
    /// Rows of the fused query|key|value projection.
    public var qkvSize: Int { headCount * headSize + 2 * keyValueSize }
    /// Rows of the MLP's input projection: gate|up fused for SwiGLU (2H), else H.
    public var mlpInputSize: Int { activation == .swiglu ? 2 * hiddenSize : hiddenSize }

    /// A GPT-2 family config: learned positions, pre-LayerNorm, 4× MLP, biases, tied output.
    public static func gpt2(layers: Int, heads: Int, embedding: Int, vocabularySize: Int = 50257,
                            contextLength: Int = 1024, activation: Activation = .gelu,
                            bias: Bool = true, dropout: Float = 0) -> ModelConfig {
        ModelConfig(family: .gpt2, vocabularySize: vocabularySize, contextLength: contextLength,
                    embeddingSize: embedding, layerCount: layers, headCount: heads,
                    keyValueHeadCount: heads, hiddenSize: 4 * embedding, activation: activation,
                    norm: .layerNorm, normEpsilon: 1e-5, positions: .learned, bias: bias,
                    tiedEmbeddings: true, dropout: dropout)
    }

    /// A Llama family config: rotary positions, RMSNorm, SwiGLU MLP, no biases, grouped-query
    /// attention with `keyValueHeads` key/value heads.
    ///
    ///     ModelConfig.llama(layers: 6, heads: 6, keyValueHeads: 2, embedding: 384, hidden: 1024, vocabularySize: 4096)
    public static func llama(layers: Int, heads: Int, keyValueHeads: Int, embedding: Int, hidden: Int,
                             vocabularySize: Int, contextLength: Int = 1024, ropeBase: Float = 10_000,
                             normEpsilon: Float = 1e-5, tiedEmbeddings: Bool = true, dropout: Float = 0) -> ModelConfig {
        ModelConfig(family: .llama, vocabularySize: vocabularySize, contextLength: contextLength,
                    embeddingSize: embedding, layerCount: layers, headCount: heads,
                    keyValueHeadCount: keyValueHeads, hiddenSize: hidden, activation: .swiglu,
                    norm: .rmsNorm, normEpsilon: normEpsilon, positions: .rotary(base: ropeBase), bias: false,
                    tiedEmbeddings: tiedEmbeddings, dropout: dropout)
    }

    /// The problems that make this config unusable, each naming the field; empty when valid.
    public var problems: [String] {
        var found: [String] = []
        func require(_ condition: Bool, _ message: String) { if !condition { found.append(message) } }
        require(vocabularySize > 0, "vocab_size must be positive, got \(vocabularySize)")
        require(contextLength > 0, "context length must be positive, got \(contextLength)")
        require(layerCount > 0, "n_layer must be positive, got \(layerCount)")
        require(headCount > 0, "n_head must be positive, got \(headCount)")
        require(embeddingSize > 0, "n_embd must be positive, got \(embeddingSize)")
        require(hiddenSize > 0, "the MLP hidden size must be positive, got \(hiddenSize)")
        if headCount > 0 {
            require(embeddingSize % headCount == 0,
                    "n_embd (\(embeddingSize)) must be a multiple of n_head (\(headCount))")
        }
        if keyValueHeadCount > 0 {
            require(headCount % keyValueHeadCount == 0,
                    "n_head (\(headCount)) must be a multiple of the key/value heads (\(keyValueHeadCount))")
        } else {
            found.append("the key/value head count must be positive, got \(keyValueHeadCount)")
        }
        if case .rotary = positions, headCount > 0, embeddingSize % headCount == 0 {
            require(headSize % 2 == 0, "rotary positions need an even head size, got \(headSize)")
        }
        require(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got \(dropout)")
        require(normEpsilon > 0, "the norm epsilon must be positive, got \(normEpsilon)")
        return found
    }

    /// Every parameter, biases and norms included, counting a tied output matrix once.
    public var parameterCount: Int {
        let c = embeddingSize, kv = keyValueHeadCount * headSize
        let normSize = norm == .layerNorm && bias ? 2 * c : c
        var perLayer = 2 * normSize
        perLayer += c * (c + 2 * kv) + (bias ? c + 2 * kv : 0)  // query, key, value
        perLayer += c * c + (bias ? c : 0)  // attention output
        if activation == .swiglu {
            perLayer += 3 * c * hiddenSize + (bias ? 2 * hiddenSize + c : 0)
        } else {
            perLayer += 2 * c * hiddenSize + (bias ? hiddenSize + c : 0)
        }
        var total = vocabularySize * c + layerCount * perLayer + normSize
        if positions == .learned { total += contextLength * c }
        if !tiedEmbeddings { total += vocabularySize * c }
        return total
    }
}
