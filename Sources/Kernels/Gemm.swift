import CKernels
import Foundation
import Synchronization

/// Whether a gemm operand is used as stored or transposed.
public enum Transpose: Sendable {
    case none
    case transposed
}

/// Which implementation runs a gemm.
public enum GemmBackend: Sendable, Equatable {
    /// The faster of the two on this CPU: `.native` where the CPU has AVX-512 (measured 1.7-1.9x
    /// OpenBLAS), else the system BLAS when one is present, else `.native`. `SWIFTGPT_BLAS=off`
    /// forces `.native`, `SWIFTGPT_BLAS=on` the system BLAS.
    case automatic
    /// The system BLAS; falls back to `.native` when none is present.
    case blas
    /// The Swift blocked gemm with the fastest microkernel this CPU runs.
    case native
    /// The Swift blocked gemm with the microkernel of one instruction set (for tests and
    /// benchmarks; it must be one this CPU supports).
    case isa(InstructionSet)
}

/// The instruction set the kernels use on this CPU.
public enum InstructionSet: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case portable = 0
    case avx2FMA = 1
    case avx512 = 2

    /// The fastest one this CPU has.
    public static let hardware = InstructionSet(rawValue: sg_best_isa()) ?? .portable

    /// The one every kernel uses: the fastest this CPU has, or a slower one named by
    /// `SWIFTGPT_ISA=portable|avx2|avx512`, so the AVX2 and portable paths can be tested and
    /// measured on a machine with AVX-512. A set the CPU lacks is refused with a warning.
    public static let best: InstructionSet = {
        guard let name = ProcessInfo.processInfo.environment["SWIFTGPT_ISA"]?.lowercased(), !name.isEmpty else { return hardware }
        guard let requested = InstructionSet(name: name) else {
            FileHandle.standardError.write(Data("warning: SWIFTGPT_ISA=\(name) is not portable, avx2 or avx512; using \(hardware)\n".utf8))
            return hardware
        }
        guard requested.rawValue <= hardware.rawValue else {
            FileHandle.standardError.write(Data("warning: SWIFTGPT_ISA=\(name): this CPU lacks \(requested); using \(hardware)\n".utf8))
            return hardware
        }
        return requested
    }()

    /// Those in use up to `best`, slowest first (what tests hold to their references).
    public static var supported: [InstructionSet] { allCases.filter { $0.rawValue <= best.rawValue } }

    /// The set a `SWIFTGPT_ISA` or `--isa` value names: portable, avx2, avx512.
    public init?(name: String) {
        switch name.lowercased() {
        case "portable": self = .portable
        case "avx2", "avx2+fma", "avx2fma": self = .avx2FMA
        case "avx512", "avx-512": self = .avx512
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .portable: "portable"
        case .avx2FMA: "AVX2+FMA"
        case .avx512: "AVX-512"
        }
    }

    /// The gemm microkernel's register tile (rows, columns).
    public var gemmTile: (rows: Int, columns: Int) {
        var mr: Int32 = 0, nr: Int32 = 0
        sg_gemm_tile(rawValue, &mr, &nr)
        return (Int(mr), Int(nr))
    }

    /// GFLOP/s of an FMA loop on one core with these vectors: the fp32 peak gemm aims at.
    /// `iterations` × 24 vector FMAs; the default runs about 0.1 s.
    public func measuredPeakGFLOPS(iterations: Int = 20_000_000) -> Double {
        sg_fma_peak_gflops(rawValue, iterations)
    }
}

/// The name of what `.automatic` gemm runs: "system BLAS (libopenblas.so.0)" or
/// "Swift (AVX-512)".
public var gemmBackendDescription: String {
    if let blas = automaticBlas { return "system BLAS (\(blas.name))" }
    return "Swift (\(InstructionSet.best))"
}

/// The system BLAS `.automatic` uses, or nil for the Swift kernel.
let automaticBlas: SystemBlas? = {
    guard let blas = SystemBlas.shared else { return nil }
    if SystemBlas.forced || InstructionSet.best.rawValue < InstructionSet.avx512.rawValue { return blas }
    return nil
}()

/// True when a system BLAS was found (and not switched off).
public var systemBlasAvailable: Bool { SystemBlas.shared != nil }

