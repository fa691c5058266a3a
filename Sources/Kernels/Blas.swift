#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Logging
import Synchronization

/// A system CBLAS found at run time: OpenBLAS through `dlopen` on Linux (no build-time
/// dependency), Accelerate on macOS. `SWIFTGPT_BLAS=off` hides it so the Swift kernel runs.
struct SystemBlas: @unchecked Sendable {
    typealias Sgemm = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
        UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    typealias SetThreads = @convention(c) (Int32) -> Void

    let name: String
    let sgemm: Sgemm
    let setThreads: SetThreads?

    /// `SWIFTGPT_BLAS`, lower-cased ("off" hides the system BLAS, "on" prefers it).
    private static let setting = ProcessInfo.processInfo.environment["SWIFTGPT_BLAS"]?.lowercased()

    /// True when `SWIFTGPT_BLAS=on` asks `.automatic` gemm to prefer the system BLAS.
    static let forced = ["on", "1", "yes", "true"].contains(setting ?? "")

    /// The library this process can use, or nil; looked up once and logged at debug level.
    static let shared: SystemBlas? = {
        let logger = Logger(label: "swiftgpt.kernels")
        if let setting, ["off", "0", "no", "false", "none"].contains(setting) {
            logger.debug("gemm: SWIFTGPT_BLAS=\(setting), using the Swift kernel")
            return nil
        }
        guard let blas = load() else {
            logger.debug("gemm: no system BLAS found, using the Swift kernel")
            return nil
        }
        logger.debug("gemm: using \(blas.name)")
        return blas
    }()

    private static func load() -> SystemBlas? {
        matchSystemBlas(to: InstructionSet.best)
        #if os(macOS)
        let candidates = ["/System/Library/Frameworks/Accelerate.framework/Accelerate"]
        #else
        let candidates = ["libopenblas.so.0", "libopenblas.so"]
        #endif
        for path in candidates {
            guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL),
                  let gemm = dlsym(handle, "cblas_sgemm") else { continue }
            let threads = dlsym(handle, "openblas_set_num_threads")
            return SystemBlas(
                name: path,
                sgemm: unsafeBitCast(gemm, to: Sgemm.self),
                setThreads: threads.map { unsafeBitCast($0, to: SetThreads.self) })
        }
        return nil
    }

    private static let rowMajor: Int32 = 101
    private static let noTrans: Int32 = 111
    private static let trans: Int32 = 112
    private static let threadSetting = Mutex<Int>(0)

    /// Row-major sgemm with the given thread count (set only when it changes).
    func gemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int, alpha: Float,
              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
              c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
        if let setThreads {
            Self.threadSetting.withLock { current in
                if current != threads {
                    setThreads(Int32(threads))
                    current = threads
                }
            }
        }
        sgemm(Self.rowMajor, transA == .none ? Self.noTrans : Self.trans,
              transB == .none ? Self.noTrans : Self.trans, Int32(m), Int32(n), Int32(k), alpha,
              a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

/// OpenBLAS picks its kernels for the CPU when it is loaded. With a slower instruction set
/// forced (`SWIFTGPT_ISA`, `gpt-bench gemm --isa`) it is asked for that set's kernels too
/// (`OPENBLAS_CORETYPE`, unless the environment already sets it), so that a forced AVX2 run
/// measures what an AVX2 machine runs. Has an effect only before the first gemm.
public func matchSystemBlas(to isa: InstructionSet) {
    #if os(Linux) && arch(x86_64)
    guard isa.rawValue < InstructionSet.hardware.rawValue, getenv("OPENBLAS_CORETYPE") == nil else { return }
    setenv("OPENBLAS_CORETYPE", isa == .avx2FMA ? "Haswell" : "Prescott", 0)
    #endif
}
