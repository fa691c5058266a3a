import CKernels

/// An open-addressing hash map from a pair of token ids to the merge that joins them:
/// `(left, right) -> (rank, merged id)`. Lower rank merges first.
///
/// Built once when a tokenizer loads, then only read (from any number of threads). BPE asks it
/// once per adjacent pair of every piece the cache has not seen; flat pointer storage keeps a
/// lookup to a multiply, a probe or two and no bounds checks.
final class PairTable: @unchecked Sendable {
    // Key and value side by side, so a probe touches one cache line: (key, rank << 32 | merged).
    private var entriesStorage: UnsafeMutablePointer<(key: UInt64, value: UInt64)>
    private var capacity: Int
    private(set) var count = 0
    private static let empty = UInt64.max

    init(expectedCount: Int) {
        capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        entriesStorage = .allocate(capacity: capacity)
        entriesStorage.initialize(repeating: (Self.empty, 0), count: capacity)
    }

    deinit { entriesStorage.deallocate() }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(for key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & (capacity - 1)
    }

    /// Adds a merge unless the pair already has one of lower rank.
    func insert(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        if (count + 1) * 2 > capacity { grow() }
        let k = Self.key(left, right)
        let value = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
        var i = slot(for: k)
        while entriesStorage[i].key != Self.empty {
            if entriesStorage[i].key == k {
                if rank < Int32(truncatingIfNeeded: entriesStorage[i].value >> 32) { entriesStorage[i].value = value }
                return
            }
            i = (i + 1) & (capacity - 1)
        }
        entriesStorage[i] = (k, value)
        count += 1
    }

    /// The merge of (left, right) as `rank << 32 | merged`, or `UInt64.max` when they do not merge.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let k = Self.key(left, right)
        var i = slot(for: k)
        while true {
            let found = entriesStorage[i]
            if found.key == k { return found.value }
            if found.key == Self.empty { return .max }
            i = (i + 1) & (capacity - 1)
        }
    }

    /// Starts loading the slot where (left, right) is looked up first.
    @inline(__always)
    func prefetch(_ left: Int32, _ right: Int32) {
        sg_prefetch(entriesStorage + slot(for: Self.key(left, right)))
    }

    /// Every merge, in no particular order.
    var entries: [(left: Int32, right: Int32, rank: Int32, merged: Int32)] {
        (0..<capacity).compactMap { i in
            let (key, value) = entriesStorage[i]
            return key == Self.empty ? nil
                : (Int32(truncatingIfNeeded: key >> 32), Int32(truncatingIfNeeded: key),
                   Int32(truncatingIfNeeded: value >> 32), Int32(truncatingIfNeeded: value))
        }
    }

    private func grow() {
        let old = entries
        entriesStorage.deallocate()
        capacity *= 2
        entriesStorage = .allocate(capacity: capacity)
        entriesStorage.initialize(repeating: (Self.empty, 0), count: capacity)
        count = 0
        for e in old { insert(left: e.left, right: e.right, rank: e.rank, merged: e.merged) }
    }
}