/// C = alpha · op(A) · op(B) + beta · C, all row-major, as CBLAS's `cblas_sgemm` with
/// `CblasRowMajor`.
///
/// op(A) is m × k: A itself (`a[i*lda + p]`) or, transposed, a k × m matrix (`a[p*lda + i]`).
/// op(B) is k × n: B itself (`b[p*ldb + j]`) or, transposed, an n × k matrix (`b[j*ldb + p]`).
/// C is m × n (`c[i*ldc + j]`); with beta == 0 it is not read, so it may hold garbage.
/// Leading dimensions let attention run on one head's strided view of a (T, 3C) buffer.
///
///     // Linear layer forward, out (B*T, OC) = inp (B*T, C) · weightᵀ with weight (OC, C):
///     gemm(.none, .transposed, m: BT, n: OC, k: C, a: inp, lda: C, b: weight, ldb: C,
///          c: out, ldc: OC)
public func gemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafeBufferPointer<Float>, lda: Int,
                 b: UnsafeBufferPointer<Float>, ldb: Int, beta: Float = 0,
                 c: UnsafeMutableBufferPointer<Float>, ldc: Int,
                 pool: ThreadPool = .shared, backend: GemmBackend = .automatic) {
    precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative size")
    if m == 0 || n == 0 { return }
    let (aRows, aCols) = transA == .none ? (m, k) : (k, m)
    let (bRows, bCols) = transB == .none ? (k, n) : (n, k)
    precondition(lda >= max(1, aCols) && ldb >= max(1, bCols) && ldc >= n, "gemm: leading dimension too small")
    precondition(aRows == 0 || a.count >= (aRows - 1) * lda + aCols, "gemm: A buffer too small")
    precondition(bRows == 0 || b.count >= (bRows - 1) * ldb + bCols, "gemm: B buffer too small")
    precondition(c.count >= (m - 1) * ldc + n, "gemm: C buffer too small")
    let cBase = c.baseAddress!
    if k == 0 {
        scaleMatrix(cBase, rows: m, cols: n, ld: ldc, by: beta)
        return
    }
    let aBase = a.baseAddress!, bBase = b.baseAddress!

    switch backend {
    case .automatic, .blas:
        if let blas = backend == .blas ? SystemBlas.shared : automaticBlas {
            blas.gemm(transA, transB, m: m, n: n, k: k, alpha: alpha, a: aBase, lda: lda,
                      b: bBase, ldb: ldb, beta: beta, c: cBase, ldc: ldc, threads: pool.threadCount)
            return
        }
        fallthrough
    case .native:
        BlockedGemm(isa: .best, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                    a: aBase, lda: lda, b: bBase, ldb: ldb, beta: beta, c: cBase, ldc: ldc)
            .run(pool: pool)
    case .isa(let isa):
        precondition(isa.rawValue <= InstructionSet.best.rawValue, "gemm: this CPU lacks \(isa)")
        BlockedGemm(isa: isa, transA: transA, transB: transB, m: m, n: n, k: k,
                    alpha: alpha, a: aBase, lda: lda, b: bBase, ldb: ldb, beta: beta, c: cBase,
                    ldc: ldc)
            .run(pool: pool)
    }
}

/// C (m × n) = A (m × k, leading dimension lda) · Wᵀ for a GGML tensor W of n rows of k
/// elements (k a multiple of 32), dequantised panel by panel while the gemm packs it: W is read
/// once per call whatever m is, and never expanded to fp32 whole.
///
///     // The q|k|v projection of 16 decoding sequences: out (16, 576) = x (16, 576) · Wqᵀ
///     quantizedGemm(.q4_1, m: 16, n: 576, k: 576, a: x, lda: 576, weights: wq, c: out, ldc: 1152)
public func quantizedGemm(_ type: GGMLType, m: Int, n: Int, k: Int, a: UnsafeBufferPointer<Float>, lda: Int,
                          weights: UnsafeRawPointer, c: UnsafeMutableBufferPointer<Float>, ldc: Int,
                          pool: ThreadPool = .shared, isa: InstructionSet = .best) {
    precondition(k % type.blockSize == 0 && lda >= k && ldc >= n, "quantizedGemm: bad sizes")
    precondition(m == 0 || (a.count >= (m - 1) * lda + k && c.count >= (m - 1) * ldc + n), "quantizedGemm: buffer too small")
    if m == 0 || n == 0 { return }
    var gemm = BlockedGemm(isa: isa, transA: .none, transB: .transposed, m: m, n: n, k: k, alpha: 1, a: a.baseAddress!,
                           lda: lda, b: UnsafePointer(bitPattern: 1)!, ldb: k, beta: 0, c: c.baseAddress!, ldc: ldc)
    gemm.quantizedB = (type, weights)
    gemm.run(pool: pool)
}

private func scaleMatrix(_ c: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int,
                         by beta: Float) {
    for i in 0..<rows {
        let row = c + i * ld
        for j in 0..<cols { row[j] = beta == 0 ? 0 : beta * row[j] }
    }
}

