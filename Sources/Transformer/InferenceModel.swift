import CKernels
import Foundation
import Kernels

/// A decoder-only transformer for generation, GPT-2 or Llama family, with a KV cache: `prefill`
/// runs a block of prompt tokens, `decode` one token at a time. Weights are either quantised
/// GGUF tensors, used in place from the memory-mapped file (dequantised block by block inside the
/// matrix-vector kernel; dequantised a matrix at a time into fp32 for prompt blocks, which then
/// run as a gemm), or fp32 (a trained checkpoint).
///
/// Shapes: x (T, C); q (T, NH·hd); k, v (T, NKV·hd); the cache holds k and v for every position.
public final class InferenceModel: @unchecked Sendable {
    /// A weight matrix of `rows` output features × `columns` inputs, row-major.
    public enum Matrix {
        case quantized(GGMLType, UnsafeRawPointer, rows: Int, columns: Int)
        case dense(UnsafeMutableBufferPointer<Float>, rows: Int, columns: Int)

        public var rows: Int { switch self { case .quantized(_, _, let r, _), .dense(_, let r, _): r } }
        public var columns: Int { switch self { case .quantized(_, _, _, let c), .dense(_, _, let c): c } }
        var byteCount: Int {
            switch self {
            case .quantized(let type, _, let r, let c): return r * c / type.blockSize * type.blockBytes
            case .dense(_, let r, let c): return r * c * 4
            }
        }
    }

    public struct Linear {
        public var weight: Matrix
        public var bias: [Float]?
    }

    public struct Norm {
        public var weight: [Float]
        public var bias: [Float]?
    }

    public struct Layer {
        public var attentionNorm: Norm
        /// Either one fused q|k|v projection (GPT-2) or three (Llama), in that order.
        public var qkv: [Linear]
        public var attentionOutput: Linear
        public var mlpNorm: Norm
        /// Llama's gate projection (SwiGLU); nil for GPT-2's plain MLP.
        public var gate: Linear?
        public var up: Linear
        public var down: Linear
    }

    public let config: ModelConfig
    public let tokenEmbedding: Matrix
    public let positionEmbedding: [Float]?
    public let layers: [Layer]
    public let outputNorm: Norm
    public let output: Matrix
    public var pool: ThreadPool
    /// Keeps the memory-mapped file (or dense storage) alive.
    let owner: AnyObject?

    // KV cache: per layer (capacity, NKV·hd).
    public private(set) var cacheCapacity = 0
    public private(set) var position = 0
    private var keys: [UnsafeMutableBufferPointer<Float>] = []
    private var values: [UnsafeMutableBufferPointer<Float>] = []
    private var scratch = InferenceScratch()
    /// base^(-2i/hd) for each rotary pair i, computed on first use.
    private var rotaryFrequencies: [Double] = []

