import Foundation
import Kernels

/// A GPT-2 family decoder-only transformer that trains on the CPU: token and learned position
/// embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a GELU or ReLU MLP,
/// a final LayerNorm, and an output layer tied to the token embeddings.
///
/// Parameters live in one buffer (named views in `layout`, Hugging Face names and layouts), as do
/// their gradients. Activations are allocated once per (batch, length) and reused. Each layer is
/// a forward/backward pair in the style of llm.c's `train_gpt2.c`; shapes are noted as (B, T, C).
///
///     let model = try GPT(config: .gpt2(layers: 2, heads: 4, embedding: 64, vocabularySize: 512, contextLength: 64))
///     model.initializeWeights(seed: 1)
///     let loss = try model.forward(tokens: x, targets: y, batch: 4, length: 64)
///     model.zeroGradients(); model.backward()
public final class GPT: @unchecked Sendable {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let parameters: UnsafeMutableBufferPointer<Float>
    public let gradients: UnsafeMutableBufferPointer<Float>
    public var pool: ThreadPool

    private var activations: Activations?
    private var lastBatch: (tokens: [Int32], targets: [Int32]?, batch: Int, length: Int)?
    private var dropout: (training: Bool, seed: UInt64) = (false, 0)

    /// Whether gradient buffers exist (a model loaded only to generate has none).
    public let trainable: Bool

    public init(config: ModelConfig, pool: ThreadPool = .shared, trainable: Bool = true) throws {
        let problems = config.problems
        guard problems.isEmpty else { throw ModelError("invalid model config: " + problems.joined(separator: "; ")) }
        guard config.family == .gpt2, config.positions == .learned, config.norm == .layerNorm,
              config.activation != .swiglu, config.keyValueHeadCount == config.headCount else {
            throw ModelError("the trainable GPT model takes GPT-2 family configs (learned positions, LayerNorm, GELU/ReLU MLP, full attention)")
        }
        self.config = config
        layout = ParameterLayout(config: config)
        // Parameters and gradients in fp32 (Adam's moments come on top): refuse what cannot fit.
        let bytes = Double(layout.totalCount) * (trainable ? 8 : 4)
        guard bytes < Double(ProcessInfo.processInfo.physicalMemory) else {
            throw ModelError(String(format: "the model needs %.1f GB for parameters and gradients; this machine has %.1f GB",
                                    bytes / 1e9, Double(ProcessInfo.processInfo.physicalMemory) / 1e9))
        }
        parameters = .allocate(capacity: layout.totalCount)
        parameters.initialize(repeating: 0)
        gradients = .allocate(capacity: trainable ? layout.totalCount : 0)
        gradients.initialize(repeating: 0)
        self.trainable = trainable
        self.pool = pool
    }

    deinit {
        parameters.deallocate()
        gradients.deallocate()
    }