/// The Goto/BLIS loop nest around the C microkernel.
///
/// For each block of KC rows and NC columns of op(B): pack it into NR-wide panels (in parallel),
/// then split the MR-row tiles of op(A) (or, for short A, the NR-column panels) over the threads;
/// each thread packs MC × KC blocks of op(A) into its own buffer (or, with several blocks of
/// columns, all of op(A) is packed once per KC block and shared) and runs the microkernel over
/// its tiles. Every element of C is summed by one thread in a fixed order, so results do not
/// depend on the thread count.
///
/// Performance notes (gpt-bench gemm, M=1024 GPT-2 shapes):
/// - On an AMD EPYC whose FMA loop measured 134 GFLOP/s per core with AVX2 and 267 with AVX-512,
///   the AVX-512 microkernel (12 × 32 tile, 24 zmm accumulators) reached 220-245 GFLOP/s on one
///   core, 1.7-1.9x Debian's OpenBLAS 0.3.21 (AVX2 kernels there).
/// - On a Zen4 (115-117 GFLOP/s per core with either width: it splits 512-bit FMAs), AVX-512
///   runs at ~90% of peak, 0.98-1.09x OpenBLAS's own AVX-512 kernels; the AVX2 microkernel
///   (4 × 24: 3 loads and 4 broadcasts per 12 FMAs, its loop in assembly; 6 × 16 needed 2 + 6)
///   runs at 95-98% of peak alone and 84-92% in the gemm, 0.93-1.04x OpenBLAS's AVX2 kernels.
/// - KC = 768 (all of K for 768-wide layers) and MC = 144 measured best among KC 256-768 and MC
///   96-384 (differences of 5-10%, near the noise); NC = 768 (a 2.4 MB packed B block) measured
///   1-4% faster than 3072 with the AVX2 tile and the same with the AVX-512 one.
/// - Packing costs a few % at these shapes; small gemms (attention heads) pay the packing of B
///   on every call, which an unpacked path could avoid (not done yet). B (not transposed) is
///   packed eight rows at a time across all of a thread's panels: panel by panel it read a few
///   floats of every row and came back to the same lines for the next panel (1.6% of a
///   one-thread AVX2 run against OpenBLAS's 0.7%); Swift/OpenBLAS at one thread went 0.97-0.99x
///   -> 0.99-1.00x (runs alternating one by one, two runs over the four shapes).
private struct BlockedGemm {
    static let kc = 768
    static let mc = 144
    static let nc = 768
    /// For a few rows (decoding a batch), blocks of B small enough that a packed block stays in
    /// L2 while the rows run over it: B is then read from memory once, as the rows need.
    static let ncFewRows = 512
    /// Floats of op(A) packed whole and shared by the blocks of columns (16 MB).
    static let sharedAMaximum = 4 << 20

    let isa: InstructionSet
    let transA: Transpose, transB: Transpose
    let m: Int, n: Int, k: Int
    let alpha: Float
    let a: UnsafePointer<Float>, lda: Int
    let b: UnsafePointer<Float>, ldb: Int
    /// When set, op(B) is Wᵀ for this GGML tensor W (n rows of k), dequantised while packing.
    var quantizedB: (type: GGMLType, bytes: UnsafeRawPointer)? = nil
    let beta: Float
    let c: UnsafeMutablePointer<Float>, ldc: Int

    var mr: Int { isa.gemmTile.rows }
    var nr: Int { isa.gemmTile.columns }

