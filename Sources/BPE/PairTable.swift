import CKernels

/// An open-addressing hash map from a pair of token ids to the merge that joins them:
/// `(left, right) -> (rank, merged id)`. Lower rank merges first.
///
/// Built once when a tokenizer loads, then only read (from any number of threads). BPE asks it
/// once per adjacent pair of every piece the cache has not seen, at random places in a table of
/// megabytes, so its size is its speed: an entry packs left, right and rank into 8 bytes (21 bits
/// each), and the table is sized for the merges it holds. o200k's 446k merges take 8 MB, where
/// 16-byte entries in a table sized by guess took 32 MB (a random read here costs 8 ns within
/// 1 MB and 106 ns at 8 MB).
final class PairTable: @unchecked Sendable {
    /// Ids and ranks must stay below this (21 bits, all ones reserved for empty slots).
    static let idLimit = (1 << 21) - 1
    private static let empty = UInt64.max
    private static let keyMask: UInt64 = (1 << 42) - 1

    private var entries: UnsafeMutablePointer<UInt64>
    private var capacity: Int
    private(set) var count = 0
    /// The merged id of each rank, when it is not the rank itself (merge lists: the rank is the
    /// merge's line, the id the vocabulary's). Empty for rank files, where a merge's rank is the
    /// id of the token it makes.
    private var mergedByRank: [Int32] = []

    init(expectedCount: Int) {
        capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        entries = .allocate(capacity: capacity)
        entries.initialize(repeating: Self.empty, count: capacity)
    }

    deinit { entries.deallocate() }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 21 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(for key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & (capacity - 1)
    }

    /// Adds a merge unless the pair already has one of lower rank. Ids and the rank must be
    /// below `idLimit` (the tokenizer checks the vocabulary's size).
    func insert(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        precondition(left >= 0 && right >= 0 && rank >= 0 && Int(max(left, right, rank, merged)) < Self.idLimit)
        if merged != rank || !mergedByRank.isEmpty {
            while mergedByRank.count <= Int(rank) { mergedByRank.append(Int32(mergedByRank.count)) }
            mergedByRank[Int(rank)] = merged
        }
        if (count + 1) * 2 > capacity { grow() }
        let k = Self.key(left, right), entry = UInt64(rank) << 42 | k
        var i = slot(for: k)
        while entries[i] != Self.empty {
            if entries[i] & Self.keyMask == k {
                if UInt64(rank) < entries[i] >> 42 { entries[i] = entry }
                return
            }
            i = (i + 1) & (capacity - 1)
        }
        entries[i] = entry
        count += 1
    }

    /// The merge of (left, right) as `rank << 32 | merged`, or `UInt64.max` when they do not merge.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let k = Self.key(left, right)
        var i = slot(for: k)
        while true {
            let entry = entries[i]
            // An empty slot's key bits are all ones, which no pair of valid ids makes.
            if entry & Self.keyMask == k {
                let rank = entry >> 42
                let merged = mergedByRank.isEmpty ? rank : UInt64(UInt32(bitPattern: mergedByRank[Int(rank)]))
                return rank << 32 | merged
            }
            if entry == Self.empty { return .max }
            i = (i + 1) & (capacity - 1)
        }
    }

    /// Starts loading the slot where (left, right) is looked up first.
    @inline(__always)
    func prefetch(_ left: Int32, _ right: Int32) {
        sg_prefetch(entries + slot(for: Self.key(left, right)))
    }

    /// Every merge, in no particular order.
    var merges: [(left: Int32, right: Int32, rank: Int32, merged: Int32)] {
        (0..<capacity).compactMap { i in
            let entry = entries[i]
            guard entry != Self.empty else { return nil }
            let rank = Int32(truncatingIfNeeded: entry >> 42)
            return (Int32(truncatingIfNeeded: (entry >> 21) & 0x1F_FFFF), Int32(truncatingIfNeeded: entry & 0x1F_FFFF),
                    rank, mergedByRank.isEmpty ? rank : mergedByRank[Int(rank)])
        }
    }

    private func grow() {
        let old = entries, oldCapacity = capacity
        capacity *= 2
        entries = .allocate(capacity: capacity)
        entries.initialize(repeating: Self.empty, count: capacity)
        for j in 0..<oldCapacity where old[j] != Self.empty {
            var i = slot(for: old[j] & Self.keyMask)
            while entries[i] != Self.empty { i = (i + 1) & (capacity - 1) }
            entries[i] = old[j]
        }
        old.deallocate()
    }
}
