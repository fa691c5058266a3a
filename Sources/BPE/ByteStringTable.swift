import CKernels

/// An open-addressing hash table from byte strings to short runs of token ids, with keys and
/// values in flat arenas: a lookup hashes the bytes 8 at a time, probes, compares, and hands back
/// a pointer to the ids, allocating nothing.
///
/// The tokenizer keeps one (immutable, shared) for "which token is exactly these bytes", and each
/// encoding session one more as the cache of pieces it has already merged.
///
/// A slot is 32 bytes, two to a cache line: keys of up to 16 bytes (99.9% of English pieces)
/// and up to three values live in the slot itself, so a lookup reads one line, which the
/// encoder prefetches. Longer keys and runs of values go to the arenas.
final class ByteStringTable: @unchecked Sendable {
    private struct Slot {
        /// The key's bytes when it is 16 bytes or shorter (zero-padded); else key0 is its arena
        /// offset.
        var key0: UInt64
        var key1: UInt64
        /// The values when there are at most three; else the first is their arena offset.
        var values: (Int32, Int32, Int32)
        /// Bits 0-15: key length (0xFFFF: empty slot); 16-23: value count; 24-31: 8 hash bits.
        var meta: UInt32

        static let empty = Slot(key0: 0, key1: 0, values: (0, 0, 0), meta: 0xFFFF)
        var isEmpty: Bool { meta & 0xFFFF == 0xFFFF }
        var keyLength: Int { Int(meta & 0xFFFF) }
        var valueCount: Int { Int((meta >> 16) & 0xFF) }
    }

    static let inlineKeyLength = 16, inlineValueCount = 3

    /// Keys longer than this, or with more values than 255, are not stored (`insert` ignores
    /// them); both are far beyond what a cache gains from.
    static let maximumKeyLength = 0xFFFE

    // One thread writes a table at a time (a session's cache belongs to one encode call; the
    // shared token table is only read), so Swift's run-time exclusivity checks, a runtime call
    // per access, are turned off.
    @exclusivity(unchecked) private var slots: UnsafeMutablePointer<Slot>
    @exclusivity(unchecked) private var capacity: Int
    @exclusivity(unchecked) private var keys: UnsafeMutablePointer<UInt8>
    @exclusivity(unchecked) private var keysUsed = 0, keysCapacity: Int
    @exclusivity(unchecked) private var values: UnsafeMutablePointer<Int32>
    @exclusivity(unchecked) private var valuesUsed = 0, valuesCapacity: Int
    @exclusivity(unchecked) private(set) var count = 0

    init(expectedCount: Int = 1024) {
        capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        slots = Self.allocateSlots(capacity)
        keysCapacity = max(64, expectedCount)
        keys = .allocate(capacity: keysCapacity)
        valuesCapacity = max(64, expectedCount / 2)
        values = .allocate(capacity: valuesCapacity)
    }

    deinit {
        slots.deallocate()
        keys.deallocate()
        values.deallocate()
    }