    func run(pool: ThreadPool) {
        let (mr, nr) = isa.gemmTile
        let blockColumns = m <= 64 ? Self.ncFewRows : Self.nc
        let kcMax = min(Self.kc, k)
        let ncMax = min(blockColumns, n)
        let rowTiles = (m + mr - 1) / mr
        let bPack = PackBuffers.shared.take(count: kcMax * roundUp(ncMax, nr))
        defer { PackBuffers.shared.give(bPack) }
        let threads = pool.threadCount
        // With several blocks of columns, all of op(A) is packed once per block of K and shared
        // by them (packed again for each, it cost a few % at N = 2304-50257), when it fits.
        let shareA = n > blockColumns && rowTiles * mr * kcMax <= Self.sharedAMaximum
        let aPacks = (0..<(shareA ? 1 : threads)).map {
            _ in PackBuffers.shared.take(count: kcMax * (shareA ? rowTiles * mr : roundUp(min(Self.mc, m), mr)))
        }
        defer { aPacks.forEach { PackBuffers.shared.give($0) } }

        for pc in stride(from: 0, to: k, by: Self.kc) {
            let kc = min(Self.kc, k - pc)
            let betaHere: Float = pc == 0 ? beta : 1
            if shareA {
                pool.parallelRanges(rowTiles, minimumPerThread: 4) { range in
                    for tile in range {
                        packA(into: aPacks[0].pointer + tile * kc * mr, row: tile * mr, rows: min(mr, m - tile * mr), column: pc, columns: kc)
                    }
                }
            }
            for jc in stride(from: 0, to: n, by: blockColumns) {
                let nc = min(blockColumns, n - jc)
                let panels = (nc + nr - 1) / nr
                pool.parallelRanges(panels, minimumPerThread: 8) { range in
                    let column = jc + range.lowerBound * nr, columns = min(range.count * nr, jc + nc - column)
                    if quantizedB == nil && transB == .none {
                        sg_pack_b_panels(isa.rawValue, kc, columns, b + pc * ldb + column, ldb, nr, bPack.pointer + range.lowerBound * kc * nr)
                        return
                    }
                    for panel in range {
                        packB(into: bPack.pointer + panel * kc * nr, row: pc, rows: kc,
                              column: jc + panel * nr, columns: min(nr, nc - panel * nr))
                    }
                }
                // Split rows when there are enough of them, else split column panels.
                let splitRows = rowTiles >= 2 * threads || panels < 2 * threads
                let pieces = min(threads, splitRows ? rowTiles : panels)
                pool.parallelFor(pieces) { piece in
                    let count = splitRows ? rowTiles : panels
                    let range = (count * piece / pieces)..<(count * (piece + 1) / pieces)
                    let tiles = splitRows ? range : 0..<rowTiles
                    let panelRange = splitRows ? 0..<panels : range
                    computeBlock(tiles: tiles, panels: panelRange, aPack: aPacks[shareA ? 0 : piece].pointer, aPacked: shareA,
                                 bPack: bPack.pointer, pc: pc, kc: kc, jc: jc, nc: nc, beta: betaHere)
                }
            }
        }
    }

    /// Runs the microkernel over row tiles `tiles` × column panels `panels` of one (jc, pc)
    /// block: op(A)'s tiles packed already at `aPack` + tile · kc · MR (`aPacked`), or packed
    /// there MC rows at a time.
    private func computeBlock(tiles: Range<Int>, panels: Range<Int>, aPack: UnsafeMutablePointer<Float>, aPacked: Bool,
                              bPack: UnsafePointer<Float>, pc: Int, kc: Int, jc: Int, nc: Int, beta: Float) {
        let (mr, nr) = isa.gemmTile
        let tilesPerBlock = max(1, Self.mc / mr)
        for blockStart in stride(from: tiles.lowerBound, to: tiles.upperBound, by: tilesPerBlock) {
            let blockTiles = blockStart..<min(blockStart + tilesPerBlock, tiles.upperBound)
            let first = aPacked ? 0 : blockStart  // the tile at aPack
            if !aPacked {
                for tile in blockTiles {
                    let row = tile * mr
                    packA(into: aPack + (tile - blockStart) * kc * mr, row: row, rows: min(mr, m - row), column: pc, columns: kc)
                }
            }
            if panels.isEmpty { continue }
            let row = blockStart * mr, column = jc + panels.lowerBound * nr
            sg_gemm_block(isa.rawValue, kc, blockTiles.count, panels.count, aPack + (blockStart - first) * kc * mr,
                          bPack + panels.lowerBound * kc * nr, c + row * ldc + column, ldc, min(blockTiles.count * mr, m - row),
                          min(panels.count * nr, nc - panels.lowerBound * nr), alpha, beta)
        }
    }

    /// Packs op(A)[row..<row+rows, column..<column+columns] as an MR × columns panel stored
    /// column by column (`dst[p*MR + i]`), zero rows past `rows`.
    private func packA(into dst: UnsafeMutablePointer<Float>, row: Int, rows: Int,
                       column: Int, columns: Int) {
        let mr = self.mr
        if transA == .none { return sg_pack_a(isa.rawValue, rows, columns, a + row * lda + column, lda, mr, dst) }
        if rows < mr { dst.update(repeating: 0, count: columns * mr) }
        for p in 0..<columns {
            let src = a + (column + p) * lda + row
            for i in 0..<rows { dst[p * mr + i] = src[i] }
        }
    }

