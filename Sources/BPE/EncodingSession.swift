/// The working state of encoding: scratch buffers and a cache of pieces already encoded.
///
/// One session serves one thread at a time. The tokenizer keeps the sessions it has made in a
/// pool and lends one to each encode call, so the piece cache stays warm across calls (as
/// Hugging Face's BPE keeps a word cache) and threads never share one.
///
/// Performance notes (`gpt-bench tokenizer`, 12.4 MB of Shakespeare, one thread; this VM's
/// memory: a random read costs 8 ns within 1 MB, 60 ns at 4 MB, 106 ns at 8 MB):
/// - 3.2 million pieces, 77,566 distinct (GPT-2): a cache keyed by the piece's bytes answers
///   97.6% of them without BPE. It is a flat open-addressing table (ByteStringTable):
///   `[[UInt8]: [Int]]` costs an allocation per lookup.
/// - Every piece goes into the cache, whole tokens too: probing the cache, missing, then
///   probing the token table cost two probes for 85% of pieces (160 -> 260 MB/s).
/// - The scanner runs 16 pieces ahead of the lookups and prefetches their slots, so cache
///   misses overlap; a slot holds keys up to 16 bytes and 3 ids, so a lookup reads one line.
///   The ring of pending pieces must live on the stack: on the heap it ran 40% slower.
/// - New pieces wait in a batch of 256 and are resolved together: token-table probes
///   prefetched, BPE in lockstep with pair-table prefetches (BatchedMerge). Alone, each merge
///   waited out a memory access (o200k's pair table is 16 MB).
/// - Global tables in Swift cost a `swift_once` check per access (6% of the time here): the
///   scanner keeps a pointer to its class table instead.
/// - Keys of up to 8 bytes are made with one load and a mask when 8 bytes are readable: the
///   branch on the piece's length mispredicted often (118 -> 140 MB/s).
/// - OptionSet array literals (`[.letter, .number]`) in the scanner built a heap array per call:
///   constants instead took cl100k from 90 to 139 MB/s.
/// - Swift's run-time exclusivity checks on class properties read in the loop cost 15%: the
///   session's and tables' state is `@exclusivity(unchecked)` (one thread per session).
/// - Tried and not kept: huge pages for the tables (no change), a two-stage pipeline that also
///   prefetched token-table slots for cache misses (11% slower when warm).
public final class EncodingSession: @unchecked Sendable {
    unowned let tokenizer: Tokenizer
    /// Small for chat-sized texts; a large text reserves room for its pieces first (growing from
    /// small rehashed six times on a first pass over 12 MB).
    private let cache = ByteStringTable(expectedCount: 4096)
    // A session serves one thread at a time, so Swift's run-time exclusivity checks on its
    // state (a runtime call per access, 15% of encoding) are turned off.
    /// Pieces the cache lacked, waiting to be resolved together at the next flush.
    @exclusivity(unchecked) private var misses: [Miss] = []
    /// Their ids once resolved: misses[i]'s are missIDs[missStarts[i]..<missStarts[i + 1]].
    @exclusivity(unchecked) private var missIDs: [Int32] = []
    @exclusivity(unchecked) private var missStarts: [Int] = []
    private let batchedMerge = BatchedMerge()

