import Kernels

/// An fp32 tensor in memory the model owns (its parameter or gradient arena).
public typealias FloatBuffer = UnsafeMutableBufferPointer<Float>

/// A weight matrix of `rows` outputs × `columns` inputs, row-major (`[out, in]`, the layout of
/// PyTorch's `nn.Linear` and of GGUF): either fp32 in the model's parameter arena, or a GGML
/// quantised tensor used in place (memory-mapped from its GGUF file, dequantised block by block
/// inside the kernels, never trained).
public enum WeightMatrix: @unchecked Sendable {
    case dense(FloatBuffer, rows: Int, columns: Int)
    case quantized(GGMLType, UnsafeRawPointer, rows: Int, columns: Int)

    public var rows: Int { switch self { case .dense(_, let r, _), .quantized(_, _, let r, _): r } }
    public var columns: Int { switch self { case .dense(_, _, let c), .quantized(_, _, _, let c): c } }

    /// Bytes one pass over the matrix reads.
    public var byteCount: Int {
        switch self {
        case .dense(_, let r, let c): r * c * 4
        case .quantized(let type, _, let r, let c): r * (c / type.blockSize) * type.blockBytes
        }
    }

    /// Row `index` as floats (an embedding lookup).
    func row(_ index: Int, into destination: UnsafeMutablePointer<Float>) {
        switch self {
        case .dense(let values, _, let c):
            destination.update(from: values.baseAddress! + index * c, count: c)
        case .quantized(let type, let bytes, _, let c):
            dequantize(type, bytes + index * (c / type.blockSize * type.blockBytes), count: c, into: destination)
        }
    }

    /// Rows `range` as fp32: a view of dense storage, or dequantised into `scratch`.
    func dense(rows range: Range<Int>, scratch: Workspace) -> UnsafeBufferPointer<Float> {
        switch self {
        case .dense(let values, _, let c):
            return UnsafeBufferPointer(rebasing: values[(range.lowerBound * c)..<(range.upperBound * c)])
        case .quantized(let type, let bytes, _, let c):
            let out = scratch.dequantized(count: range.count * c)
            let rowBytes = c / type.blockSize * type.blockBytes
            scratch.pool.parallelRanges(range.count, minimumPerThread: 64) { part in
                dequantize(type, bytes + (range.lowerBound + part.lowerBound) * rowBytes, count: part.count * c,
                           into: out.baseAddress! + part.lowerBound * c)
            }
            return UnsafeBufferPointer(rebasing: out[0..<(range.count * c)])
        }
    }
}

/// A linear layer: `out = inp · Wᵀ + b`. The weight may be stored as several row blocks (a GGUF
/// file's separate query, key and value matrices read in place as one q|k|v projection); the
/// gradients exist only for weights that train (fp32 in the arena, one block). LoRA adapters
/// may add low-rank updates to blocks of its rows.
public struct Linear: @unchecked Sendable {
    public var blocks: [WeightMatrix]
    public var bias: FloatBuffer?
    public var weightGradient: FloatBuffer?
    public var biasGradient: FloatBuffer?
    /// LoRA adapters on blocks of the output rows (`Layers/LoRA.swift`).
    public var adapters: [LoRAAdapter] = []

    public var outputs: Int { blocks.reduce(0) { $0 + $1.rows } }
    public var inputs: Int { blocks[0].columns }
    public var byteCount: Int { blocks.reduce(0) { $0 + $1.byteCount } }
}

/// A LayerNorm (weight and bias) or RMSNorm (weight only), with gradients when training.
public struct Norm: @unchecked Sendable {
    public var weight: FloatBuffer
    public var bias: FloatBuffer?
    public var weightGradient: FloatBuffer?
    public var biasGradient: FloatBuffer?
}

/// An embedding table (V or maxT rows of C) and its gradient when it trains.
public struct Embedding: @unchecked Sendable {
    public var table: WeightMatrix
    public var gradient: FloatBuffer?
}

/// One transformer block's weights. `qkv` has q|k|v rows (NH·hd | NKV·hd | NKV·hd); `up` has
/// gate|up rows for SwiGLU (2H), else H.
public struct BlockWeights: @unchecked Sendable {
    public var attentionNorm: Norm
    public var qkv: Linear
    public var attentionOutput: Linear
    public var mlpNorm: Norm
    public var up: Linear
    public var down: Linear
}

/// Every weight of a model, as views into its storage; built once, read by every forward pass.
public struct ModelWeights: @unchecked Sendable {
    public var tokenEmbedding: Embedding
    public var positionEmbedding: Embedding?
    public var blocks: [BlockWeights]
    public var outputNorm: Norm
    /// The output projection (V, C); with tied embeddings the token embedding matrix itself, and
    /// its gradient the token embedding's gradient.
    public var output: Linear

    /// Bytes of weights one decoded token reads (every projection and the output matrix).
    public var bytesPerToken: Int {
        blocks.reduce(output.byteCount) { total, b in
            total + b.qkv.byteCount + b.attentionOutput.byteCount + b.up.byteCount + b.down.byteCount
        }
    }
}
