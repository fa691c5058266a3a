/// The working state of encoding: scratch buffers and a cache of pieces already encoded.
///
/// One session serves one thread at a time. The tokenizer keeps the sessions it has made in a
/// pool and lends one to each encode call, so the piece cache stays warm across calls (as
/// Hugging Face's BPE keeps a word cache) and threads never share one.
///
/// Performance notes (`gpt-bench tokenizer`, GPT-2 ranks, 12.4 MB of Shakespeare, one thread):
/// - 3.2 million pieces, 77,566 distinct: a cache keyed by the piece's bytes answers 97.6% of
///   them without BPE. It is a flat open-addressing table over byte arenas (ByteStringTable):
///   `[[UInt8]: [Int]]` costs an allocation per lookup.
/// - A new piece that is itself a token (with rank files) is looked up whole, as tiktoken does.
/// - BPE inside a piece rescans the pair ranks after each merge: O(n²) in the piece's length,
///   as tiktoken does; pieces are short (a word), and long runs (10k spaces) still take
///   milliseconds.
/// - Global tables in Swift cost a `swift_once` check per access (6% of the time here): the
///   scanner keeps a pointer to its class table instead.
/// - Splitting a batch of pieces first and touching their cache slots before looking them up
///   (to overlap cache misses) measured slower: 63 MB/s against 80; so did a small
///   direct-mapped front cache for one-token pieces (133 against 140).
/// - Keys of up to 8 bytes are made with one load and a mask when 8 bytes are readable: the
///   branch on the piece's length mispredicted often (118 -> 140 MB/s).
/// - OptionSet array literals (`[.letter, .number]`) in the scanner built a heap array per call:
///   constants instead took cl100k from 90 to 139 MB/s.
public final class EncodingSession: @unchecked Sendable {
    unowned let tokenizer: Tokenizer
    private let cache = ByteStringTable(expectedCount: 32768)
    private var parts: [Int32] = []
    private var ranks: [UInt64] = []

    private var buffer = UnsafeMutablePointer<Int>.allocate(capacity: 4096)
    private var bufferCapacity = 4096


    /// A session of `tokenizer`, which must outlive it.
    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    deinit { buffer.deallocate() }

    /// Appends the ids of `text` (special tokens as plain text) to `ids`.
    public func encodeOrdinary(_ text: String, into ids: inout [Int]) {
        var text = text
        text.withUTF8 { encodeOrdinary($0, into: &ids) }
    }

    /// Appends the ids of the valid UTF-8 `bytes` to `ids`.
    public func encodeOrdinary(_ bytes: UnsafeBufferPointer<UInt8>, into ids: inout [Int]) {
        guard let base = bytes.baseAddress else { return }
        let cache = self.cache, tokenTable = tokenizer.tokenTable
        let wholePieceLookup = tokenizer.wholePieceLookup, pattern = tokenizer.preTokenizer
        // Ids collect in `buffer` and move to `ids` in blocks: appending one at a time costs a
        // uniqueness and capacity check each. A piece never gives more ids than it has bytes.
        var written = 0
        func flush() {
            ids.append(contentsOf: UnsafeBufferPointer(start: buffer, count: written))
            written = 0
        }
        // Pieces are scanned `lookahead` ahead of their lookup, their cache slots prefetched, so
        // the misses of consecutive lookups overlap.
        var pieces = Pieces(bytes: bytes, pattern: pattern)
        // The ring lives on the stack (a tuple), where the optimiser keeps it apart from the
        // arrays and tables: on the heap, every store to it forced reloads (40% slower).
        let lookahead = 8
        var ringStorage = (PendingPiece.none, PendingPiece.none, PendingPiece.none, PendingPiece.none,
                           PendingPiece.none, PendingPiece.none, PendingPiece.none, PendingPiece.none)
        withUnsafeMutablePointer(to: &ringStorage) { ringTuple in
        let ring = UnsafeMutableRawPointer(ringTuple).assumingMemoryBound(to: PendingPiece.self)
        var head = 0, pending = 0
        while pending < lookahead, let range = pieces.next() {
            ring[pending] = PendingPiece(range, in: bytes, cache: cache)
            pending += 1
        }
        while pending > 0 {
            let current = ring[head]
            if let range = pieces.next() {
                ring[head] = PendingPiece(range, in: bytes, cache: cache)
            } else {
                pending -= 1
            }
            head = (head + 1) & (lookahead - 1)
            let piece = base + current.start, count = current.count, h = current.hash
            if written + count > bufferCapacity {
                flush()
                if count > bufferCapacity { growBuffer(to: count) }
            }
            let found = current.isShort ? cache.findShort(current.key, count, hash: h) : cache.find(piece, count, hash: h)
            if let (values, valueCount) = found {
                for k in 0..<valueCount { buffer[written + k] = Int(values[k]) }
                written += valueCount
                continue
            }
            if wholePieceLookup, let (values, _) = tokenTable.find(piece, count, hash: h) {
                buffer[written] = Int(values[0])
                written += 1
                // Into the cache too, so that next time one probe answers.
                cache.insert(piece, count, hash: h, values: values, valueCount: 1)
                continue
            }
            mergePiece(UnsafeBufferPointer(start: piece, count: count))
            parts.withUnsafeBufferPointer { merged in
                cache.insert(piece, count, hash: h, values: merged.baseAddress!, valueCount: merged.count)
                for (k, id) in merged.enumerated() { buffer[written + k] = Int(id) }
                written += merged.count
            }
        }
        }
        flush()
    }

