/// BPE on a batch of pieces at once, in lockstep: each round applies one merge to every piece
/// that has one left, and prefetches the pair-table slots its next round will read. One piece's
/// merges depend on each other, so alone it waits out a memory access per merge; a batch's
/// accesses overlap.
///
/// Within a piece this is the rank-ordered BPE of tiktoken: the adjacent pair of lowest rank
/// merges first (the leftmost of equals), and pieces are short, so each round rescans them.
final class BatchedMerge {
    /// Per piece: where its parts and ranks start, how many parts are live, and the positions
    /// whose pair ranks must be looked up at the start of its next round (-1: none).
    private struct Piece {
        var offset: Int, live: Int
        var pendingLeft = -1, pendingRight = -1
    }

    // One session's, used by one thread at a time: no run-time exclusivity checks.
    @exclusivity(unchecked) private var pieces: [Piece] = []
    /// The pieces' parts (token ids) and, for each part but the last, the merge of it and the
    /// next as rank << 32 | merged id (UInt64.max: none).
    @exclusivity(unchecked) private var parts: [Int32] = []
    @exclusivity(unchecked) private var ranks: [UInt64] = []
    @exclusivity(unchecked) private var tagToPiece: [Int] = []
    @exclusivity(unchecked) private var merges: PairTable?
    @exclusivity(unchecked) private var byteTokens: [Int32] = []

    func begin(tokenizer: Tokenizer) {
        merges = tokenizer.merges
        byteTokens = tokenizer.byteTokens
        pieces.removeAll(keepingCapacity: true)
        parts.removeAll(keepingCapacity: true)
        ranks.removeAll(keepingCapacity: true)
        tagToPiece.removeAll(keepingCapacity: true)
    }

    /// Adds a piece; `tag` (0, 1, 2, ...) names it for `result`.
    func add(_ bytes: UnsafeBufferPointer<UInt8>, tag: Int) {
        let offset = parts.count
        for byte in bytes where byteTokens[Int(byte)] >= 0 { parts.append(byteTokens[Int(byte)]) }
        let live = parts.count - offset
        ranks.append(contentsOf: repeatElement(.max, count: live))
        while tagToPiece.count <= tag { tagToPiece.append(-1) }
        tagToPiece[tag] = pieces.count
        pieces.append(Piece(offset: offset, live: live))
    }

    /// The ids of the piece added with `tag`, after `run`.
    func result(tag: Int) -> ArraySlice<Int32> {
        let piece = pieces[tagToPiece[tag]]
        return parts[piece.offset..<(piece.offset + piece.live)]
    }

    func run() {
        guard let merges else { return }
        parts.withUnsafeMutableBufferPointer { parts in
            ranks.withUnsafeMutableBufferPointer { ranks in
                pieces.withUnsafeMutableBufferPointer { pieces in
                    // Every adjacent pair's rank: all independent lookups, prefetched first.
                    for piece in pieces where piece.live > 1 {
                        for i in piece.offset..<(piece.offset + piece.live - 1) { merges.prefetch(parts[i], parts[i + 1]) }
                    }
                    for piece in pieces where piece.live > 1 {
                        for i in piece.offset..<(piece.offset + piece.live - 1) { ranks[i] = merges.lookup(parts[i], parts[i + 1]) }
                    }
                    var active = Array(pieces.indices.filter { pieces[$0].live > 1 })
                    while !active.isEmpty {
                        var stillActive = 0
                        for index in active {
                            var piece = pieces[index]
                            let o = piece.offset
                            if piece.pendingLeft >= 0 { ranks[o + piece.pendingLeft] = merges.lookup(parts[o + piece.pendingLeft], parts[o + piece.pendingLeft + 1]) }
                            if piece.pendingRight >= 0 { ranks[o + piece.pendingRight] = merges.lookup(parts[o + piece.pendingRight], parts[o + piece.pendingRight + 1]) }
                            piece.pendingLeft = -1
                            piece.pendingRight = -1
                            // The lowest-ranked pair (leftmost among equals).
                            var best = 0, bestRank = ranks[o] >> 32
                            if piece.live > 2 {
                                for i in 1..<(piece.live - 1) where ranks[o + i] >> 32 < bestRank {
                                    best = i
                                    bestRank = ranks[o + i] >> 32
                                }
                            }
                            if ranks[o + best] == .max {
                                pieces[index] = piece
                                continue
                            }
                            parts[o + best] = Int32(truncatingIfNeeded: ranks[o + best])
                            for i in (best + 1)..<(piece.live - 1) {
                                parts[o + i] = parts[o + i + 1]
                                ranks[o + i] = ranks[o + i + 1]
                            }
                            piece.live -= 1
                            ranks[o + piece.live - 1] = .max
                            // The merged part's new pairs: prefetched now, read next round.
                            if best > 0 {
                                piece.pendingLeft = best - 1
                                merges.prefetch(parts[o + best - 1], parts[o + best])
                            }
                            if best < piece.live - 1 {
                                piece.pendingRight = best
                                merges.prefetch(parts[o + best], parts[o + best + 1])
                            }
                            pieces[index] = piece
                            if piece.live > 1 {
                                active[stillActive] = index
                                stillActive += 1
                            }
                        }
                        active.removeLast(active.count - stillActive)
                    }
                }
            }
        }
    }
}
