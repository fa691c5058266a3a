import Foundation
import Synchronization

/// A persistent pool of worker threads for the parallel loops of the kernels.
///
/// `DispatchQueue.concurrentPerform` costs about 25 µs of wall time per call on this machine once
/// both threads really run; decode issues hundreds of small products per token, so the kernels
/// use this pool instead. Workers spin briefly on an atomic generation counter after each job
/// (so back-to-back jobs start in well under a microsecond) and then sleep on a condition.
/// `gpt-bench pool` measures the cost per call against `concurrentPerform`.
///
/// The calling thread takes part in every job. A job started while another one runs (from a
/// second thread, or from inside a job body) runs on the calling thread alone, so the pool never
/// deadlocks and never blocks one caller on another.
///
///     let pool = ThreadPool(threadCount: 2)
///     pool.parallelFor(100) { i in work(i) }   // runs work(0) ... work(99) across 2 threads
public final class ThreadPool: @unchecked Sendable {
    /// The number of threads that run a job, the caller included.
    public let threadCount: Int

    /// The pool the kernels use when none is passed: all cores, or `SWIFTGPT_THREADS` when set.
    public static let shared = ThreadPool(threadCount: defaultThreadCount)

    /// `SWIFTGPT_THREADS` when it holds a positive integer, else the number of active cores.
    public static var defaultThreadCount: Int {
        if let text = ProcessInfo.processInfo.environment["SWIFTGPT_THREADS"],
           let n = Int(text), n > 0 {
            return n
        }
        return ProcessInfo.processInfo.activeProcessorCount
    }

    private let state: PoolState

    /// Creates a pool that runs jobs on `threadCount` threads (at least 1), the caller included.
    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
        state = PoolState(workerCount: self.threadCount - 1)
        for _ in 1..<self.threadCount {
            // Workers hold the state, never the pool, so the pool's deinit can stop them.
            let thread = Thread { [state] in state.workerLoop() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit { state.shutDown() }

    /// Runs `body(i)` for every i in 0..<count, spread over the pool's threads, and returns when
    /// all have finished. Indices are handed out one at a time, so give each a coarse piece of
    /// work (a block of rows, a head), not a single element.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threadCount == 1 || !state.tryBegin() {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { state.run($0, count: count) }
    }

    /// Splits 0..<count into at most `threadCount` contiguous ranges of nearly equal size and
    /// runs `body` on each: the coarsest split, for loops whose items cost about the same.
    public func parallelRanges(_ count: Int, minimumPerThread: Int = 1,
                               _ body: (Range<Int>) -> Void) {
        let pieces = max(1, min(threadCount, count / max(1, minimumPerThread)))
        if pieces == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        parallelFor(pieces) { piece in
            body((count * piece / pieces)..<(count * (piece + 1) / pieces))
        }
    }

    /// Splits 0..<count into about `piecesPerThread` contiguous pieces per thread (each at least
    /// `minimumPerPiece` long, boundaries on multiples of `alignment`), handed out as threads
    /// become free: a thread that starts late or is interrupted leaves its pieces to the others
    /// instead of keeping them waiting. Each item still runs on exactly one thread.
    public func parallelPieces(_ count: Int, minimumPerPiece: Int = 1, piecesPerThread: Int = 4, alignment: Int = 1,
                               _ body: (Range<Int>) -> Void) {
        let units = (count + alignment - 1) / alignment
        let pieces = max(1, min(threadCount * piecesPerThread, count / max(1, minimumPerPiece), units))
        if pieces == 1 || threadCount == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        parallelFor(pieces) { piece in
            body(min(count, units * piece / pieces * alignment)..<min(count, units * (piece + 1) / pieces * alignment))
        }
    }
}

/// What the caller and the workers of one pool share.
///
/// A job: the caller stores `job` and `jobCount`, bumps `generation` (release), takes indices
/// itself, then waits until every worker has acknowledged that generation. Workers read `job`
/// only between seeing the new generation and acknowledging it, so the plain fields never race.
private final class PoolState: @unchecked Sendable {
    let workerCount: Int
    let generation = Atomic<Int>(0)
    let nextIndex = Atomic<Int>(0)
    let acknowledged = Atomic<Int>(0)
    let busy = Atomic<Bool>(false)
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let wakeUp = NSCondition()
    var job: ((Int) -> Void)?
    var jobCount = 0

    /// Spin iterations (each an acquiring load) before a worker goes to sleep: a fraction of a
    /// millisecond, longer than the serial stretches of a decoding step (20,000 let the worker
    /// fall asleep within batch-16 steps: 5% of the time went to waking it).
    static let spinLimit = 200_000
    /// Spin iterations of the caller waiting for the workers before it yields its core.
    static let joinSpinLimit = 2_000

    init(workerCount: Int) { self.workerCount = workerCount }

    /// Claims the pool for one job; false when another job holds it.
    func tryBegin() -> Bool {
        busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    func run(_ body: @escaping (Int) -> Void, count: Int) {
        job = body
        jobCount = count
        nextIndex.store(0, ordering: .relaxed)
        acknowledged.store(0, ordering: .relaxed)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            wakeUp.lock()
            wakeUp.broadcast()
            wakeUp.unlock()
        }
        runIndices(body, count: count)
        // Wait for the workers; past a short spin, yield the core: a worker that was preempted
        // (more runnable threads than cores, as under a server's I/O) needs it to finish.
        var spins = 0
        while acknowledged.load(ordering: .acquiring) < workerCount {
            spins += 1
            if spins >= Self.joinSpinLimit { sched_yield() }
        }
        job = nil
        busy.store(false, ordering: .releasing)
    }

    func shutDown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        wakeUp.lock()
        generation.add(1, ordering: .sequentiallyConsistent)
        wakeUp.broadcast()
        wakeUp.unlock()
    }

    private func runIndices(_ body: (Int) -> Void, count: Int) {
        while true {
            let i = nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i)
        }
    }

    func workerLoop() {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < Self.spinLimit { continue }
                wakeUp.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { wakeUp.wait() }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                wakeUp.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            if let body = job { runIndices(body, count: jobCount) }
            acknowledged.add(1, ordering: .releasing)
        }
    }
}

extension ThreadPool {
    /// A pool of one: runs everything on the caller. For kernels called inside a parallel loop.
    public static let serial = ThreadPool(threadCount: 1)
}