    @exclusivity(unchecked) private var buffer = UnsafeMutablePointer<Int>.allocate(capacity: 4096)
    @exclusivity(unchecked) private var bufferCapacity = 4096

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
        // A long-lived session (a server's) would otherwise grow its cache with every distinct
        // piece it ever sees: past half a million (its table then 64 MB) it starts over.
        if cache.count > Self.cacheLimit { cache.removeAll() }
        reserveCache(forBytes: bytes.count)
        let cache = self.cache, pattern = tokenizer.preTokenizer
        // Ids collect in `buffer` and move to `ids` in blocks: appending one at a time costs a
        // uniqueness and capacity check each. A piece never gives more ids than it has bytes.
        var written = 0
        func flush() {
            if misses.isEmpty {
                ids.append(contentsOf: UnsafeBufferPointer(start: buffer, count: written))
            } else {
                resolveMisses()
                // Runs of ids as they are, and each placeholder replaced by its miss's ids.
                missIDs.withUnsafeBufferPointer { missIDs in
                    missStarts.withUnsafeBufferPointer { missStarts in
                        var runStart = 0
                        for k in 0..<written where buffer[k] < 0 {
                            ids.append(contentsOf: UnsafeBufferPointer(start: buffer + runStart, count: k - runStart))
                            let miss = -buffer[k] - 1
                            for j in missStarts[miss]..<missStarts[miss + 1] { ids.append(Int(missIDs[j])) }
                            runStart = k + 1
                        }
                        ids.append(contentsOf: UnsafeBufferPointer(start: buffer + runStart, count: written - runStart))
                    }
                }
                misses.removeAll(keepingCapacity: true)
            }
            written = 0
        }
        // Pieces are scanned `lookahead` ahead of their lookup, their cache slots prefetched, so
        // the misses of consecutive lookups overlap.
        var pieces = Pieces(bytes: bytes, pattern: pattern)
        // The ring lives on the stack (a tuple), where the optimiser keeps it apart from the
        // arrays and tables: on the heap, every store to it forced reloads (40% slower).
        let lookahead = 16
        var ringStorage = (PendingPiece.none, PendingPiece.none, PendingPiece.none, PendingPiece.none,
                           PendingPiece.none, PendingPiece.none, PendingPiece.none, PendingPiece.none,
                           PendingPiece.none, PendingPiece.none, PendingPiece.none, PendingPiece.none,
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
                // Not cached: resolved at the next flush together with the other misses (their
                // memory accesses overlap there). A placeholder, -(index + 1), holds the place.
                buffer[written] = -(misses.count + 1)
                written += 1
                misses.append(Miss(start: piece, count: count, hash: h))
                if misses.count == Self.missBatch { flush() }
            }
        }
        flush()
    }

    /// Makes room in the piece cache for the pieces of a text of `byteCount` bytes. English has
    /// about one distinct piece per 150 bytes of its first megabytes, fewer after (12 MB of
    /// Shakespeare has 84k): room for one per 256 bytes, growing once at most.
    func reserveCache(forBytes byteCount: Int) {
        cache.reserveCapacity(min(byteCount / 256, 1 << 17))
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

    /// The most pieces a session's cache keeps between encode calls. Its table then has 2^21
    /// 32-byte slots (64 MB), with room for as many pieces again before it doubles.
    static let cacheLimit = 1 << 19

    /// Misses resolved at a time (their placeholders wait in the output buffer meanwhile).
    private static let missBatch = 256

    /// A piece the cache lacked.
    private struct Miss {
        let start: UnsafePointer<UInt8>, count: Int, hash: UInt64
    }

    /// Finds the ids of every pending miss: whole tokens from the token table, the rest by BPE,
    /// all in one batch so that their table lookups (each a likely cache miss) overlap. Each
    /// goes into the cache.
    private func resolveMisses() {
        let tokenTable = tokenizer.tokenTable, wholePieceLookup = tokenizer.wholePieceLookup
        if wholePieceLookup { for miss in misses { tokenTable.prefetch(hash: miss.hash) } }
        // Whole tokens first; the other pieces go to BPE.
        var wholeTokens = [Int32](repeating: -1, count: misses.count)
        batchedMerge.begin(tokenizer: tokenizer)
        for (i, miss) in misses.enumerated() {
            if wholePieceLookup, let (values, _) = tokenTable.find(miss.start, miss.count, hash: miss.hash) {
                wholeTokens[i] = values.pointee
            } else {
                batchedMerge.add(UnsafeBufferPointer(start: miss.start, count: miss.count), tag: i)
            }
        }
        batchedMerge.run()
        missIDs.removeAll(keepingCapacity: true)
        missStarts.removeAll(keepingCapacity: true)
        for (i, miss) in misses.enumerated() {
            missStarts.append(missIDs.count)
            if wholeTokens[i] >= 0 {
                missIDs.append(wholeTokens[i])
            } else {
                missIDs.append(contentsOf: batchedMerge.result(tag: i))
            }
            // A piece can miss twice in one batch: the cache takes it once.
            let added = missIDs.count - missStarts[i]
            if cache.find(miss.start, miss.count, hash: miss.hash) == nil {
                missIDs.withUnsafeBufferPointer { ids in
                    cache.insert(miss.start, miss.count, hash: miss.hash, values: ids.baseAddress! + missStarts[i], valueCount: added)
                }
            }
        }
        missStarts.append(missIDs.count)
    }
}