    /// A piece found by the scanner, with its hash computed and its cache slot on its way.
    private struct PendingPiece {
        let start: Int, count: Int
        /// The piece's bytes as a zero-padded integer when `isShort`.
        let key: UInt64
        let hash: UInt64
        /// Up to 8 bytes with 8 readable bytes behind them (nearly all pieces): one load and a
        /// mask make the key, with no branch on the length.
        let isShort: Bool

        static let none = PendingPiece(start: 0, count: 0, key: 0, hash: 0, isShort: false)

        init(start: Int, count: Int, key: UInt64, hash: UInt64, isShort: Bool) {
            (self.start, self.count, self.key, self.hash, self.isShort) = (start, count, key, hash, isShort)
        }

        @inline(__always)
        init(_ range: Range<Int>, in bytes: UnsafeBufferPointer<UInt8>, cache: ByteStringTable) {
            start = range.lowerBound
            count = range.count
            let piece = bytes.baseAddress! + start
            isShort = count <= 8 && start + 8 <= bytes.count
            if isShort {
                key = UnsafeRawPointer(piece).loadUnaligned(as: UInt64.self) & (UInt64.max >> (64 - 8 * UInt64(count)))
                hash = ByteStringTable.hashShort(key, count)
            } else {
                key = 0
                hash = ByteStringTable.hash(piece, count)
            }
            cache.prefetch(hash: hash)
        }
    }

    private func growBuffer(to capacity: Int) {
        buffer.deallocate()
        bufferCapacity = capacity
        buffer = .allocate(capacity: capacity)
    }

    /// BPE on one piece; the result is left in `parts`.
    private func mergePiece(_ piece: UnsafeBufferPointer<UInt8>) {
        let byteTokens = tokenizer.byteTokens, merges = tokenizer.merges
        parts.removeAll(keepingCapacity: true)
        for byte in piece where byteTokens[Int(byte)] >= 0 { parts.append(byteTokens[Int(byte)]) }
        let n = parts.count
        if n <= 1 { return }
        ranks.removeAll(keepingCapacity: true)
        ranks.append(contentsOf: repeatElement(.max, count: n))
        var live = n
        parts.withUnsafeMutableBufferPointer { parts in
            ranks.withUnsafeMutableBufferPointer { ranks in
                // ranks[i]: the merge of parts[i] and parts[i + 1] as rank << 32 | merged
                // (UInt64.max: none). Merging shifts both arrays left by one.
                for i in 0..<(n - 1) { ranks[i] = merges.lookup(parts[i], parts[i + 1]) }
                while live > 1 {
                    var best = 0, bestRank = ranks[0] >> 32
                    for i in 1..<(live - 1) where ranks[i] >> 32 < bestRank {
                        best = i
                        bestRank = ranks[i] >> 32
                    }
                    if ranks[best] == .max { break }
                    parts[best] = Int32(truncatingIfNeeded: ranks[best])
                    for i in (best + 1)..<(live - 1) {
                        parts[i] = parts[i + 1]
                        ranks[i] = ranks[i + 1]
                    }
                    live -= 1
                    ranks[live - 1] = .max
                    if best > 0 { ranks[best - 1] = merges.lookup(parts[best - 1], parts[best]) }
                    if best < live - 1 { ranks[best] = merges.lookup(parts[best], parts[best + 1]) }
                }
            }
        }
        parts.removeLast(n - live)
    }
}