    /// A 64-bit hash of the bytes, 8 at a time.
    @inline(__always)
    static func hash(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> UInt64 {
        if count <= 8 { return hashShort(loadPadded(bytes, count), count) }
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(count)
        var i = 0
        let raw = UnsafeRawPointer(bytes)
        while i + 8 <= count {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xFF51_AFD7_ED55_8CCD
            h ^= h >> 32
            i += 8
        }
        if i < count {
            h = (h ^ loadPadded(bytes + i, count - i)) &* 0xC4CE_B9FE_1A85_EC53
        }
        // Multiplication only carries bits upward; fold the high bits down (murmur3's fmix64)
        // so the low bits that pick the slot depend on every byte.
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        return h
    }

    /// The hash of a key of at most 8 bytes, given as its zero-padded integer.
    @inline(__always)
    static func hashShort(_ key: UInt64, _ count: Int) -> UInt64 {
        var h = ((0x9E37_79B9_7F4A_7C15 ^ UInt64(count)) ^ key) &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        return h
    }

    /// The values stored for a key of at most 8 bytes, given as its zero-padded integer.
    @inline(__always)
    func findShort(_ key: UInt64, _ count: Int, hash h: UInt64) -> (UnsafePointer<Int32>, Int)? {
        let mask = capacity - 1
        var i = Int(truncatingIfNeeded: h) & mask
        let want = Self.tag(h) | UInt32(truncatingIfNeeded: count)
        while true {
            let slot = slots[i]
            if slot.isEmpty { return nil }
            if slot.meta & 0xFF00_FFFF == want && slot.key0 == key { return values(at: i, count: slot.valueCount) }
            i = (i + 1) & mask
        }
    }

    /// `count` (0...8) bytes as a little-endian integer, zero-padded, with at most two loads
    /// that stay inside the bytes (overlapping when the count is not a power of two).
    @inline(__always)
    static func loadPadded(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> UInt64 {
        let raw = UnsafeRawPointer(bytes)
        switch count {
        case 8:
            return raw.loadUnaligned(as: UInt64.self)
        case 4...7:
            let low = UInt64(raw.loadUnaligned(as: UInt32.self))
            let high = UInt64(raw.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self))
            return low | high << (8 * UInt64(count - 4))
        case 1...3:
            return UInt64(bytes[0]) | UInt64(bytes[count / 2]) << (8 * UInt64(count / 2))
                | UInt64(bytes[count - 1]) << (8 * UInt64(count - 1))
        default:
            return 0
        }
    }

    @inline(__always)
    private static func tag(_ h: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: h >> 56) << 24 }

    /// Starts loading the slot a hash probes first, so that a `find` a little later finds it in
    /// cache: the misses of consecutive lookups then overlap instead of following each other.
    @inline(__always)
    func prefetch(hash h: UInt64) {
        sg_prefetch(slots + (Int(truncatingIfNeeded: h) & (capacity - 1)))
    }

    /// The values stored for these bytes: (pointer, count), or nil. The pointer is valid until
    /// the next insert.
    @inline(__always)
    func find(_ bytes: UnsafePointer<UInt8>, _ count: Int, hash h: UInt64) -> (UnsafePointer<Int32>, Int)? {
        if count <= 8 { return findShort(Self.loadPadded(bytes, count), count, hash: h) }
        let mask = capacity - 1
        var i = Int(truncatingIfNeeded: h) & mask
        let want = Self.tag(h) | UInt32(truncatingIfNeeded: count)
        if count <= Self.inlineKeyLength {
            let key0 = UnsafeRawPointer(bytes).loadUnaligned(as: UInt64.self)
            let key1 = Self.loadPadded(bytes + 8, count - 8)
            while true {
                let slot = slots[i]
                if slot.isEmpty { return nil }
                if slot.meta & 0xFF00_FFFF == want && slot.key0 == key0 && slot.key1 == key1 {
                    return values(at: i, count: slot.valueCount)
                }
                i = (i + 1) & mask
            }
        }
        while true {
            let slot = slots[i]
            if slot.isEmpty { return nil }
            if slot.meta & 0xFF00_FFFF == want && memcmpEqual(keys + Int(slot.key0), bytes, count) {
                return values(at: i, count: slot.valueCount)
            }
            i = (i + 1) & mask
        }
    }

    /// A found slot's values: held in the slot itself, or a run in the arena.
    @inline(__always)
    private func values(at i: Int, count: Int) -> (UnsafePointer<Int32>, Int) {
        let inSlot = UnsafeRawPointer(slots + i).advanced(by: MemoryLayout<Slot>.offset(of: \Slot.values)!)
            .assumingMemoryBound(to: Int32.self)
        if count <= Self.inlineValueCount { return (inSlot, count) }
        return (UnsafePointer(values + Int(inSlot.pointee)), count)
    }

    /// Forgets every key, keeping the memory.
    func removeAll() {
        slots.update(repeating: .empty, count: capacity)
        keysUsed = 0
        valuesUsed = 0
        count = 0
    }

    /// Makes room for `expectedCount` keys without rehashing on the way.
    func reserveCapacity(_ expectedCount: Int) {
        var newCapacity = capacity
        while newCapacity < expectedCount * 2 { newCapacity <<= 1 }
        if newCapacity > capacity { rehash(to: newCapacity) }
    }

