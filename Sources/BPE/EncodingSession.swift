/// The working state of encoding: scratch buffers and a cache of pieces already encoded.
///
/// One session serves one thread; `Tokenizer.encodeOrdinary` makes one per call, and a caller
/// that encodes many short texts on one thread can keep one to reuse its cache.
///
/// Performance notes (gpt-bench tokenizer, English text, one thread):
/// - Most pieces repeat ("the", " and", ","), so a cache keyed by the piece's bytes answers the
///   majority without running BPE at all; it is a flat open-addressing table over a byte arena,
///   since `[[UInt8]: [Int]]` costs an allocation per lookup.
/// - BPE inside a piece rescans the pair ranks after each merge: O(n²) in the piece's length,
///   as tiktoken does; pieces are short (a word), and long runs (10k spaces) still take
///   milliseconds.
public struct EncodingSession {
    let tokenizer: Tokenizer
    private var cache = PieceCache()
    private var parts: [Int32] = []
    private var ranks: [Int32] = []

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// Appends the ids of `text` (special tokens as plain text) to `ids`.
    public mutating func encodeOrdinary(_ text: String, into ids: inout [Int]) {
        var text = text
        text.withUTF8 { encodeOrdinary($0, into: &ids) }
    }

    /// Appends the ids of the valid UTF-8 `bytes` to `ids`.
    public mutating func encodeOrdinary(_ bytes: UnsafeBufferPointer<UInt8>, into ids: inout [Int]) {
        tokenizer.preTokenizer.forEachPiece(in: bytes) { range in
            let piece = UnsafeBufferPointer(rebasing: bytes[range])
            if cache.appendCached(piece, to: &ids) { return }
            let start = ids.count
            mergePiece(piece, into: &ids)
            cache.insert(piece, ids: ids[start...])
        }
    }

    /// BPE on one piece.
    private mutating func mergePiece(_ piece: UnsafeBufferPointer<UInt8>, into ids: inout [Int]) {
        let byteTokens = tokenizer.byteTokens, merges = tokenizer.merges
        if piece.count == 1 {
            ids.append(Int(byteTokens[Int(piece[0])]))
            return
        }
        parts.removeAll(keepingCapacity: true)
        ranks.removeAll(keepingCapacity: true)
        for byte in piece { parts.append(byteTokens[Int(byte)]) }
        // ranks[i]: the rank of merging parts[i] and parts[i + 1] (Int32.max: none).
        for i in 0..<(parts.count - 1) {
            ranks.append(merges.lookup(parts[i], parts[i + 1])?.rank ?? .max)
        }
        while parts.count > 1 {
            var best = 0
            for i in 1..<ranks.count where ranks[i] < ranks[best] { best = i }
            guard ranks[best] != .max else { break }
            parts[best] = merges.lookup(parts[best], parts[best + 1])!.merged
            parts.remove(at: best + 1)
            ranks.remove(at: best)
            if best > 0 { ranks[best - 1] = merges.lookup(parts[best - 1], parts[best])?.rank ?? .max }
            if best < ranks.count { ranks[best] = merges.lookup(parts[best], parts[best + 1])?.rank ?? .max }
        }
        for part in parts { ids.append(Int(part)) }
    }
}

/// Piece bytes -> ids, as a flat open-addressing table over two arenas. It stops taking new
/// pieces at `limit` entries (a text with endless distinct pieces gains nothing from caching).
struct PieceCache {
    private struct Slot {
        var hash: UInt64 = 0
        var keyStart: Int32 = -1
        var keyLength: Int32 = 0
        var idStart: Int32 = 0
        var idCount: Int32 = 0
    }

    private var slots = [Slot](repeating: Slot(), count: 1 << 12)
    private var keyBytes: [UInt8] = []
    private var idArena: [Int] = []
    private var count = 0
    private let limit = 1 << 20

    @inline(__always)
    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// Appends the cached ids of `piece` to `ids`; false when it is not cached.
    @inline(__always)
    mutating func appendCached(_ piece: UnsafeBufferPointer<UInt8>, to ids: inout [Int]) -> Bool {
        let h = Self.hash(piece)
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: h >> 7) & mask
        while true {
            let slot = slots[i]
            if slot.keyStart < 0 { return false }
            if slot.hash == h && Int(slot.keyLength) == piece.count && matches(slot, piece) {
                let start = Int(slot.idStart)
                if slot.idCount == 1 {
                    ids.append(idArena[start])
                } else {
                    ids.append(contentsOf: idArena[start..<(start + Int(slot.idCount))])
                }
                return true
            }
            i = (i + 1) & mask
        }
    }

    @inline(__always)
    private func matches(_ slot: Slot, _ piece: UnsafeBufferPointer<UInt8>) -> Bool {
        keyBytes.withUnsafeBufferPointer { keys in
            let start = Int(slot.keyStart)
            for k in 0..<piece.count where keys[start + k] != piece[k] { return false }
            return true
        }
    }

    mutating func insert(_ piece: UnsafeBufferPointer<UInt8>, ids: ArraySlice<Int>) {
        guard count < limit, keyBytes.count + piece.count < Int(Int32.max) else { return }
        if (count + 1) * 2 > slots.count { grow() }
        let h = Self.hash(piece)
        var slot = Slot(hash: h, keyStart: Int32(keyBytes.count), keyLength: Int32(piece.count),
                        idStart: Int32(idArena.count), idCount: Int32(ids.count))
        keyBytes.append(contentsOf: piece)
        idArena.append(contentsOf: ids)
        place(&slot)
        count += 1
    }

    private mutating func place(_ slot: inout Slot) {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: slot.hash >> 7) & mask
        while slots[i].keyStart >= 0 { i = (i + 1) & mask }
        slots[i] = slot
    }

    private mutating func grow() {
        let old = slots
        slots = [Slot](repeating: Slot(), count: old.count * 2)
        for var slot in old where slot.keyStart >= 0 { place(&slot) }
    }
}
