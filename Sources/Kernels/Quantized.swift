import CKernels
#if os(Linux)
import Glibc
#endif

/// Tensor types of GGML (the subset SwiftGPT reads).
public enum GGMLType: UInt32, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, bf16 = 30

    /// Elements per block.
    public var blockSize: Int { switch self { case .f32, .f16, .bf16: 1; default: 32 } }
    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q4_0: 18
        case .q4_1: 20
        case .q8_0: 34
        }
    }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q8_0: "Q8_0"
        }
    }

    public static func name(of code: UInt32) -> String {
        let names: [UInt32: String] = [6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K",
                                       14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64"]
        return names[code] ?? "\(code)"
    }
}

/// Expands `count` elements of a GGML tensor at `source` to floats.
public func dequantize(_ type: GGMLType, _ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>,
                       isa: InstructionSet = .best) {
    sg_dequantize(isa.rawValue, Int32(type.rawValue), source, count, destination)
}

/// y (rows) = W · x for a GGML tensor W of `rows` rows of `k` elements, dequantised block by
/// block inside the kernel (x stays fp32), parallel over pieces of rows handed out as threads
/// become free.
public func quantizedMatvec(_ type: GGMLType, rows: Int, k: Int, weights: UnsafeRawPointer,
                            x: UnsafeBufferPointer<Float>, y: UnsafeMutableBufferPointer<Float>,
                            pool: ThreadPool = .shared, isa: InstructionSet = .best) {
    precondition(k % type.blockSize == 0 && x.count >= k && y.count >= rows, "quantizedMatvec: bad sizes")
    let rowBytes = k / type.blockSize * type.blockBytes
    pool.parallelPieces(rows, minimumPerPiece: max(4, 32_768 / max(1, k)), alignment: 4) { range in
        sg_quantized_matvec(isa.rawValue, Int32(type.rawValue), range.count, k, weights + range.lowerBound * rowBytes,
                            rowBytes, x.baseAddress!, y.baseAddress! + range.lowerBound)
    }
}

/// Y (n, rows; leading dimension ldy) = X (n, k; leading dimension ldx) · Wᵀ for a GGML tensor W
/// of `rows` rows of k: a few rows of activations (a batch of decoding sequences), each weight
/// block dequantised once for all of them, parallel over pieces of rows handed out as threads
/// become free. W is read from memory once per call.
public func quantizedMatmul(_ type: GGMLType, rows: Int, k: Int, weights: UnsafeRawPointer, n: Int,
                            x: UnsafeBufferPointer<Float>, ldx: Int, y: UnsafeMutableBufferPointer<Float>, ldy: Int,
                            pool: ThreadPool = .shared, isa: InstructionSet = .best) {
    quantizedMatmul([QuantizedRows(type: type, weights: weights, rows: rows)], k: k, n: n, x: x, ldx: ldx, y: y, ldy: ldy,
                    pool: pool, isa: isa)
}

/// Rows of a GGML tensor: one of the matrices a stacked product multiplies.
public struct QuantizedRows {
    public let type: GGMLType
    public let weights: UnsafeRawPointer
    public let rows: Int

    public init(type: GGMLType, weights: UnsafeRawPointer, rows: Int) {
        self.type = type
        self.weights = weights
        self.rows = rows
    }
}

/// Y (n, Σ rows) = X (n, k) · [W₀; W₁; …]ᵀ for GGML tensors stacked by rows (a fused q|k|v or
/// gate|up projection), their outputs side by side in Y's rows: one parallel section for all of
/// them (a section per matrix cost a join each and its tail), in pieces of each matrix's rows
/// (multiples of 12, about three per thread in all: 1-1.5% faster decoding steps than four, eight
/// 1-4% slower, two the same as three) handed out as threads become free.
public func quantizedMatmul(_ parts: [QuantizedRows], k: Int, n: Int, x: UnsafeBufferPointer<Float>, ldx: Int,
                            y: UnsafeMutableBufferPointer<Float>, ldy: Int, pool: ThreadPool = .shared, isa: InstructionSet = .best,
                            vectorGroupBytes: Int = halfL2Bytes) {
    let total = parts.reduce(0) { $0 + $1.rows }
    precondition(parts.allSatisfy { k % $0.type.blockSize == 0 } && ldx >= k && ldy >= total, "quantizedMatmul: bad sizes")
    precondition(n == 0 || (x.count >= (n - 1) * ldx + k && y.count >= (n - 1) * ldy + total), "quantizedMatmul: buffer too small")
    if n == 0 || total == 0 { return }
    let alignment = 12, minimumRows = max(alignment, 32_768 / max(1, k * n))
    let wanted = min(3 * pool.threadCount, max(1, total / minimumRows))
    // (part, first row, rows, first output column) per piece.
    var pieces: [(part: Int, first: Int, rows: Int, column: Int)] = []
    var column = 0
    for (index, part) in parts.enumerated() {
        let units = (part.rows + alignment - 1) / alignment
        let count = max(1, min(units, (wanted * part.rows + total - 1) / total))
        for piece in 0..<count {
            let first = min(part.rows, units * piece / count * alignment), last = min(part.rows, units * (piece + 1) / count * alignment)
            if last > first { pieces.append((index, first, last - first, column + first)) }
        }
        column += part.rows
    }
    // The kernel reads all of its vectors for every panel of rows: many vectors (a step's prompt
    // chunks) go in groups whose X fits in half of L2, each group over the same rows. SmolLM2's
    // down projection (K = 1536) with 256 vectors: 10-14% faster in groups of 88 than whole (AVX2
    // and AVX-512); K = 576 the same in groups of 128 as whole.
    let groupBytes = max(1, vectorGroupBytes), groups = (n * k * 4 + groupBytes - 1) / groupBytes
    let groupSize = ((n + groups - 1) / groups + 3) / 4 * 4
    pool.parallelFor(pieces.count) { index in
        let piece = pieces[index], part = parts[piece.part]
        let rowBytes = k / part.type.blockSize * part.type.blockBytes
        for first in stride(from: 0, to: n, by: groupSize) {
            sg_quantized_matmul(isa.rawValue, Int32(part.type.rawValue), piece.rows, k, part.weights + piece.first * rowBytes, rowBytes,
                                min(groupSize, n - first), x.baseAddress! + first * ldx, ldx, y.baseAddress! + first * ldy + piece.column, ldy)
        }
    }
}

/// Half of a core's L2 cache (256 KB where the system does not say).
public let halfL2Bytes: Int = {
    #if os(Linux)
    let size = sysconf(Int32(_SC_LEVEL2_CACHE_SIZE))
    return size > 0 ? size / 2 : 256 << 10
    #else
    return 256 << 10
    #endif
}()