    public init(config: ModelConfig, tokenEmbedding: Matrix, positionEmbedding: [Float]?, layers: [Layer],
                outputNorm: Norm, output: Matrix, owner: AnyObject?, pool: ThreadPool = .shared) {
        self.config = config
        self.tokenEmbedding = tokenEmbedding
        self.positionEmbedding = positionEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.output = output
        self.owner = owner
        self.pool = pool
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Bytes of weights one decoded token reads.
    public var weightBytes: Int {
        var total = output.byteCount
        for layer in layers {
            total += (layer.qkv + [layer.attentionOutput, layer.up, layer.down] + (layer.gate.map { [$0] } ?? []))
                .reduce(0) { $0 + $1.weight.byteCount }
        }
        return total
    }

    var keyValueSize: Int { config.keyValueHeadCount * config.headSize }

    /// Clears the cache and makes room for `capacity` positions (at most the context length).
    public func reset(capacity: Int) throws {
        guard capacity > 0 else { throw ModelError("the KV cache needs room for at least one token") }
        guard capacity <= config.contextLength else {
            throw ModelError("\(capacity) tokens exceed the model's context length \(config.contextLength)")
        }
        if capacity > cacheCapacity {
            keys.forEach { $0.deallocate() }
            values.forEach { $0.deallocate() }
            keys = layers.map { _ in .allocate(capacity: capacity * keyValueSize) }
            values = layers.map { _ in .allocate(capacity: capacity * keyValueSize) }
            cacheCapacity = capacity
        }
        position = 0
    }

    /// Runs `tokens` at the next positions, filling the cache; returns the logits of the last one
    /// (V floats, valid until the next call).
    public func forward(_ tokens: [Int]) throws -> UnsafeBufferPointer<Float> {
        let T = tokens.count, C = config.embeddingSize, V = config.vocabularySize
        guard T > 0 else { throw ModelError("no tokens to run") }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= V }) {
            throw ModelError("token id \(bad) is outside the vocabulary (0..<\(V))")
        }
        guard position + T <= cacheCapacity else {
            throw ModelError("position \(position + T) exceeds the KV cache (\(cacheCapacity) tokens; context length \(config.contextLength))")
        }
        let s = scratch.prepare(config: config, tokens: T, cacheCapacity: cacheCapacity)
        // x (T, C) = token embedding (+ position embedding)
        for (t, token) in tokens.enumerated() {
            row(of: tokenEmbedding, token, into: s.x.baseAddress! + t * C)
            if let positionEmbedding {
                for i in 0..<C { s.x[t * C + i] += positionEmbedding[(position + t) * C + i] }
            }
        }
        for (l, layer) in layers.enumerated() {
            normalize(s.x, layer.attentionNorm, into: s.normed, rows: T, s: s)
            attention(layer: l, layer, s: s, T: T)
            normalize(s.x, layer.mlpNorm, into: s.normed, rows: T, s: s)
            mlp(layer, s: s, T: T)
        }
        // Only the last position's logits.
        let last = UnsafeMutableBufferPointer(rebasing: s.normed[0..<C])
        normalize(UnsafeMutableBufferPointer(rebasing: s.x[((T - 1) * C)..<(T * C)]), outputNorm, into: last, rows: 1, s: s)
        apply(output, bias: nil, to: UnsafeBufferPointer(last), rows: 1, into: s.logits)
        position += T
        return UnsafeBufferPointer(rebasing: s.logits[0..<V])
    }

    // MARK: layers

    private func normalize(_ x: UnsafeMutableBufferPointer<Float>, _ norm: Norm, into out: UnsafeMutableBufferPointer<Float>,
                           rows: Int, s: InferenceScratch) {
        let C = config.embeddingSize
        norm.weight.withUnsafeBufferPointer { w in
            if config.norm == .rmsNorm {
                rmsNormForward(out: out, rstd: s.statistics, inp: UnsafeBufferPointer(x), weight: w, rows: rows, cols: C,
                               epsilon: config.normEpsilon, pool: pool)
            } else {
                let bias = norm.bias ?? [Float](repeating: 0, count: C)
                bias.withUnsafeBufferPointer { b in
                    layerNormForward(out: out, mean: s.mean, rstd: s.statistics, inp: UnsafeBufferPointer(x), weight: w, bias: b,
                                     rows: rows, cols: C, epsilon: config.normEpsilon, pool: pool)
                }
            }
        }
    }

    private func attention(layer l: Int, _ layer: Layer, s: InferenceScratch, T: Int) {
        let C = config.embeddingSize, NH = config.headCount, NKV = config.keyValueHeadCount, hd = config.headSize
        let qSize = NH * hd, kvSize = NKV * hd, width = qSize + 2 * kvSize
        // qkv (T, q | k | v)
        var column = 0
        for projection in layer.qkv {
            apply(projection.weight, bias: projection.bias, to: UnsafeBufferPointer(s.normed), rows: T, into: s.projected)
            let n = projection.weight.rows
            for t in 0..<T {
                (s.qkv.baseAddress! + t * width + column).update(from: s.projected.baseAddress! + t * n, count: n)
            }
            column += n
        }
        if case .rotary(let base) = config.positions {
            applyRotary(s.qkv, T: T, width: width, heads: NH, offset: 0, base: base)
            applyRotary(s.qkv, T: T, width: width, heads: NKV, offset: qSize, base: base)
        }
        let keys = self.keys[l], values = self.values[l]
        for t in 0..<T {
            (keys.baseAddress! + (position + t) * kvSize).update(from: s.qkv.baseAddress! + t * width + qSize, count: kvSize)
            (values.baseAddress! + (position + t) * kvSize).update(from: s.qkv.baseAddress! + t * width + qSize + kvSize, count: kvSize)
        }
        // Each (token, head): scores over positions 0...p, softmax, weighted sum of values.
        let scale = 1 / Float(hd).squareRoot(), group = NH / NKV, start = position
        let isa = InstructionSet.best.rawValue
        pool.parallelFor(T * NH) { index in
            let t = index / NH, h = index % NH, g = h / group, p = start + t
            let q = s.qkv.baseAddress! + t * width + h * hd
            let scores = s.scores.baseAddress! + index * cacheCapacity
            for j in 0...p { scores[j] = sg_dot(isa, hd, q, keys.baseAddress! + j * kvSize + g * hd) * scale }
            _ = sg_softmax_row(isa, p + 1, scores)
            let out = s.attended.baseAddress! + t * qSize + h * hd
            out.update(repeating: 0, count: hd)
            for j in 0...p {
                let weight = scores[j], v = values.baseAddress! + j * kvSize + g * hd
                for i in 0..<hd { out[i] += weight * v[i] }
            }
        }
        apply(layer.attentionOutput.weight, bias: layer.attentionOutput.bias, to: UnsafeBufferPointer(s.attended), rows: T, into: s.projected)
        for i in 0..<(T * C) { s.x[i] += s.projected[i] }
    }

    /// RoPE in GGUF's layout (llama.cpp's "normal" mode): each head's adjacent pairs (x[2i], x[2i+1])
    /// turn by position · base^(-2i/hd).
    private func applyRotary(_ qkv: UnsafeMutableBufferPointer<Float>, T: Int, width: Int, heads: Int, offset: Int, base: Float) {
        let hd = config.headSize
        if rotaryFrequencies.count != hd / 2 {
            rotaryFrequencies = (0..<(hd / 2)).map { pow(Double(base), -2 * Double($0) / Double(hd)) }
        }
        for t in 0..<T {
            let p = Double(position + t)
            for i in 0..<(hd / 2) {
                let angle = p * rotaryFrequencies[i]
                let c = Float(cos(angle)), sn = Float(sin(angle))
                for h in 0..<heads {
                    let x = qkv.baseAddress! + t * width + offset + h * hd + 2 * i
                    let x0 = x[0], x1 = x[1]
                    x[0] = x0 * c - x1 * sn
                    x[1] = x0 * sn + x1 * c
                }
            }
        }
    }

    private func mlp(_ layer: Layer, s: InferenceScratch, T: Int) {
        let C = config.embeddingSize, H = layer.up.weight.rows
        apply(layer.up.weight, bias: layer.up.bias, to: UnsafeBufferPointer(s.normed), rows: T, into: s.hidden)
        if let gate = layer.gate {
            apply(gate.weight, bias: gate.bias, to: UnsafeBufferPointer(s.normed), rows: T, into: s.hiddenGate)
            let n = T * H
            pool.parallelRanges(n, minimumPerThread: 8192) { range in
                for i in range {
                    let g = s.hiddenGate[i]
                    s.hidden[i] *= g / (1 + exp(-g))
                }
            }
        } else if config.activation == .relu {
            for i in 0..<(T * H) { s.hidden[i] = max(0, s.hidden[i]) }
        } else {
            sg_gelu_forward(InstructionSet.best.rawValue, T * H, s.hidden.baseAddress!, s.hidden.baseAddress!)
        }
        apply(layer.down.weight, bias: layer.down.bias, to: UnsafeBufferPointer(s.hidden), rows: T, into: s.projected)
        for i in 0..<(T * C) { s.x[i] += s.projected[i] }
    }

    /// out (rows, W.rows) = inp (rows, W.columns) · Wᵀ + bias. One row: a matrix-vector product
    /// over the (quantised) weights; several: W dequantised into fp32 once, then a gemm.
    private func apply(_ w: Matrix, bias: [Float]?, to inp: UnsafeBufferPointer<Float>, rows: Int,
                       into out: UnsafeMutableBufferPointer<Float>) {
        let n = w.rows, k = w.columns
        switch w {
        case .quantized(let type, let pointer, _, _):
            if rows == 1 {
                quantizedMatvec(type, rows: n, k: k, weights: pointer, x: inp, y: out, pool: pool)
            } else {
                let dense = scratch.dequantized(count: n * k)
                pool.parallelRanges(n, minimumPerThread: 64) { range in
                    let rowBytes = k / type.blockSize * type.blockBytes
                    dequantize(type, pointer + range.lowerBound * rowBytes, count: range.count * k,
                               into: dense.baseAddress! + range.lowerBound * k)
                }
                gemm(.none, .transposed, m: rows, n: n, k: k, a: inp, lda: k, b: UnsafeBufferPointer(dense), ldb: k,
                     c: out, ldc: n, pool: pool)
            }
        case .dense(let weights, _, _):
            if rows == 1 {
                matvec(rows: n, k: k, a: UnsafeBufferPointer(weights), lda: k, x: inp, y: out, pool: pool)
            } else {
                gemm(.none, .transposed, m: rows, n: n, k: k, a: inp, lda: k, b: UnsafeBufferPointer(weights), ldb: k,
                     c: out, ldc: n, pool: pool)
            }
        }
        if let bias {
            for r in 0..<rows { for o in 0..<n { out[r * n + o] += bias[o] } }
        }
    }

    /// Row `index` of a matrix as floats (the token embedding lookup).
    private func row(of matrix: Matrix, _ index: Int, into destination: UnsafeMutablePointer<Float>) {
        switch matrix {
        case .quantized(let type, let pointer, _, let columns):
            dequantize(type, pointer + index * (columns / type.blockSize * type.blockBytes), count: columns, into: destination)
        case .dense(let weights, _, let columns):
            destination.update(from: weights.baseAddress! + index * columns, count: columns)
        }
    }
}