    /// The parameter tensor `name` (see `ParameterLayout`).
    public func parameter(_ name: String) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: parameters[layout.range(name)])
    }

    public func gradient(_ name: String) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: gradients[layout.range(name)])
    }

    /// GPT-2's initialisation: weights and embeddings normal(0, 0.02), the two residual
    /// projections of each block normal(0, 0.02 / sqrt(2 · layers)), biases 0, norm gains 1.
    public func initializeWeights(seed: UInt64) {
        var generator = SplitMix64(seed: seed)
        let residualStd = 0.02 / Float(2 * config.layerCount).squareRoot()
        for entry in layout.entries {
            let values = UnsafeMutableBufferPointer(rebasing: parameters[entry.offset..<(entry.offset + entry.count)])
            if entry.name.hasSuffix(".bias") {
                values.update(repeating: 0)
            } else if entry.shape.count == 1 {
                values.update(repeating: 1)
            } else {
                let std: Float = entry.name.hasSuffix("c_proj.weight") ? residualStd : 0.02
                for i in values.indices { values[i] = generator.nextNormal() * std }
            }
        }
    }

    public func zeroGradients() { gradients.update(repeating: 0) }

    /// The logits of the last forward pass, (B, T, V).
    public var logits: UnsafeBufferPointer<Float> {
        guard let a = activations, let batch = lastBatch else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(rebasing: a.logits[0..<(batch.batch * batch.length * config.vocabularySize)])
    }

    // MARK: forward

    /// Runs the model on `tokens` (B·T ids, row-major (B, T)); with `targets` returns the mean
    /// cross-entropy over the targets that are not -1, else nil. `training` turns dropout on,
    /// with masks drawn from `dropoutSeed` (the same seed gives the same masks at any thread count).
    @discardableResult
    public func forward(tokens: [Int32], targets: [Int32]?, batch: Int, length: Int,
                        training: Bool = false, dropoutSeed: UInt64 = 0) throws -> Float? {
        let B = batch, T = length, C = config.embeddingSize, V = config.vocabularySize
        guard B > 0, T > 0 else { throw ModelError("batch and length must be positive, got \(B) x \(T)") }
        guard T <= config.contextLength else {
            throw ModelError("sequence length \(T) exceeds the model's context length (block size) \(config.contextLength)")
        }
        guard tokens.count == B * T, targets.map({ $0.count == B * T }) ?? true else {
            throw ModelError("expected \(B * T) tokens and targets for batch \(B) x length \(T), got \(tokens.count)")
        }
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= V }) {
            throw ModelError("token id \(tokens[bad]) at position \(bad) is outside the vocabulary (0..<\(V))")
        }
        if let targets, let bad = targets.firstIndex(where: { $0 < -1 || Int($0) >= V }) {
            throw ModelError("target id \(targets[bad]) at position \(bad) is outside the vocabulary (0..<\(V), or -1 to ignore)")
        }
        if activations == nil || activations!.batch < B || activations!.length < T || activations!.batch * activations!.length < B * T {
            activations = Activations(config: config, batch: B, length: T)
        }
        let a = activations!
        lastBatch = (tokens, targets, B, T)
        dropout = (training && config.dropout > 0, dropoutSeed)
        let BT = B * T
        let wte = parameter("wte.weight"), wpe = parameter("wpe.weight")

        // encoded (B, T, C) = wte[token] + wpe[t]
        for bt in 0..<BT {
            let token = Int(tokens[bt]), t = bt % T
            for i in 0..<C { a.encoded[bt * C + i] = wte[token * C + i] + wpe[t * C + i] }
        }
        applyDropout(a.encoded, count: BT * C, site: 0)

        var residual = UnsafeBufferPointer(a.encoded)
        for l in 0..<config.layerCount {
            let p = "h.\(l).", s = a.layers[l]
            layerNormForward(out: s.ln1, mean: s.ln1Mean, rstd: s.ln1Rstd, inp: residual,
                             weight: UnsafeBufferPointer(parameter(p + "ln_1.weight")), bias: bias(p + "ln_1.bias"),
                             rows: BT, cols: C, epsilon: config.normEpsilon, pool: pool)
            linearForward(out: s.qkv, inp: s.ln1, name: p + "attn.c_attn", rows: BT)
            attentionForward(s, B: B, T: T, layer: l)
            linearForward(out: s.attProj, inp: s.attY, name: p + "attn.c_proj", rows: BT)
            applyDropout(s.attProj, count: BT * C, site: 2 + 3 * l)
            add(s.residual2, residual, s.attProj, count: BT * C)
            layerNormForward(out: s.ln2, mean: s.ln2Mean, rstd: s.ln2Rstd, inp: UnsafeBufferPointer(s.residual2),
                             weight: UnsafeBufferPointer(parameter(p + "ln_2.weight")), bias: bias(p + "ln_2.bias"),
                             rows: BT, cols: C, epsilon: config.normEpsilon, pool: pool)
            linearForward(out: s.fcH, inp: s.ln2, name: p + "mlp.c_fc", rows: BT)
            activationForward(out: s.fcAct, inp: s.fcH, count: BT * config.hiddenSize)
            linearForward(out: s.fcProj, inp: s.fcAct, name: p + "mlp.c_proj", rows: BT)
            applyDropout(s.fcProj, count: BT * C, site: 3 + 3 * l)
            add(s.residual3, UnsafeBufferPointer(s.residual2), s.fcProj, count: BT * C)
            residual = UnsafeBufferPointer(s.residual3)
        }
        layerNormForward(out: a.lnf, mean: a.lnfMean, rstd: a.lnfRstd, inp: residual,
                         weight: UnsafeBufferPointer(parameter("ln_f.weight")), bias: bias("ln_f.bias"),
                         rows: BT, cols: C, epsilon: config.normEpsilon, pool: pool)
        // logits (B, T, V) = lnf (B, T, C) · Wᵀ with W = wte or lm_head (V, C)
        gemm(.none, .transposed, m: BT, n: V, k: C, a: UnsafeBufferPointer(a.lnf), lda: C,
             b: UnsafeBufferPointer(outputMatrix), ldb: C, c: a.logits, ldc: V, pool: pool)
        guard let targets else { return nil }
        // The probabilities go where backward turns them into dlogits in place.
        return targets.withUnsafeBufferPointer { t in
            crossEntropyForward(losses: a.losses, probabilities: a.dLogits, logits: UnsafeBufferPointer(a.logits),
                                targets: t, rows: BT, vocab: V, ignoreIndex: -1, pool: pool)
        }
    }

    private var outputMatrix: UnsafeMutableBufferPointer<Float> {
        parameter(config.tiedEmbeddings ? "wte.weight" : "lm_head.weight")
    }

    private func bias(_ name: String) -> UnsafeBufferPointer<Float>? {
        layout.entry(name).map { _ in UnsafeBufferPointer(parameter(name)) }
    }

    /// out (rows, OC) = inp (rows, IC) · W (IC, OC) + b, W in Hugging Face's Conv1D layout.
    private func linearForward(out: UnsafeMutableBufferPointer<Float>, inp: UnsafeMutableBufferPointer<Float>,
                               name: String, rows: Int) {
        let w = layout.entry(name + ".weight")!
        let (ic, oc) = (w.shape[0], w.shape[1])
        gemm(.none, .none, m: rows, n: oc, k: ic, a: UnsafeBufferPointer(inp), lda: ic,
             b: UnsafeBufferPointer(parameter(name + ".weight")), ldb: oc, c: out, ldc: oc, pool: pool)
        if let b = bias(name + ".bias") {
            pool.parallelRanges(rows, minimumPerThread: 64) { range in
                for r in range {
                    for o in 0..<oc { out[r * oc + o] += b[o] }
                }
            }
        }
    }

    private func add(_ out: UnsafeMutableBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>,
                     _ y: UnsafeMutableBufferPointer<Float>, count: Int) {
        pool.parallelRanges(count, minimumPerThread: 65_536) { range in
            for i in range { out[i] = x[i] + y[i] }
        }
    }

    private func activationForward(out: UnsafeMutableBufferPointer<Float>, inp: UnsafeMutableBufferPointer<Float>, count: Int) {
        pool.parallelRanges(count, minimumPerThread: 16_384) { range in
            let o = UnsafeMutableBufferPointer(rebasing: out[range]), x = UnsafeBufferPointer(rebasing: inp[range])
            if config.activation == .relu {
                reluForward(out: o, inp: x, count: range.count)
            } else {
                geluForward(out: o, inp: x, count: range.count)
            }
        }
    }

    /// Causal self-attention of one layer, parallel over batch × heads:
    /// att (B, NH, T, T) = softmax(q kᵀ / sqrt(hs)) masked to s <= t; attY (B, T, C) = att · v.
    private func attentionForward(_ s: LayerActivations, B: Int, T: Int, layer: Int) {
        let C = config.embeddingSize, NH = config.headCount, hs = C / NH
        let scale = 1 / Float(hs).squareRoot()
        let qkv = UnsafeBufferPointer(s.qkv)
        let site = 1 + 3 * layer
        pool.parallelFor(B * NH) { bh in
            let b = bh / NH, h = bh % NH
            let q = UnsafeBufferPointer(rebasing: qkv[(b * T * 3 * C + h * hs)...])
            let k = UnsafeBufferPointer(rebasing: qkv[(b * T * 3 * C + C + h * hs)...])
            let v = UnsafeBufferPointer(rebasing: qkv[(b * T * 3 * C + 2 * C + h * hs)...])
            let att = UnsafeMutableBufferPointer(rebasing: s.att[(bh * T * T)..<((bh + 1) * T * T)])
            gemm(.none, .transposed, m: T, n: T, k: hs, alpha: scale, a: q, lda: 3 * C, b: k, ldb: 3 * C,
                 c: att, ldc: T, pool: .serial)
            for t in 0..<T {
                let row = UnsafeMutableBufferPointer(rebasing: att[(t * T)..<(t * T + T)])
                softmaxRows(UnsafeMutableBufferPointer(rebasing: row[0...t]), rows: 1, cols: t + 1)
                for j in (t + 1)..<T { row[j] = 0 }
            }
            var probabilities = UnsafeBufferPointer(att)
            if dropout.training {
                let dropped = UnsafeMutableBufferPointer(rebasing: s.attDropped[(bh * T * T)..<((bh + 1) * T * T)])
                for i in 0..<(T * T) { dropped[i] = att[i] * dropoutScale(site: site, index: bh * T * T + i) }
                probabilities = UnsafeBufferPointer(dropped)
            }
            let out = UnsafeMutableBufferPointer(rebasing: s.attY[(b * T * C + h * hs)...])
            gemm(.none, .none, m: T, n: hs, k: T, a: probabilities, lda: T, b: v, ldb: 3 * C,
                 c: out, ldc: C, pool: .serial)
        }
    }

    // MARK: dropout

    /// 0 or 1/(1-p) for element `index` of dropout site `site`, from a hash of the seed, so
    /// masks do not depend on the order or thread that asks.
    @inline(__always)
    private func dropoutScale(site: Int, index: Int) -> Float {
        var z = dropout.seed &+ UInt64(site) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let u = Float(z >> 40) * (1.0 / 16_777_216.0)
        return u < config.dropout ? 0 : 1 / (1 - config.dropout)
    }

    private func applyDropout(_ x: UnsafeMutableBufferPointer<Float>, count: Int, site: Int) {
        guard dropout.training else { return }
        pool.parallelRanges(count, minimumPerThread: 65_536) { range in
            for i in range { x[i] *= dropoutScale(site: site, index: i) }
        }
    }

    // MARK: backward

    /// Accumulates into `gradients` the gradient of the mean loss of the last forward pass
    /// (which must have had targets). Call `zeroGradients()` first unless accumulating.
    public func backward() {
        guard trainable, let a = activations, let last = lastBatch, let targets = last.targets else {
            preconditionFailure("backward() needs a trainable model and a forward pass with targets first")
        }
        let B = last.batch, T = last.length, C = config.embeddingSize, V = config.vocabularySize
        let H = config.hiddenSize, BT = B * T
        let counted = targets.reduce(0) { $0 + ($1 == -1 ? 0 : 1) }
        targets.withUnsafeBufferPointer { t in
            crossEntropyBackward(dlogits: a.dLogits, probabilities: UnsafeBufferPointer(a.dLogits), targets: t,
                                 rows: BT, vocab: V, scale: counted > 0 ? 1 / Float(counted) : 0, ignoreIndex: -1, pool: pool)
        }
        // dlnf (BT, C) = dlogits (BT, V) · W (V, C);  dW (V, C) += dlogitsᵀ · lnf
        gemm(.none, .none, m: BT, n: C, k: V, a: UnsafeBufferPointer(a.dLogits), lda: V,
             b: UnsafeBufferPointer(outputMatrix), ldb: C, c: a.dLn, ldc: C, pool: pool)
        gemm(.transposed, .none, m: V, n: C, k: BT, a: UnsafeBufferPointer(a.dLogits), lda: V,
             b: UnsafeBufferPointer(a.lnf), ldb: C, beta: 1,
             c: gradient(config.tiedEmbeddings ? "wte.weight" : "lm_head.weight"), ldc: C, pool: pool)
        let dResidual = a.dResidual
        dResidual.update(repeating: 0)
        let finalResidual = config.layerCount > 0 ? UnsafeBufferPointer(a.layers[config.layerCount - 1].residual3) : UnsafeBufferPointer(a.encoded)
        layerNormBackward(dinp: dResidual, dweight: gradient("ln_f.weight"), dbias: gradientIfPresent("ln_f.bias"),
                          dout: UnsafeBufferPointer(a.dLn), inp: finalResidual, weight: UnsafeBufferPointer(parameter("ln_f.weight")),
                          mean: UnsafeBufferPointer(a.lnfMean), rstd: UnsafeBufferPointer(a.lnfRstd), rows: BT, cols: C)

        for l in stride(from: config.layerCount - 1, through: 0, by: -1) {
            let p = "h.\(l).", s = a.layers[l]
            let residual = l == 0 ? UnsafeBufferPointer(a.encoded) : UnsafeBufferPointer(a.layers[l - 1].residual3)
            // residual3 = residual2 + dropout(fcProj): both get dResidual.
            copyWithDropout(a.dBranch, from: dResidual, count: BT * C, site: 3 + 3 * l)
            a.dHidden.update(repeating: 0)
            linearBackward(dinp: a.dHidden, dout: a.dBranch, inp: s.fcAct, name: p + "mlp.c_proj", rows: BT)
            a.dHiddenPre.update(repeating: 0)
            activationBackward(dinp: a.dHiddenPre, inp: s.fcH, dout: a.dHidden, count: BT * H)
            a.dLn.update(repeating: 0)
            linearBackward(dinp: a.dLn, dout: a.dHiddenPre, inp: s.ln2, name: p + "mlp.c_fc", rows: BT)
            layerNormBackward(dinp: dResidual, dweight: gradient(p + "ln_2.weight"), dbias: gradientIfPresent(p + "ln_2.bias"),
                              dout: UnsafeBufferPointer(a.dLn), inp: UnsafeBufferPointer(s.residual2),
                              weight: UnsafeBufferPointer(parameter(p + "ln_2.weight")),
                              mean: UnsafeBufferPointer(s.ln2Mean), rstd: UnsafeBufferPointer(s.ln2Rstd), rows: BT, cols: C)
            // residual2 = residual + dropout(attProj)
            copyWithDropout(a.dBranch, from: dResidual, count: BT * C, site: 2 + 3 * l)
            a.dAttY.update(repeating: 0)
            linearBackward(dinp: a.dAttY, dout: a.dBranch, inp: s.attY, name: p + "attn.c_proj", rows: BT)
            a.dQKV.update(repeating: 0)
            attentionBackward(s, dOut: a.dAttY, dQKV: a.dQKV, dAtt: a.dAtt, B: B, T: T, layer: l)
            a.dLn.update(repeating: 0)
            linearBackward(dinp: a.dLn, dout: a.dQKV, inp: s.ln1, name: p + "attn.c_attn", rows: BT)
            layerNormBackward(dinp: dResidual, dweight: gradient(p + "ln_1.weight"), dbias: gradientIfPresent(p + "ln_1.bias"),
                              dout: UnsafeBufferPointer(a.dLn), inp: residual,
                              weight: UnsafeBufferPointer(parameter(p + "ln_1.weight")),
                              mean: UnsafeBufferPointer(s.ln1Mean), rstd: UnsafeBufferPointer(s.ln1Rstd), rows: BT, cols: C)
        }
        // encoded = dropout(wte[token] + wpe[t])
        copyWithDropout(a.dBranch, from: dResidual, count: BT * C, site: 0)
        let dwte = gradient("wte.weight"), dwpe = gradient("wpe.weight")
        for bt in 0..<BT {
            let token = Int(last.tokens[bt]), t = bt % T
            for i in 0..<C {
                let g = a.dBranch[bt * C + i]
                dwte[token * C + i] += g
                dwpe[t * C + i] += g
            }
        }
    }

    private func gradientIfPresent(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        layout.entry(name).map { _ in gradient(name) }
    }

    private func copyWithDropout(_ out: UnsafeMutableBufferPointer<Float>, from x: UnsafeMutableBufferPointer<Float>,
                                 count: Int, site: Int) {
        pool.parallelRanges(count, minimumPerThread: 65_536) { range in
            if dropout.training {
                for i in range { out[i] = x[i] * dropoutScale(site: site, index: i) }
            } else {
                for i in range { out[i] = x[i] }
            }
        }
    }

    /// dinp (rows, IC) += dout (rows, OC) · Wᵀ;  dW (IC, OC) += inpᵀ · dout;  db (OC) += Σ_rows dout.
    private func linearBackward(dinp: UnsafeMutableBufferPointer<Float>, dout: UnsafeMutableBufferPointer<Float>,
                                inp: UnsafeMutableBufferPointer<Float>, name: String, rows: Int) {
        let w = layout.entry(name + ".weight")!
        let (ic, oc) = (w.shape[0], w.shape[1])
        gemm(.none, .transposed, m: rows, n: ic, k: oc, a: UnsafeBufferPointer(dout), lda: oc,
             b: UnsafeBufferPointer(parameter(name + ".weight")), ldb: oc, beta: 1, c: dinp, ldc: ic, pool: pool)
        gemm(.transposed, .none, m: ic, n: oc, k: rows, a: UnsafeBufferPointer(inp), lda: ic,
             b: UnsafeBufferPointer(dout), ldb: oc, beta: 1, c: gradient(name + ".weight"), ldc: oc, pool: pool)
        if let db = gradientIfPresent(name + ".bias") {
            // Each column summed over rows in order: the same bits at any thread count.
            pool.parallelRanges(oc, minimumPerThread: 64) { columns in
                for r in 0..<rows {
                    for o in columns { db[o] += dout[r * oc + o] }
                }
            }
        }
    }

    private func activationBackward(dinp: UnsafeMutableBufferPointer<Float>, inp: UnsafeMutableBufferPointer<Float>,
                                    dout: UnsafeMutableBufferPointer<Float>, count: Int) {
        pool.parallelRanges(count, minimumPerThread: 16_384) { range in
            let d = UnsafeMutableBufferPointer(rebasing: dinp[range]), x = UnsafeBufferPointer(rebasing: inp[range])
            let g = UnsafeBufferPointer(rebasing: dout[range])
            if config.activation == .relu {
                reluBackward(dinp: d, inp: x, dout: g, count: range.count)
            } else {
                geluBackward(dinp: d, inp: x, dout: g, count: range.count)
            }
        }
    }

    /// The gradient of `attentionForward` into dQKV (B, T, 3C), which must start at zero.
    private func attentionBackward(_ s: LayerActivations, dOut: UnsafeMutableBufferPointer<Float>,
                                   dQKV: UnsafeMutableBufferPointer<Float>, dAtt: UnsafeMutableBufferPointer<Float>,
                                   B: Int, T: Int, layer: Int) {
        let C = config.embeddingSize, NH = config.headCount, hs = C / NH
        let scale = 1 / Float(hs).squareRoot()
        let qkv = UnsafeBufferPointer(s.qkv), site = 1 + 3 * layer
        pool.parallelFor(B * NH) { bh in
            let b = bh / NH, h = bh % NH
            let base = b * T * 3 * C + h * hs
            let q = UnsafeBufferPointer(rebasing: qkv[base...])
            let k = UnsafeBufferPointer(rebasing: qkv[(base + C)...])
            let v = UnsafeBufferPointer(rebasing: qkv[(base + 2 * C)...])
            let dq = UnsafeMutableBufferPointer(rebasing: dQKV[base...])
            let dk = UnsafeMutableBufferPointer(rebasing: dQKV[(base + C)...])
            let dv = UnsafeMutableBufferPointer(rebasing: dQKV[(base + 2 * C)...])
            let dy = UnsafeBufferPointer(rebasing: dOut[(b * T * C + h * hs)...])
            let att = UnsafeBufferPointer(rebasing: s.att[(bh * T * T)..<((bh + 1) * T * T)])
            let probabilities = dropout.training
                ? UnsafeBufferPointer(rebasing: s.attDropped[(bh * T * T)..<((bh + 1) * T * T)]) : att
            let dP = UnsafeMutableBufferPointer(rebasing: dAtt[(bh * T * T)..<((bh + 1) * T * T)])
            // dP (T, T) = dy · vᵀ;  dv (T, hs) += Pᵀ · dy
            gemm(.none, .transposed, m: T, n: T, k: hs, a: dy, lda: C, b: v, ldb: 3 * C, c: dP, ldc: T, pool: .serial)
            gemm(.transposed, .none, m: T, n: hs, k: T, a: probabilities, lda: T, b: dy, ldb: C, beta: 1,
                 c: dv, ldc: 3 * C, pool: .serial)
            // Softmax backward on the causal rows: dS = P ⊙ (dP - Σ P dP), 0 above the diagonal.
            for t in 0..<T {
                var dot: Float = 0
                for j in 0...t {
                    if dropout.training { dP[t * T + j] *= dropoutScale(site: site, index: bh * T * T + t * T + j) }
                    dot += att[t * T + j] * dP[t * T + j]
                }
                for j in 0...t { dP[t * T + j] = att[t * T + j] * (dP[t * T + j] - dot) }
                for j in (t + 1)..<T { dP[t * T + j] = 0 }
            }
            // dq += scale · dS · k;  dk += scale · dSᵀ · q
            gemm(.none, .none, m: T, n: hs, k: T, alpha: scale, a: UnsafeBufferPointer(dP), lda: T, b: k, ldb: 3 * C,
                 beta: 1, c: dq, ldc: 3 * C, pool: .serial)
            gemm(.transposed, .none, m: T, n: hs, k: T, alpha: scale, a: UnsafeBufferPointer(dP), lda: T, b: q, ldb: 3 * C,
                 beta: 1, c: dk, ldc: 3 * C, pool: .serial)
        }
    }
}

