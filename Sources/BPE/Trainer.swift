/// Learns byte-level BPE merges from text, as GPT-2's tokenizer was made: split the text with
/// the pre-tokenizer, start every piece from its bytes (ids 0-255), and repeatedly merge the most
/// frequent adjacent pair into a new token until the vocabulary is full.
///
///     pieces {"hug": 10, "pug": 5, "hugs": 5}: pair counts {(h,u): 15, (u,g): 20, (p,u): 5, (g,s): 5}
///     -> merge (u,g) as 256 -> {(h,ug): 15, (p,ug): 5, (ug,s): 5} -> merge (h,ug) as 257 -> ...
///
/// Counts are kept incrementally: a merge touches only the pieces that hold the pair (an index
/// from pair to pieces) and adjusts the counts of the pairs around each occurrence; a max-heap
/// with lazy deletion yields the next pair. Ties go to the smaller (left, right) id pair, so the
/// same text always gives the same merges.
public struct BPETrainer {
    public var vocabularySize: Int
    public var specialTokens: [String]
    public var preTokenizer: PreTokenizer

    /// `vocabularySize` counts the 256 byte tokens, the merges and the special tokens, which
    /// take the last ids.
    public init(vocabularySize: Int, specialTokens: [String] = [], preTokenizer: PreTokenizer = .gpt2) {
        self.vocabularySize = vocabularySize
        self.specialTokens = specialTokens
        self.preTokenizer = preTokenizer
    }

    /// Piece bytes -> index in `words`, and the words with their counts.
    private struct PieceCounts {
        let table = ByteStringTable(expectedCount: 1 << 16)
        var words: [[Int32]] = []
        var counts: [Int] = []

        mutating func add(_ piece: UnsafePointer<UInt8>, _ length: Int) {
            let h = ByteStringTable.hash(piece, length)
            if let (values, _) = table.find(piece, length, hash: h) {
                counts[Int(values[0])] += 1
                return
            }
            var index = Int32(words.count)
            table.insert(piece, length, hash: h, values: &index, valueCount: 1)
            words.append((0..<length).map { Int32(piece[$0]) })
            counts.append(1)
        }
    }

    public func train(texts: [String]) throws -> Tokenizer {
        let mergeCount = vocabularySize - 256 - specialTokens.count
        guard mergeCount >= 0 else {
            throw TokenizerError("vocabulary size \(vocabularySize) is below 256 byte tokens + \(specialTokens.count) special tokens")
        }
        guard Set(specialTokens).count == specialTokens.count else {
            throw TokenizerError("a special token is listed twice")
        }
        // 1. Count the distinct pieces.
        var pieces = PieceCounts()
        for text in texts {
            var text = text
            text.withUTF8 { bytes in
                guard let base = bytes.baseAddress else { return }
                preTokenizer.forEachPiece(in: bytes) { range in pieces.add(base + range.lowerBound, range.count) }
            }
        }
        var words = pieces.words
        let counts = pieces.counts

        // 2. Pair counts and the pieces each pair occurs in.
        var pairCounts: [UInt64: Int] = [:]
        var occurrences: [UInt64: [Int32]] = [:]
        for (w, word) in words.enumerated() where word.count > 1 {
            for i in 0..<(word.count - 1) {
                let pair = Self.key(word[i], word[i + 1])
                pairCounts[pair, default: 0] += counts[w]
                if occurrences[pair]?.last != Int32(w) { occurrences[pair, default: []].append(Int32(w)) }
            }
        }
        var heap = PairHeap()
        for (pair, count) in pairCounts { heap.push(count: count, pair: pair) }

        // 3. Merge.
        var tokenBytes: [[UInt8]] = (0..<256).map { [UInt8($0)] }
        var idsByBytes = Dictionary(uniqueKeysWithValues: tokenBytes.enumerated().map { ($1, Int32($0)) })
        var merges: [(Int32, Int32, Int32)] = []
        while tokenBytes.count < 256 + mergeCount, let (count, pair) = heap.pop() {
            guard pairCounts[pair] == count else { continue }  // stale entry
            let left = Int32(truncatingIfNeeded: pair >> 32), right = Int32(truncatingIfNeeded: pair)
            // Two merge paths can spell the same bytes ("ab"+"c", "a"+"bc"): one id, as HF does.
            let bytes = tokenBytes[Int(left)] + tokenBytes[Int(right)]
            let merged: Int32
            if let existing = idsByBytes[bytes] {
                merged = existing
            } else {
                merged = Int32(tokenBytes.count)
                tokenBytes.append(bytes)
                idsByBytes[bytes] = merged
            }
            merges.append((left, right, merged))
            var changed: [UInt64: Int] = [:]
            for w in occurrences[pair] ?? [] {
                let freq = counts[Int(w)]
                var word = words[Int(w)]
                var i = 0
                var touched = false
                while i < word.count - 1 {
                    guard word[i] == left && word[i + 1] == right else {
                        i += 1
                        continue
                    }
                    touched = true
                    if i > 0 {
                        changed[Self.key(word[i - 1], left), default: 0] -= freq
                        changed[Self.key(word[i - 1], merged), default: 0] += freq
                    }
                    if i + 2 < word.count {
                        changed[Self.key(right, word[i + 2]), default: 0] -= freq
                        changed[Self.key(merged, word[i + 2]), default: 0] += freq
                    }
                    changed[pair, default: 0] -= freq
                    word[i] = merged
                    word.remove(at: i + 1)
                    i += 1
                }
                if touched {
                    words[Int(w)] = word
                    for j in 0..<max(0, word.count - 1) where word[j] == merged || word[j + 1] == merged {
                        let newPair = Self.key(word[j], word[j + 1])
                        if occurrences[newPair]?.last != w { occurrences[newPair, default: []].append(w) }
                    }
                }
            }
            occurrences[pair] = nil
            // Apply the changes in a fixed order so the heap sees the same sequence every run.
            for (changedPair, delta) in changed.sorted(by: { $0.key < $1.key }) where delta != 0 {
                let updated = pairCounts[changedPair, default: 0] + delta
                pairCounts[changedPair] = updated
                if updated > 0 { heap.push(count: updated, pair: changedPair) }
            }
        }
        var specials: [String: Int] = [:]
        for token in specialTokens {
            specials[token] = tokenBytes.count + specials.count
        }
        return try Tokenizer(tokenBytes: tokenBytes, merges: merges, specialTokens: specials,
                             preTokenizer: preTokenizer)
    }

    @inline(__always)
    static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }
}

/// A max-heap of (count, pair); among equal counts the smaller pair key comes first.
struct PairHeap {
    private var items: [(count: Int, pair: UInt64)] = []

    private static func before(_ a: (count: Int, pair: UInt64), _ b: (count: Int, pair: UInt64)) -> Bool {
        a.count != b.count ? a.count > b.count : a.pair < b.pair
    }

    mutating func push(count: Int, pair: UInt64) {
        items.append((count, pair))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.before(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (count: Int, pair: UInt64)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < items.count && Self.before(items[l], items[best]) { best = l }
                if r < items.count && Self.before(items[r], items[best]) { best = r }
                if best == i { break }
                items.swapAt(i, best)
                i = best
            }
        }
        return top
    }
}
