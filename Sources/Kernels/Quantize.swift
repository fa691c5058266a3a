// Encoding fp32 values as GGML tensor data: the inverse of `dequantize`, bit for bit what ggml's
// reference quantizers (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`, `quantize_row_q4_1_ref`,
// `ggml_fp32_to_bf16`) and gguf-py's `gguf.quants.quantize` produce.
//
// Block layouts (32 values per block, fp16 scales, little-endian):
//
//     Q8_0  d | qs[32] (int8)             x ≈ d * q               d = max|x| / 127, q = round(x / d)
//     Q4_0  d | qs[16] (two nibbles each)  x ≈ d * (q - 8)         d = m / -8, m the value of largest |x|
//     Q4_1  d | m | qs[16]                 x ≈ d * q + m           d = (max - min) / 15, m = min
//
// Byte j of a Q4 block holds value j in its low nibble and value j + 16 in its high nibble.
// The scales are computed and applied in fp32 and only stored as fp16.

extension GGMLType {
    /// Whether values are stored in blocks with a shared scale (Q8_0, Q4_0, Q4_1) rather than
    /// one by one (F32, F16, BF16).
    public var isQuantized: Bool { blockSize > 1 }

    /// The bytes `count` values take in this type. `count` must be a whole number of blocks.
    ///
    ///     GGMLType.q4_0.byteCount(elementCount: 64)  ->  36   (2 blocks of 18 bytes)
    public func byteCount(elementCount count: Int) -> Int {
        precondition(count >= 0 && count % blockSize == 0, "\(self): \(count) values are not whole blocks of \(blockSize)")
        return count / blockSize * blockBytes
    }
}

/// Encodes `source` as `type` into `destination`, which must hold
/// `type.byteCount(elementCount: source.count)` bytes (no alignment needed).
///
/// For the block types `source.count` must be a multiple of 32 (callers check first; this is a
/// precondition). Blocks are independent, so the work is spread over `pool` in coarse ranges of
/// blocks; the bytes do not depend on the thread count.
public func quantize(_ type: GGMLType, _ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableRawPointer,
                     pool: ThreadPool = .shared) {
    precondition(source.count % type.blockSize == 0,
                 "quantize: \(source.count) values are not whole \(type) blocks of \(type.blockSize)")
    guard let base = source.baseAddress else { return }
    let blocks = source.count / type.blockSize
    // About 64 KB of input per thread at the least: below that, waking a thread costs more.
    pool.parallelRanges(blocks, minimumPerThread: max(1, 16_384 / type.blockSize)) { range in
        let input = base + range.lowerBound * type.blockSize
        let output = destination + range.lowerBound * type.blockBytes
        switch type {
        case .f32:
            output.copyMemory(from: input, byteCount: 4 * range.count)
        case .f16:
            for i in 0..<range.count { output.storeBytes(of: Float16(input[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16:
            for i in 0..<range.count { output.storeBytes(of: bfloat16Bits(input[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .q8_0:
            for b in 0..<range.count { quantizeBlockQ8_0(input + 32 * b, output + 34 * b) }
        case .q4_0:
            for b in 0..<range.count { quantizeBlockQ4_0(input + 32 * b, output + 18 * b) }
        case .q4_1:
            for b in 0..<range.count { quantizeBlockQ4_1(input + 32 * b, output + 20 * b) }
        }
    }
}

/// `quantize` into a new byte array.
public func quantize(_ type: GGMLType, _ source: UnsafeBufferPointer<Float>, pool: ThreadPool = .shared) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: type.byteCount(elementCount: source.count)) { bytes, initialized in
        if let destination = bytes.baseAddress { quantize(type, source, into: destination, pool: pool) }
        initialized = bytes.count
    }
}

/// ggml's fp32 -> bf16: round to nearest even; a NaN stays a NaN (made quiet) instead of
/// rounding into infinity.
@inline(__always)
func bfloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if bits & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: bits >> 16) | 64 }
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
}

@inline(__always)
private func storeHalf(_ value: Float, _ destination: UnsafeMutableRawPointer, at offset: Int) {
    destination.storeBytes(of: Float16(value).bitPattern.littleEndian, toByteOffset: offset, as: UInt16.self)
}

/// `value` truncated toward zero and clamped to 0...15, as ggml's `MIN(15, (int8_t)(v))` for the
/// values a Q4 block produces (0.5...16.5). NaN (from an infinite input) gives 0 instead of
/// trapping.
@inline(__always)
private func nibble(_ value: Float) -> UInt8 {
    let t = value.rounded(.towardZero)
    return t >= 15 ? 15 : (t > 0 ? UInt8(t) : 0)
}

/// One Q8_0 block: d = max|x| / 127, q = roundf(x / d) (half away from zero).
@inline(__always)
private func quantizeBlockQ8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    let d = amax / 127
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, at: 0)
    for j in 0..<32 {
        let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
        // |q| <= 127 for finite input; the clamp only keeps NaN and infinities from trapping.
        let clamped: Int8 = q >= 127 ? 127 : (q <= -128 ? -128 : (q.isNaN ? 0 : Int8(q)))
        y.storeBytes(of: UInt8(bitPattern: clamped), toByteOffset: 2 + j, as: UInt8.self)
    }
}

/// One Q4_0 block: m = the value of largest magnitude (the first such, sign kept), d = m / -8,
/// q = min(15, trunc(x / d + 8.5)). The largest value maps to q = 0 exactly; its opposite to 15
/// (= +7 steps, one step short).
@inline(__always)
private func quantizeBlockQ4_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
    var amax: Float = 0, m: Float = 0
    for j in 0..<32 where amax < abs(x[j]) {
        amax = abs(x[j])
        m = x[j]
    }
    let d = m / -8
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, at: 0)
    for j in 0..<16 {
        let low = nibble(x[j] * id + 8.5), high = nibble(x[j + 16] * id + 8.5)
        y.storeBytes(of: low | high << 4, toByteOffset: 2 + j, as: UInt8.self)
    }
}

/// One Q4_1 block: m = min, d = (max - min) / 15, q = min(15, trunc((x - m) / d + 0.5)).
@inline(__always)
private func quantizeBlockQ4_1(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
    var low = Float.greatestFiniteMagnitude, high = -Float.greatestFiniteMagnitude
    for j in 0..<32 {
        if x[j] < low { low = x[j] }
        if x[j] > high { high = x[j] }
    }
    let d = (high - low) / 15
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y, at: 0)
    storeHalf(low, y, at: 2)
    for j in 0..<16 {
        let q0 = nibble((x[j] - low) * id + 0.5), q1 = nibble((x[j + 16] - low) * id + 0.5)
        y.storeBytes(of: q0 | q1 << 4, toByteOffset: 4 + j, as: UInt8.self)
    }
}