/// The per-layer activations a backward pass needs.
final class LayerActivations {
    let ln1, ln1Mean, ln1Rstd, qkv, att, attDropped, attY, attProj, residual2: UnsafeMutableBufferPointer<Float>
    let ln2, ln2Mean, ln2Rstd, fcH, fcAct, fcProj, residual3: UnsafeMutableBufferPointer<Float>

    init(_ arena: Arena, B: Int, T: Int, C: Int, H: Int, NH: Int, dropout: Bool) {
        let BT = B * T
        ln1 = arena.take(BT * C); ln1Mean = arena.take(BT); ln1Rstd = arena.take(BT)
        qkv = arena.take(BT * 3 * C); att = arena.take(B * NH * T * T)
        attDropped = dropout ? arena.take(B * NH * T * T) : att
        attY = arena.take(BT * C); attProj = arena.take(BT * C); residual2 = arena.take(BT * C)
        ln2 = arena.take(BT * C); ln2Mean = arena.take(BT); ln2Rstd = arena.take(BT)
        fcH = arena.take(BT * H); fcAct = arena.take(BT * H); fcProj = arena.take(BT * C)
        residual3 = arena.take(BT * C)
    }
}

/// All activations and activation gradients for one (batch, length), in one allocation.
final class Activations {
    let batch: Int, length: Int
    let arena: Arena
    let encoded, lnf, lnfMean, lnfRstd, logits, losses: UnsafeMutableBufferPointer<Float>
    let layers: [LayerActivations]
    // Gradient scratch, reused layer after layer.
    let dLogits, dLn, dResidual, dBranch, dHidden, dHiddenPre, dAttY, dQKV, dAtt: UnsafeMutableBufferPointer<Float>

