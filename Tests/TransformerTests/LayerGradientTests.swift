import Foundation
import Kernels
import XCTest
@testable import Transformer

/// Each layer's backward against central finite differences of its own forward (accumulated in
/// Double), along random directions: with loss = Σ g ⊙ forward(inputs) for a random upstream g,
/// backward(g) must be the gradient of the loss. The forwards are also held to naive float64
/// references where the fast path is not a plain loop.
final class LayerGradientTests: XCTestCase {
    var generator = SplitMix64(seed: 42)

    func random(_ count: Int, scale: Float = 1) -> [Float] { (0..<count).map { _ in generator.nextNormal() * scale } }

    /// Buffers that live for one test.
    final class Buffers {
        var held: [FloatBuffer] = []
        func make(_ values: [Float]) -> FloatBuffer {
            let buffer = FloatBuffer.allocate(capacity: max(1, values.count))
            buffer.initialize(repeating: 0)
            _ = buffer.update(fromContentsOf: values)
            held.append(buffer)
            return buffer
        }
        func zeros(_ count: Int) -> FloatBuffer { make([Float](repeating: 0, count: count)) }
        deinit { held.forEach { $0.deallocate() } }
    }

    /// forward: inputs -> output; backward: (inputs, upstream) -> gradient of each input.
    func checkGradients(_ name: String, inputs: [[Float]], epsilon: Float = 1e-2, tolerance: Double = 1e-2,
                        forward: ([[Float]]) -> [Float], backward: ([[Float]], [Float]) -> [[Float]]) {
        let upstream = random(forward(inputs).count)
        let gradients = backward(inputs, upstream)
        func loss(_ x: [[Float]]) -> Double { zip(forward(x), upstream).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        for trial in 0..<3 {
            let directions = inputs.map { random($0.count) }
            func moved(_ sign: Float) -> [[Float]] {
                zip(inputs, directions).map { x, d in zip(x, d).map { $0 + sign * epsilon * $1 } }
            }
            let numerical = (loss(moved(1)) - loss(moved(-1))) / Double(2 * epsilon)
            let analytic = zip(gradients, directions).reduce(0.0) { total, pair in
                total + zip(pair.0, pair.1).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            XCTAssertEqual(numerical, analytic, accuracy: tolerance * max(1, abs(analytic)), "\(name) direction \(trial)")
        }
    }

    func testLinearDenseAndQuantized() {
        let rows = 3, inputs = 64, outputs = 5
        let workspace = Workspace(pool: .shared)
        checkGradients("linear", inputs: [random(rows * inputs), random(outputs * inputs, scale: 0.2), random(outputs)],
                       forward: { x in
            let b = Buffers(), out = b.zeros(rows * outputs)
            let linear = Linear(blocks: [.dense(b.make(x[1]), rows: outputs, columns: inputs)], bias: b.make(x[2]))
            linearForward(out: out, inp: UnsafeBufferPointer(b.make(x[0])), linear, rows: rows, workspace: workspace)
            return Array(out)
        }, backward: { x, g in
            let b = Buffers(), dinp = b.zeros(rows * inputs), dW = b.zeros(outputs * inputs), db = b.zeros(outputs)
            let linear = Linear(blocks: [.dense(b.make(x[1]), rows: outputs, columns: inputs)], bias: b.make(x[2]),
                                weightGradient: dW, biasGradient: db)
            linearBackward(dinp: dinp, dout: UnsafeBufferPointer(b.make(g)), inp: UnsafeBufferPointer(b.make(x[0])), linear,
                           rows: rows, workspace: workspace)
            return [Array(dinp), Array(dW), Array(db)]
        })

        // A Q8_0 weight in two row blocks (as GGUF's separate q, k, v): forward against float64 over
        // the dequantised values for one row (matrix-vector kernel) and several (dequantise + gemm);
        // backward gives the input gradient only.
        let weights = random(outputs * inputs, scale: 0.2)
        let bytes = weights.withUnsafeBufferPointer { quantize(.q8_0, $0) }
        var dense = [Float](repeating: 0, count: outputs * inputs)
        bytes.withUnsafeBytes { dequantize(.q8_0, $0.baseAddress!, count: dense.count, into: &dense) }
        bytes.withUnsafeBytes { raw in
            let rowBytes = inputs / 32 * 34
            let linear = Linear(blocks: [.quantized(.q8_0, raw.baseAddress!, rows: 2, columns: inputs),
                                         .quantized(.q8_0, raw.baseAddress! + 2 * rowBytes, rows: 3, columns: inputs)], bias: nil)
            for n in [1, rows] {
                let b = Buffers(), x = random(n * inputs), out = b.zeros(n * outputs)
                linearForward(out: out, inp: UnsafeBufferPointer(b.make(x)), linear, rows: n, workspace: workspace)
                for r in 0..<n {
                    for o in 0..<outputs {
                        let exact = (0..<inputs).reduce(0.0) { $0 + Double(x[r * inputs + $1]) * Double(dense[o * inputs + $1]) }
                        XCTAssertEqual(Double(out[r * outputs + o]), exact, accuracy: 1e-4 * max(1, abs(exact)), "quantized rows \(n)")
                    }
                }
            }
            // Two rows per dequantised panel: the input gradient over several panels per block.
            Linear.backwardPanelElements = 2 * inputs
            defer { Linear.backwardPanelElements = 1 << 22 }
            checkGradients("quantized linear", inputs: [random(rows * inputs)], forward: { x in
                let b = Buffers(), out = b.zeros(rows * outputs)
                linearForward(out: out, inp: UnsafeBufferPointer(b.make(x[0])), linear, rows: rows, workspace: workspace)
                return Array(out)
            }, backward: { x, g in
                let b = Buffers(), dinp = b.zeros(rows * inputs)
                linearBackward(dinp: dinp, dout: UnsafeBufferPointer(b.make(g)), inp: UnsafeBufferPointer(b.make(x[0])), linear,
                               rows: rows, workspace: workspace)
                return [Array(dinp)]
            })
        }
    }

    /// Two LoRA adapters on row blocks of one linear (as q and v of a fused q|k|v), with
    /// dropout on, over a dense base and a Q4_1 base: input, A and B gradients (the base frozen).
    func testLoRAAdaptersOverDenseAndQuantizedBase() {
        let rows = 3, inputs = 64, outputs = 5, rank = 2
        let workspace = Workspace(pool: .shared)
        let weights = random(outputs * inputs, scale: 0.2)
        let bytes = weights.withUnsafeBufferPointer { quantize(.q4_1, $0) }
        bytes.withUnsafeBytes { raw in
            for quantized in [false, true] {
                func linear(_ b: Buffers, _ x: [[Float]], gradients: [FloatBuffer]? = nil) -> Linear {
                    let base: [WeightMatrix] = quantized
                        ? [.quantized(.q4_1, raw.baseAddress!, rows: outputs, columns: inputs)]
                        : [.dense(b.make(weights), rows: outputs, columns: inputs)]
                    var linear = Linear(blocks: base, bias: nil)
                    linear.adapters = [(0..<2, 1, 2), (3..<5, 3, 4)].enumerated().map { index, adapter in
                        LoRAAdapter(rows: adapter.0, rank: rank, scale: 1.5, dropout: 0.25, site: 1_000_000 + index,
                                    a: b.make(x[adapter.1]), b: b.make(x[adapter.2]),
                                    aGradient: gradients?[2 * index], bGradient: gradients?[2 * index + 1])
                    }
                    return linear
                }
                let seed: UInt64 = 77
                checkGradients("LoRA, quantized base \(quantized)",
                               inputs: [random(rows * inputs), random(rank * inputs, scale: 0.3), random(2 * rank, scale: 0.3),
                                        random(rank * inputs, scale: 0.3), random(2 * rank, scale: 0.3)],
                               forward: { x in
                    let b = Buffers(), out = b.zeros(rows * outputs)
                    linearForward(out: out, inp: UnsafeBufferPointer(b.make(x[0])), linear(b, x), rows: rows, trainingSeed: seed,
                                  workspace: workspace)
                    return Array(out)
                }, backward: { x, g in
                    let b = Buffers(), dinp = b.zeros(rows * inputs)
                    let gradients = [b.zeros(rank * inputs), b.zeros(2 * rank), b.zeros(rank * inputs), b.zeros(2 * rank)]
                    linearBackward(dinp: dinp, dout: UnsafeBufferPointer(b.make(g)), inp: UnsafeBufferPointer(b.make(x[0])),
                                   linear(b, x, gradients: gradients), rows: rows, trainingSeed: seed, workspace: workspace)
                    return [Array(dinp)] + gradients.map { Array($0) }
                })
            }
        }
    }

    func testNorms() {
        for kind in [ModelConfig.Norm.layerNorm, .rmsNorm] {
            var config = ModelConfig.gpt2(layers: 1, heads: 2, embedding: 16, vocabularySize: 8)
            config.norm = kind
            let rows = 3, C = 16, bias = kind == .layerNorm
            checkGradients("\(kind)", inputs: [random(rows * C), random(C, scale: 0.5).map { $0 + 1 }, random(bias ? C : 0)],
                           forward: { x in
                let b = Buffers(), out = b.zeros(rows * C)
                let norm = Norm(weight: b.make(x[1]), bias: bias ? b.make(x[2]) : nil)
                normForward(out: out, statistics: NormStatistics(mean: b.zeros(rows), rstd: b.zeros(rows)),
                            inp: UnsafeBufferPointer(b.make(x[0])), norm, rows: rows, config: config, pool: .shared)
                return Array(out)
            }, backward: { x, g in
                let b = Buffers(), dinp = b.zeros(rows * C), dW = b.zeros(C), dB = b.zeros(C)
                let norm = Norm(weight: b.make(x[1]), bias: bias ? b.make(x[2]) : nil, weightGradient: dW, biasGradient: bias ? dB : nil)
                let statistics = NormStatistics(mean: b.zeros(rows), rstd: b.zeros(rows)), inp = UnsafeBufferPointer(b.make(x[0]))
                normForward(out: b.zeros(rows * C), statistics: statistics, inp: inp, norm, rows: rows, config: config, pool: .shared)
                normBackward(dinp: dinp, dout: UnsafeBufferPointer(b.make(g)), inp: inp, norm, statistics: statistics, rows: rows,
                             config: config)
                return [Array(dinp), Array(dW), bias ? Array(dB) : []]
            })
        }
    }

    func testActivations() {
        let rows = 3, H = 20
        for activation in [ModelConfig.Activation.gelu, .relu, .swiglu] {
            let width = activation == .swiglu ? 2 * H : H
            checkGradients("\(activation)", inputs: [random(rows * width)], epsilon: 1e-3, forward: { x in
                let b = Buffers(), out = b.zeros(rows * H)
                activationForward(out: out, inp: UnsafeBufferPointer(b.make(x[0])), rows: rows, hidden: H, activation: activation,
                                  pool: .shared)
                return Array(out)
            }, backward: { x, g in
                let b = Buffers(), dinp = b.zeros(rows * width)
                activationBackward(dinp: dinp, inp: UnsafeBufferPointer(b.make(x[0])), dout: UnsafeBufferPointer(b.make(g)), rows: rows,
                                   hidden: H, activation: activation, pool: .shared)
                return [Array(dinp)]
            })
        }
    }

    /// RoPE in both pairings: backward is the inverse turn, and the two layouts agree up to the
    /// row permutation that converts GGUF <-> Hugging Face (so conversions are exact).
    func testRotaryBothPairings() {
        let rows = 4, positions: [Int32] = [0, 3, 7, 100]
        var results: [ModelConfig.RotaryPairing: [Float]] = [:]
        let input = random(rows * 32)
        for pairing in [ModelConfig.RotaryPairing.halves, .adjacent] {
            var config = ModelConfig.llama(layers: 1, heads: 2, keyValueHeads: 1, embedding: 16, hidden: 8, vocabularySize: 8)
            config.rotaryPairing = pairing
            let W = config.qkvSize, frequencies = rotaryFrequencies(config)
            func run(_ x: [Float], inverse: Bool) -> [Float] {
                let b = Buffers(), buffer = b.make(x)
                let table = positions.withUnsafeBufferPointer { RotaryTable(positions: $0, frequencies: frequencies) }
                rotary(buffer, rows: rows, ld: W, table: table, config: config, inverse: inverse, pool: .shared)
                return Array(buffer)
            }
            checkGradients("rotary \(pairing)", inputs: [random(rows * W)], forward: { run($0[0], inverse: false) },
                           backward: { [run($1, inverse: true)] })
            results[pairing] = run(input, inverse: false)
            // The value columns (the last NKV·hd) do not turn.
            XCTAssertEqual(results[pairing]![(W - 8)..<W], input[(W - 8)..<W])
        }
        // Halves -> adjacent permutes each q and k head's rows: x_adj[h·hd + 2i + s] = x_halves[h·hd + s·hd/2 + i].
        let hd = 8, half = 4
        func toAdjacent(_ x: [Float]) -> [Float] {
            var y = x
            for r in 0..<rows {
                for h in 0..<3 {
                    for i in 0..<half { for s in 0..<2 { y[r * 32 + h * hd + 2 * i + s] = x[r * 32 + h * hd + s * half + i] } }
                }
            }
            return y
        }
        var adjacentConfig = ModelConfig.llama(layers: 1, heads: 2, keyValueHeads: 1, embedding: 16, hidden: 8, vocabularySize: 8)
        adjacentConfig.rotaryPairing = .adjacent
        let b = Buffers(), permuted = b.make(toAdjacent(input))
        let table = positions.withUnsafeBufferPointer { RotaryTable(positions: $0, frequencies: rotaryFrequencies(adjacentConfig)) }
        rotary(permuted, rows: rows, ld: 32, table: table, config: adjacentConfig, pool: .shared)
        let expected = toAdjacent(results[.halves]!)
        XCTAssertLessThan(zip(Array(permuted), expected).map { abs($0 - $1) }.max()!, 1e-5)
    }

    /// Grouped-query causal attention (4 query heads over 2 key/value heads): forward against a
    /// float64 reference (the gemm path for a sequence, the dot-product path for decoding rows),
    /// backward against finite differences through q, k and v.
    func testGroupedQueryAttention() {
        let T = 6, NH = 4, NKV = 2, hd = 8, group = NH / NKV
        let W = (NH + 2 * NKV) * hd, C = NH * hd, kv = NKV * hd
        func forward(_ qkv: [Float], offset: Int = 0, rows: Int = T) -> [Float] {
            let b = Buffers(), buffer = b.make(qkv), y = b.zeros(T * C), probabilities = b.zeros(NH * T * T)
            if offset > 0 {
                for g in 0..<NKV {
                    let q = buffer.baseAddress! + offset * W + g * group * hd, k = buffer.baseAddress! + NH * hd + g * hd
                    attentionGroupDecode(y: y.baseAddress! + offset * C + g * group * hd, ldy: C,
                                         probabilities: probabilities.baseAddress! + g * group * T * T, headStride: T * T, q: q, ldq: W,
                                         group: group, kv: .contiguous(keys: k, values: k + kv, ld: W), T: rows, S: offset + rows,
                                         offset: offset, headSize: hd)
                }
                return Array(y)
            }
            for h in 0..<NH {
                let g = h / group, q = buffer.baseAddress! + h * hd, k = buffer.baseAddress! + NH * hd + g * hd
                attentionHeadForward(y: y.baseAddress! + h * hd, ldy: C, probabilities: probabilities.baseAddress! + h * T * T,
                                     q: q, ldq: W, kv: .contiguous(keys: k, values: k + kv, ld: W), T: rows, S: rows, offset: 0, headSize: hd)
            }
            return Array(y)
        }
        let x = random(T * W)
        // float64 reference
        var reference = [Double](repeating: 0, count: T * C)
        for h in 0..<NH {
            let g = h / group
            for t in 0..<T {
                var scores = (0...t).map { j in
                    (0..<hd).reduce(0.0) { $0 + Double(x[t * W + h * hd + $1]) * Double(x[j * W + NH * hd + g * hd + $1]) } / Double(hd).squareRoot()
                }
                let m = scores.max()!
                scores = scores.map { exp($0 - m) }
                let total = scores.reduce(0, +)
                for i in 0..<hd {
                    reference[t * C + h * hd + i] = (0...t).reduce(0.0) { $0 + scores[$1] / total * Double(x[$1 * W + NH * hd + kv + g * hd + i]) }
                }
            }
        }
        let full = forward(x)
        XCTAssertLessThan(zip(full, reference).map { abs(Double($0) - $1) }.max()!, 1e-5, "gemm path")
        // The last 2 rows as decoding rows over the first 4 positions (the dot-product path).
        let decoded = forward(x, offset: 4, rows: 2)
        XCTAssertLessThan(zip(decoded[(4 * C)...], reference[(4 * C)...]).map { abs(Double($0) - $1) }.max()!, 1e-5, "decode path")

        checkGradients("attention", inputs: [x], epsilon: 1e-3, forward: { forward($0[0]) }, backward: { inputs, g in
            let b = Buffers(), buffer = b.make(inputs[0]), y = b.zeros(T * C), probabilities = b.zeros(NH * T * T)
            let dQKV = b.zeros(T * W), dy = b.make(g), scratch = b.zeros(T * T)
            for h in 0..<NH {
                let k = buffer.baseAddress! + NH * hd + (h / group) * hd
                attentionHeadForward(y: y.baseAddress! + h * hd, ldy: C, probabilities: probabilities.baseAddress! + h * T * T,
                                     q: buffer.baseAddress! + h * hd, ldq: W, kv: .contiguous(keys: k, values: k + kv, ld: W), T: T, S: T, offset: 0,
                                     headSize: hd)
            }
            for g in 0..<NKV {
                let heads = (g * group..<(g + 1) * group).map { h in
                    (q: UnsafePointer(buffer.baseAddress! + h * hd), dq: dQKV.baseAddress! + h * hd, dy: UnsafePointer(dy.baseAddress! + h * hd),
                     probabilities: UnsafePointer(probabilities.baseAddress! + h * T * T),
                     used: UnsafePointer(probabilities.baseAddress! + h * T * T), dropoutIndex: 0)
                }
                let k = NH * hd + g * hd
                attentionGroupBackward(heads: heads, ldq: W, ldy: C, keys: buffer.baseAddress! + k, values: buffer.baseAddress! + k + kv,
                                       dKeys: dQKV.baseAddress! + k, dValues: dQKV.baseAddress! + k + kv, ldkv: W, T: T, headSize: hd,
                                       dScores: scratch.baseAddress!, dropout: nil)
            }
            return [Array(dQKV)]
        })
    }

    /// Decoding rows over a paged cache (blocks out of order, a partial last block) for groups of
    /// 1 to 6 query heads per key/value head and head sizes on and off the vector widths, against
    /// float64: the kernels' tiles of positions and queries and their tails. The cache holds fp32,
    /// then fp16 (the reference then reads the same rounded keys and values).
    func testGroupedDecodeOverPagedKeys() {
        let blockSize = 16, table: [Int32] = [3, 0, 2, 1], S = 53, T = 3, offset = S - T
        for storage in KVStorage.allCases {
            for (group, hd) in [(1, 64), (3, 64), (6, 16), (4, 24), (5, 128), (2, 80), (3, 8)] {
                let kvLd = 2 * hd, rowStride = group * hd
                var keys = random(table.count * blockSize * kvLd)
                if storage == .f16 { keys = keys.map { Float(Float16($0)) } }
                let q = random(T * rowStride)
                let b = Buffers(), queries = b.make(q)
                let y = b.zeros(T * rowStride), probabilities = b.zeros(group * T * S)
                let halves = keys.map { Float16($0).bitPattern }, pooled = b.make(keys)
                halves.withUnsafeBufferPointer { halves in
                    table.withUnsafeBufferPointer { table in
                        // Keys in the first hd columns of each pooled row, values in the next hd.
                        let base = storage == .f16 ? UnsafeRawPointer(halves.baseAddress!) : UnsafeRawPointer(pooled.baseAddress!)
                        let rows = KeyValueRows(keys: base, values: base + hd * storage.bytes, ld: kvLd, table: table.baseAddress!,
                                                blockSize: blockSize, storage: storage)
                        attentionGroupDecode(y: y.baseAddress!, ldy: rowStride, probabilities: probabilities.baseAddress!, headStride: T * S,
                                             q: queries.baseAddress!, ldq: rowStride, group: group, kv: rows, T: T, S: S, offset: offset,
                                             headSize: hd)
                    }
                }
                func pooledRow(_ position: Int) -> Int { (Int(table[position / blockSize]) * blockSize + position % blockSize) * kvLd }
                var worst = 0.0, worstProbability = 0.0
                for t in 0..<T {
                    for i in 0..<group {
                        let limit = offset + t + 1
                        var scores = (0..<limit).map { j in
                            (0..<hd).reduce(0.0) { $0 + Double(q[t * rowStride + i * hd + $1]) * Double(keys[pooledRow(j) + $1]) } / Double(hd).squareRoot()
                        }
                        let m = scores.max()!
                        scores = scores.map { exp($0 - m) }
                        let total = scores.reduce(0, +)
                        for j in 0..<S {
                            let expected = j < limit ? scores[j] / total : 0
                            worstProbability = max(worstProbability, abs(Double(probabilities[i * T * S + t * S + j]) - expected))
                        }
                        for c in 0..<hd {
                            let expected = (0..<limit).reduce(0.0) { $0 + scores[$1] / total * Double(keys[pooledRow($1) + hd + c]) }
                            worst = max(worst, abs(Double(y[t * rowStride + i * hd + c]) - expected))
                        }
                    }
                }
                XCTAssertLessThan(worst, 1e-5, "\(storage) group \(group), head size \(hd): outputs")
                XCTAssertLessThan(worstProbability, 1e-6, "\(storage) group \(group), head size \(hd): probabilities")
            }
        }
    }

    /// A prompt chunk of 150 rows after 37 cached positions, over a paged cache (blocks out of
    /// order, a partial last block): the gemm path runs its rows in blocks of 64, each over the
    /// keys up to its last row. Probabilities (0 past each row's position) and outputs against
    /// float64.
    func testPrefillRowsOverPagedKeys() {
        let blockSize = 16, hd = 32, kvLd = 2 * hd, offset = 37, T = 150, S = offset + T
        let table: [Int32] = (0..<Int32((S + blockSize - 1) / blockSize)).reversed()
        let keys = random(table.count * blockSize * kvLd), q = random(T * hd)
        let b = Buffers(), pooled = b.make(keys), queries = b.make(q)
        let y = b.zeros(T * hd), probabilities = b.make([Float](repeating: .nan, count: T * S))
        table.withUnsafeBufferPointer { table in
            let rows = KeyValueRows(keys: pooled.baseAddress!, values: pooled.baseAddress! + hd, ld: kvLd,
                                    table: table.baseAddress!, blockSize: blockSize, storage: .f32)
            attentionHeadForward(y: y.baseAddress!, ldy: hd, probabilities: probabilities.baseAddress!, q: queries.baseAddress!, ldq: hd,
                                 kv: rows, T: T, S: S, offset: offset, headSize: hd)
        }
        func pooledRow(_ position: Int) -> Int { (Int(table[position / blockSize]) * blockSize + position % blockSize) * kvLd }
        var worst = 0.0, worstProbability = 0.0
        for t in 0..<T {
            let limit = offset + t + 1
            var scores = (0..<limit).map { j in
                (0..<hd).reduce(0.0) { $0 + Double(q[t * hd + $1]) * Double(keys[pooledRow(j) + $1]) } / Double(hd).squareRoot()
            }
            let m = scores.max()!
            scores = scores.map { exp($0 - m) }
            let total = scores.reduce(0, +)
            for j in 0..<S {
                let expected = j < limit ? scores[j] / total : 0
                worstProbability = max(worstProbability, abs(Double(probabilities[t * S + j]) - expected))
            }
            for c in 0..<hd {
                let expected = (0..<limit).reduce(0.0) { $0 + scores[$1] / total * Double(keys[pooledRow($1) + hd + c]) }
                worst = max(worst, abs(Double(y[t * hd + c]) - expected))
            }
        }
        XCTAssertLessThan(worst, 1e-5, "outputs")
        XCTAssertLessThan(worstProbability, 1e-6, "probabilities")
    }

    func testEmbedding() {
        let V = 7, C = 5, maxT = 4, tokens: [Int32] = [3, 1, 3, 6], positions: [Int32] = [0, 1, 2, 3]
        checkGradients("embedding", inputs: [random(V * C), random(maxT * C)], forward: { x in
            let b = Buffers(), out = b.zeros(4 * C)
            tokens.withUnsafeBufferPointer { t in
                positions.withUnsafeBufferPointer { p in
                    embeddingForward(out: out, tokens: t, positions: p, token: Embedding(table: .dense(b.make(x[0]), rows: V, columns: C)),
                                     position: Embedding(table: .dense(b.make(x[1]), rows: maxT, columns: C)), rows: 4, pool: .shared)
                }
            }
            return Array(out)
        }, backward: { x, g in
            let b = Buffers(), dToken = b.zeros(V * C), dPosition = b.zeros(maxT * C)
            tokens.withUnsafeBufferPointer { t in
                positions.withUnsafeBufferPointer { p in
                    embeddingBackward(dout: UnsafeBufferPointer(b.make(g)), tokens: t, positions: p,
                                      token: Embedding(table: .dense(b.make(x[0]), rows: V, columns: C), gradient: dToken),
                                      position: Embedding(table: .dense(b.make(x[1]), rows: maxT, columns: C), gradient: dPosition),
                                      rows: 4, columns: C)
                }
            }
            return [Array(dToken), Array(dPosition)]
        })
    }
}
