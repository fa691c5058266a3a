import Foundation
import Synchronization
import XCTest
@testable import Kernels

final class ThreadPoolTests: XCTestCase {
    func testEveryIndexRunsExactlyOnce() {
        for threads in [1, 2, 4] {
            let pool = ThreadPool(threadCount: threads)
            for count in [0, 1, 2, 3, 17, 1000] {
                let hits = (0..<count).map { _ in Counter() }
                pool.parallelFor(count) { i in hits[i].value.add(1, ordering: .relaxed) }
                XCTAssertTrue(hits.allSatisfy { $0.value.load(ordering: .relaxed) == 1 }, "threads \(threads) count \(count)")
            }
        }
    }

    func testManyBackToBackJobs() {
        let pool = ThreadPool(threadCount: 2)
        let total = Atomic<Int>(0)
        for _ in 0..<5000 { pool.parallelFor(4) { i in total.add(i, ordering: .relaxed) } }
        XCTAssertEqual(total.load(ordering: .relaxed), 5000 * 6)
    }

    func testWorkersWakeAfterSleeping() {
        let pool = ThreadPool(threadCount: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(8) { _ in total.add(1, ordering: .relaxed) }
        usleep(20_000)  // long past the spin limit: workers are asleep on the condition
        pool.parallelFor(8) { _ in total.add(1, ordering: .relaxed) }
        XCTAssertEqual(total.load(ordering: .relaxed), 16)
    }

    func testNestedAndConcurrentJobsRunInline() {
        let pool = ThreadPool(threadCount: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(4) { _ in
            pool.parallelFor(10) { _ in total.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 40)
        // Two threads using one pool at once: one of them runs inline, both finish.
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            for _ in 0..<200 { pool.parallelFor(3) { _ in total.add(1, ordering: .relaxed) } }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 40 + 2 * 200 * 3)
    }

    func testParallelRangesPartition() {
        let pool = ThreadPool(threadCount: 3)
        for count in [0, 1, 5, 100] {
            let covered = Mutex<[Int]>([])
            pool.parallelRanges(count) { range in covered.withLock { $0 += Array(range) } }
            XCTAssertEqual(covered.withLock { $0.sorted() }, Array(0..<count))
        }
    }

    /// Pieces cover every index once, start on the alignment, and respect the minimum length.
    func testParallelPiecesPartition() {
        let pool = ThreadPool(threadCount: 3)
        for (count, minimum, alignment) in [(0, 1, 1), (1, 1, 4), (7, 1, 4), (100, 1, 1), (1_000, 16, 4), (961, 4, 4), (30, 40, 4)] {
            let pieces = Mutex<[Range<Int>]>([])
            pool.parallelPieces(count, minimumPerPiece: minimum, alignment: alignment) { range in pieces.withLock { $0.append(range) } }
            let ranges = pieces.withLock { $0.sorted { $0.lowerBound < $1.lowerBound } }.filter { !$0.isEmpty }
            XCTAssertEqual(ranges.flatMap { Array($0) }, Array(0..<count), "count \(count)")
            XCTAssertTrue(ranges.allSatisfy { $0.lowerBound % alignment == 0 }, "count \(count): pieces off the alignment")
            XCTAssertLessThanOrEqual(ranges.count, max(1, 3 * 4), "count \(count)")
            if ranges.count > 1 { XCTAssertTrue(ranges.dropLast().allSatisfy { $0.count >= minimum }, "count \(count): a short piece") }
        }
    }
}

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