    init(config: ModelConfig, batch B: Int, length T: Int) {
        batch = B
        length = T
        let C = config.embeddingSize, H = config.hiddenSize, V = config.vocabularySize
        let NH = config.headCount, BT = B * T, dropout = config.dropout > 0
        let perLayer = BT * (C * 9 + 4 + 3 * C + 2 * H) + B * NH * T * T * (dropout ? 2 : 1)
        let total = BT * (C * 2 + 3 + V) + config.layerCount * perLayer
            + BT * (V + C * 4 + H * 2 + 3 * C) + B * NH * T * T
        let arena = Arena(count: total)
        self.arena = arena
        encoded = arena.take(BT * C)
        layers = (0..<config.layerCount).map { _ in LayerActivations(arena, B: B, T: T, C: C, H: H, NH: NH, dropout: dropout) }
        lnf = arena.take(BT * C); lnfMean = arena.take(BT); lnfRstd = arena.take(BT)
        logits = arena.take(BT * V); losses = arena.take(BT)
        dLogits = arena.take(BT * V); dLn = arena.take(BT * C); dResidual = arena.take(BT * C)
        dBranch = arena.take(BT * C); dHidden = arena.take(BT * H); dHiddenPre = arena.take(BT * H)
        dAttY = arena.take(BT * C); dQKV = arena.take(BT * 3 * C); dAtt = arena.take(B * NH * T * T)
    }
}

/// One zeroed allocation handed out in consecutive slices.
final class Arena {
    let storage: UnsafeMutableBufferPointer<Float>
    private var used = 0

    init(count: Int) {
        storage = .allocate(capacity: count)
        storage.initialize(repeating: 0)
    }

    deinit { storage.deallocate() }

    func take(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(used + count <= storage.count, "Arena: sized too small")
        defer { used += count }
        return UnsafeMutableBufferPointer(rebasing: storage[used..<(used + count)])
    }
}