    /// Stores `valueCount` values for the bytes (which must not be in the table yet).
    func insert(_ bytes: UnsafePointer<UInt8>, _ count: Int, hash h: UInt64,
                values newValues: UnsafePointer<Int32>, valueCount: Int) {
        guard count <= Self.maximumKeyLength, valueCount >= 1, valueCount <= 255 else { return }
        if (self.count + 1) * 2 > capacity { rehash(to: capacity * 2) }
        var slot = Slot.empty
        slot.meta = Self.tag(h) | UInt32(valueCount) << 16 | UInt32(count)
        if count <= Self.inlineKeyLength {
            slot.key0 = Self.loadPadded(bytes, min(count, 8))
            slot.key1 = count > 8 ? Self.loadPadded(bytes + 8, count - 8) : 0
        } else {
            slot.key0 = UInt64(Self.append(bytes, count: count, to: &keys, used: &keysUsed, capacity: &keysCapacity))
        }
        withUnsafeMutableBytes(of: &slot.values) { inSlot in
            let inSlot = inSlot.bindMemory(to: Int32.self)
            if valueCount <= Self.inlineValueCount {
                for k in 0..<valueCount { inSlot[k] = newValues[k] }
            } else {
                inSlot[0] = Int32(Self.append(newValues, count: valueCount, to: &values, used: &valuesUsed, capacity: &valuesCapacity))
            }
        }
        place(slot, hash: h)
        self.count += 1
    }

    private func place(_ slot: Slot, hash h: UInt64) {
        let mask = capacity - 1
        var i = Int(truncatingIfNeeded: h) & mask
        while !slots[i].isEmpty { i = (i + 1) & mask }
        slots[i] = slot
    }

    /// Rehashing needs each key's full hash, which slots do not keep: recompute it.
    private func rehash(to newCapacity: Int) {
        let old = slots, oldCapacity = capacity
        capacity = newCapacity
        slots = Self.allocateSlots(capacity)
        for i in 0..<oldCapacity where !old[i].isEmpty {
            let slot = old[i], length = slot.keyLength
            let h: UInt64
            if length <= Self.inlineKeyLength {
                h = withUnsafeBytes(of: (slot.key0, slot.key1)) { Self.hash($0.baseAddress!.assumingMemoryBound(to: UInt8.self), length) }
            } else {
                h = Self.hash(keys + Int(slot.key0), length)
            }
            place(slot, hash: h)
        }
        old.deallocate()
    }

    /// Empty slots, aligned to pages. Malloc's 16-byte alignment let every other 32-byte slot
    /// straddle two cache lines (o200k ran at 200 or 265 MB/s, as the allocation fell); with
    /// 64-byte alignment the warm loop still ran 20% slower whenever the table began mid-page
    /// (reproducible, cause not found); page-aligned it runs at the fast speed every time.
    private static func allocateSlots(_ count: Int) -> UnsafeMutablePointer<Slot> {
        let slots = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Slot>.stride, alignment: 4096)
            .bindMemory(to: Slot.self, capacity: count)
        slots.initialize(repeating: .empty, count: count)
        return slots
    }

    /// Copies `count` elements to the end of an arena (growing it by doubling); returns where
    /// they start.
    private static func append<T>(_ source: UnsafePointer<T>, count: Int, to arena: inout UnsafeMutablePointer<T>,
                                  used: inout Int, capacity: inout Int) -> Int {
        if used + count > capacity {
            while capacity < used + count { capacity *= 2 }
            let bigger = UnsafeMutablePointer<T>.allocate(capacity: capacity)
            bigger.moveInitialize(from: arena, count: used)
            arena.deallocate()
            arena = bigger
        }
        (arena + used).update(from: source, count: count)
        defer { used += count }
        return used
    }
}

@inline(__always)
private func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 8 <= count {
        if ra.loadUnaligned(fromByteOffset: i, as: UInt64.self) != rb.loadUnaligned(fromByteOffset: i, as: UInt64.self) {
            return false
        }
        i += 8
    }
    while i < count {
        if a[i] != b[i] { return false }
        i += 1
    }
    return true
}
