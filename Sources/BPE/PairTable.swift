/// An open-addressing hash map from a pair of token ids to the merge that joins them:
/// `(left, right) -> (rank, merged id)`. Lower rank merges first.
///
/// Swift's `Dictionary` costs about 3x more per lookup here; BPE asks this table once per
/// adjacent pair of every piece not in the cache.
struct PairTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]  // rank << 32 | merged
    private var mask: Int
    private(set) var count = 0
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(for key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    /// Adds a merge unless the pair already has one of lower rank.
    mutating func insert(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        if (count + 1) * 2 > keys.count { grow() }
        let k = Self.key(left, right)
        var i = slot(for: k)
        while keys[i] != Self.empty {
            if keys[i] == k {
                if rank < Int32(truncatingIfNeeded: values[i] >> 32) {
                    values[i] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
                }
                return
            }
            i = (i + 1) & mask
        }
        keys[i] = k
        values[i] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
        count += 1
    }

    /// The merge of (left, right), or nil.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> (rank: Int32, merged: Int32)? {
        let k = Self.key(left, right)
        return keys.withUnsafeBufferPointer { keys in
            var i = slot(for: k)
            while true {
                let found = keys[i]
                if found == k {
                    let v = values[i]
                    return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
                }
                if found == Self.empty { return nil }
                i = (i + 1) & mask
            }
        }
    }

    /// Every merge, in no particular order.
    var entries: [(left: Int32, right: Int32, rank: Int32, merged: Int32)] {
        keys.indices.compactMap { i in
            keys[i] == Self.empty ? nil
                : (Int32(truncatingIfNeeded: keys[i] >> 32), Int32(truncatingIfNeeded: keys[i]),
                   Int32(truncatingIfNeeded: values[i] >> 32), Int32(truncatingIfNeeded: values[i]))
        }
    }

    private mutating func grow() {
        let old = entries
        self = PairTable(capacity: keys.count)
        for e in old { insert(left: e.left, right: e.right, rank: e.rank, merged: e.merged) }
    }
}