/// Activation buffers for a block of T tokens, grown as needed and reused.
final class InferenceScratch {
    var capacityTokens = 0
    var x, normed, qkv, projected, attended, hidden, hiddenGate, scores, logits, mean, statistics: UnsafeMutableBufferPointer<Float>
    private var dense = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)

    init() {
        let empty = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
        (x, normed, qkv, projected, attended, hidden, hiddenGate, scores, logits, mean, statistics) =
            (empty, empty, empty, empty, empty, empty, empty, empty, empty, empty, empty)
    }

    deinit { release() }

    private func release() {
        for buffer in [x, normed, qkv, projected, attended, hidden, hiddenGate, scores, logits, mean, statistics, dense] where buffer.baseAddress != nil {
            buffer.deallocate()
        }
    }

    func prepare(config: ModelConfig, tokens T: Int, cacheCapacity: Int) -> InferenceScratch {
        if T <= capacityTokens && logits.count == config.vocabularySize && scores.count >= T * config.headCount * cacheCapacity {
            return self
        }
        let keep = dense
        dense = UnsafeMutableBufferPointer(start: nil, count: 0)
        release()
        dense = keep
        let C = config.embeddingSize, hd = config.headSize
        let width = config.headCount * hd + 2 * config.keyValueHeadCount * hd
        let widest = max(C, width, config.hiddenSize)
        func make(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, count))
            buffer.initialize(repeating: 0)
            return buffer
        }
        x = make(T * C); normed = make(T * C); qkv = make(T * width); projected = make(T * widest)
        attended = make(T * config.headCount * hd); hidden = make(T * config.hiddenSize); hiddenGate = make(T * config.hiddenSize)
        scores = make(T * config.headCount * cacheCapacity); logits = make(config.vocabularySize)
        mean = make(T); statistics = make(T)
        capacityTokens = T
        return self
    }

    func dequantized(count: Int) -> UnsafeMutableBufferPointer<Float> {
        if dense.count < count {
            if dense.baseAddress != nil { dense.deallocate() }
            dense = .allocate(capacity: count)
        }
        return dense
    }
}