    /// Packs op(B)[row..<row+rows, column..<column+columns] as a rows × NR panel stored row by
    /// row (`dst[p*NR + j]`), zero columns past `columns`.
    private func packB(into dst: UnsafeMutablePointer<Float>, row: Int, rows: Int,
                       column: Int, columns: Int) {
        let nr = self.nr
        if let (type, bytes) = quantizedB {
            if columns < nr { dst.update(repeating: 0, count: rows * nr) }
            // Row `column + j` of W, elements row..<row+rows (whole blocks: KC and K are
            // multiples of 32), dequantised and laid across the panel.
            let rowBytes = k / type.blockSize * type.blockBytes
            if type.blockSize == 32 {
                sg_pack_quantized(isa.rawValue, Int32(type.rawValue), bytes + column * rowBytes, rowBytes, row / 32, rows, columns, nr, dst)
                return
            }
            let offset = row / type.blockSize * type.blockBytes
            withUnsafeTemporaryAllocation(of: Float.self, capacity: rows) { segment in
                for j in 0..<columns {
                    dequantize(type, bytes + (column + j) * rowBytes + offset, count: rows, into: segment.baseAddress!, isa: isa)
                    for p in 0..<rows { dst[p * nr + j] = segment[p] }
                }
            }
            return
        }
        let transposed: Int32 = transB == .none ? 0 : 1
        let origin = transB == .none ? b + row * ldb + column : b + column * ldb + row
        sg_pack_b(isa.rawValue, transposed, rows, columns, origin, ldb, nr, dst)
    }
}

@inline(__always) private func roundUp(_ x: Int, _ multiple: Int) -> Int {
    (x + multiple - 1) / multiple * multiple
}

/// A 64-byte aligned Float buffer (the microkernel loads packed B with aligned loads).
struct AlignedBuffer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(count: Int) {
        self.count = max(1, count)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: self.count * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: self.count)
    }

    func free() { pointer.deallocate() }
}

/// The gemm's packing buffers, kept between calls: allocating megabytes per call and touching
/// them fresh cost ~2% of a gemm's time in page faults. Buffers go to one caller at a time;
/// at most `limit` floats stay cached (the largest are freed first).
final class PackBuffers: Sendable {
    static let shared = PackBuffers()
    static let limit = 16 << 20  // floats: 64 MB
    private let free = Mutex<[AlignedBuffer]>([])

    /// The smallest cached buffer of at least `count` floats, or a new one.
    func take(count: Int) -> AlignedBuffer {
        let cached = free.withLock { buffers -> AlignedBuffer? in
            guard let index = buffers.indices.filter({ buffers[$0].count >= count }).min(by: { buffers[$0].count < buffers[$1].count })
            else { return nil }
            return buffers.remove(at: index)
        }
        return cached ?? AlignedBuffer(count: count)
    }

    func give(_ buffer: AlignedBuffer) {
        let dropped = free.withLock { buffers -> [AlignedBuffer] in
            buffers.append(buffer)
            buffers.sort { $0.count < $1.count }
            var dropped: [AlignedBuffer] = []
            while buffers.reduce(0, { $0 + $1.count }) > Self.limit, let largest = buffers.popLast() { dropped.append(largest) }
            return dropped
        }
        dropped.forEach { $0.free() }
    }
}

/// y = alpha · A · x + beta · y for a row-major rows × k matrix A with leading dimension lda,
/// parallel over blocks of rows. With beta == 0, y is not read.
///
///     // Decode: logits (V) = wte (V, C) · x (C)
///     matvec(rows: V, k: C, a: wte, lda: C, x: x, y: logits)
public func matvec(rows: Int, k: Int, alpha: Float = 1, a: UnsafeBufferPointer<Float>, lda: Int,
                   x: UnsafeBufferPointer<Float>, beta: Float = 0,
                   y: UnsafeMutableBufferPointer<Float>, pool: ThreadPool = .shared,
                   isa: InstructionSet = .best) {
    precondition(rows >= 0 && k >= 0 && lda >= k, "matvec: bad sizes")
    precondition(rows == 0 || a.count >= (rows - 1) * lda + k, "matvec: A buffer too small")
    precondition(x.count >= k && y.count >= rows, "matvec: vector too small")
    if rows == 0 { return }
    let aBase = a.baseAddress!, xBase = x.baseAddress!, yBase = y.baseAddress!
    // About 64K multiply-adds per piece keeps the pool's overhead under 1%.
    pool.parallelRanges(rows, minimumPerThread: max(4, 65_536 / max(1, k))) { range in
        sg_matvec(isa.rawValue, range.count, k, aBase + range.lowerBound * lda, lda, xBase,
                  yBase + range.lowerBound, alpha, beta)
    }
}
