import Dispatch
import Synchronization

/// A byte-level BPE tokenizer: GPT-2's, tiktoken's (`r50k`, `cl100k_base`, `o200k_base`) and
/// those trained here.
///
/// Encoding splits the text with the pre-tokenizer, then inside each piece starts from one token
/// per byte and repeatedly joins the adjacent pair with the lowest merge rank (the leftmost on
/// ties) until no pair can merge:
///
///     "hello" -> [h, e, l, l, o] -> [he, l, l, o] -> [he, ll, o] -> [hell, o] -> [hello]
///
/// Special tokens (`<|endoftext|>`, `<|im_start|>`) are recognised only where the caller allows
/// them, as tiktoken's `allowed_special`; elsewhere they are ordinary text.
public final class Tokenizer: Sendable {
    public let preTokenizer: PreTokenizer
    /// id -> the bytes it stands for (empty for ids the vocabulary leaves unused).
    let tokenBytes: [[UInt8]]
    /// byte -> the id of the single-byte token.
    let byteTokens: [Int32]
    let merges: PairTable
    /// Special token text -> id.
    public let specialTokens: [String: Int]
    /// id -> special token text.
    let specialById: [Int: String]
    /// How the merges were given: ranks of a tiktoken file (any split of a token merges) or an
    /// explicit merge list (only the listed pairs merge).
    public let mergeSource: MergeSource

    public enum MergeSource: Sendable { case ranks, mergeList }

    /// Sessions not lent out at the moment (see `withSession`).
    private let idleSessions = Mutex<[EncodingSession]>([])

    /// The number of ids, special tokens included (one past the largest id).
    public var vocabularySize: Int { max(tokenBytes.count, (specialById.keys.max() ?? -1) + 1) }

    /// Token bytes -> id. Encoding asks it for each new piece when `wholePieceLookup` is set.
    let tokenTable: ByteStringTable
    /// Whether a piece that is itself a token encodes as that token without merging: tiktoken
    /// does this for rank files (where it is the same result), and Hugging Face with
    /// `ignore_merges` (where it can differ from merging).
    let wholePieceLookup: Bool

    /// Builds a tokenizer from each id's bytes and the merges.
    ///
    /// - Parameters:
    ///   - tokenBytes: the bytes of each id (index = id); every one of the 256 single bytes must
    ///     be among them.
    ///   - merges: `(left, right, merged)` ids in rank order (rank = position), or nil to derive
    ///     them from the ids as tiktoken does: a token's id is its rank, and any two tokens
    ///     whose bytes join into a token merge at that token's rank.
    init(tokenBytes: [[UInt8]], merges: [(Int32, Int32, Int32)]?, specialTokens: [String: Int],
         preTokenizer: PreTokenizer, ignoreMerges: Bool = false) throws {
        var byteTokens = [Int32](repeating: -1, count: 256)
        let tokenTable = ByteStringTable(expectedCount: tokenBytes.count)
        for (id, bytes) in tokenBytes.enumerated() where !bytes.isEmpty {
            if bytes.count == 1 && byteTokens[Int(bytes[0])] < 0 { byteTokens[Int(bytes[0])] = Int32(id) }
            bytes.withUnsafeBufferPointer { b in
                let h = ByteStringTable.hash(b.baseAddress!, b.count)
                if tokenTable.find(b.baseAddress!, b.count, hash: h) == nil {
                    var value = Int32(id)
                    tokenTable.insert(b.baseAddress!, b.count, hash: h, values: &value, valueCount: 1)
                }
            }
        }
        // Some vocabularies (SmolLM2's) lack tokens for bytes that valid text rarely or never has
        // (controls, 0xC0, 0xF5-0xFF). Such bytes encode to nothing, as Hugging Face's BPE drops
        // characters it has no token for; a vocabulary missing a printable ASCII byte is refused.
        if let missing = (0x20..<0x7F).first(where: { byteTokens[$0] < 0 }) {
            throw TokenizerError("the vocabulary has no token for the byte 0x\(String(missing, radix: 16, uppercase: true)); byte-level BPE needs every byte")
        }
        guard tokenBytes.count < PairTable.idLimit, (merges?.count ?? 0) < PairTable.idLimit else {
            throw TokenizerError("vocabularies and merge lists of \(PairTable.idLimit) entries or more are not supported")
        }
        let table: PairTable
        if let merges {
            table = PairTable(expectedCount: merges.count)
            for (rank, merge) in merges.enumerated() {
                table.insert(left: merge.0, right: merge.1, rank: Int32(rank), merged: merge.2)
            }
        } else {
            // Every split of every token into two tokens (collected first, so the table is
            // sized for them: its size is its speed), in slices of ids on all cores: 2 x 10 ms
            // of gpt2's 25 ms load.
            let sliceCount = 16, sliceLength = (tokenBytes.count + sliceCount - 1) / sliceCount
            let slices = Mutex([[(left: Int32, right: Int32, id: Int32)]](repeating: [], count: sliceCount))
            DispatchQueue.concurrentPerform(iterations: sliceCount) { slice in
                func lookup(_ bytes: UnsafeBufferPointer<UInt8>) -> Int32? {
                    tokenTable.find(bytes.baseAddress!, bytes.count,
                                    hash: ByteStringTable.hash(bytes.baseAddress!, bytes.count))?.0.pointee
                }
                var pairs: [(left: Int32, right: Int32, id: Int32)] = []
                for id in (slice * sliceLength)..<min(tokenBytes.count, (slice + 1) * sliceLength) where tokenBytes[id].count >= 2 {
                    tokenBytes[id].withUnsafeBufferPointer { b in
                        for split in 1..<b.count {
                            if let left = lookup(UnsafeBufferPointer(rebasing: b[..<split])),
                               let right = lookup(UnsafeBufferPointer(rebasing: b[split...])) {
                                pairs.append((left, right, Int32(id)))
                            }
                        }
                    }
                }
                slices.withLock { $0[slice] = pairs }
            }
            let pairs = slices.withLock { $0 }
            table = PairTable(expectedCount: pairs.reduce(0) { $0 + $1.count })
            for pair in pairs.joined() { table.insert(left: pair.left, right: pair.right, rank: pair.id, merged: pair.id) }
        }
        self.tokenBytes = tokenBytes
        self.byteTokens = byteTokens
        self.merges = table
        self.tokenTable = tokenTable
        self.wholePieceLookup = merges == nil || ignoreMerges
        self.specialTokens = specialTokens
        self.specialById = Dictionary(specialTokens.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        self.preTokenizer = preTokenizer
        self.mergeSource = merges == nil ? .ranks : .mergeList
    }

    // MARK: encoding

    /// The ids of `text` with special tokens treated as plain text (tiktoken's `encode_ordinary`).
    public func encodeOrdinary(_ text: String) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3)
        withSession { $0.encodeOrdinary(text, into: &ids) }
        return ids
    }

    /// Lends `body` an idle session from the pool (making one when none is idle).
    public func withSession<Result>(_ body: (EncodingSession) throws -> Result) rethrows -> Result {
        let session = idleSessions.withLock { $0.popLast() } ?? EncodingSession(tokenizer: self)
        defer { idleSessions.withLock { $0.append(session) } }
        return try body(session)
    }

    /// Which special tokens `encode` recognises.
    public enum AllowedSpecial: Sendable {
        case none
        case all
        case some(Set<String>)
    }

    /// The ids of `text`, matching the allowed special tokens (longest first where one is a
    /// prefix of another) and encoding the text between them as ordinary text.
    public func encode(_ text: String, allowedSpecial: AllowedSpecial = .none) -> [Int] {
        let allowed: [(bytes: [UInt8], id: Int)]
        switch allowedSpecial {
        case .none: allowed = []
        case .all: allowed = specialTokens.map { (Array($0.key.utf8), $0.value) }
        case .some(let names): allowed = specialTokens.filter { names.contains($0.key) }.map { (Array($0.key.utf8), $0.value) }
        }
        if allowed.isEmpty { return encodeOrdinary(text) }
        let candidates = allowed.sorted { $0.bytes.count > $1.bytes.count }
        var ids: [Int] = []
        var text = text
        withSession { session in text.withUTF8 { bytes in
            var segmentStart = 0, i = 0
            while i < bytes.count {
                if let match = candidates.first(where: { startsWith(bytes, at: i, $0.bytes) }) {
                    session.encodeOrdinary(UnsafeBufferPointer(rebasing: bytes[segmentStart..<i]), into: &ids)
                    ids.append(match.id)
                    i += match.bytes.count
                    segmentStart = i
                } else {
                    i += 1
                }
            }
            session.encodeOrdinary(UnsafeBufferPointer(rebasing: bytes[segmentStart...]), into: &ids)
        } }
        return ids
    }

    /// The id of the token whose text is exactly `text` (special tokens included), or nil.
    public func id(of text: String) -> Int? {
        if let special = specialTokens[text] { return special }
        return Array(text.utf8).withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return nil }
            return tokenTable.find(base, b.count, hash: ByteStringTable.hash(base, b.count)).map { Int($0.0.pointee) }
        }
    }

    /// The token that separates documents (`<|endoftext|>`, `<|end_of_text|>`, `</s>` or `<s>`,
    /// the first the vocabulary has): what a text with no context starts from.
    public var endOfTextToken: Int? {
        ["<|endoftext|>", "<|end_of_text|>", "</s>", "<s>"].lazy.compactMap { self.id(of: $0) }.first
    }

    // MARK: decoding

    /// The bytes of `ids` joined. Throws for an id that is not in the vocabulary.
    public func decodeBytes(_ ids: [Int]) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for (position, id) in ids.enumerated() {
            try appendBytes(of: id, to: &bytes, position: position)
        }
        return bytes
    }

    /// The text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD, as tiktoken's
    /// `decode(errors="replace")`.
    public func decode(_ ids: [Int]) throws -> String {
        String(decoding: try decodeBytes(ids), as: UTF8.self)
    }

    /// The bytes of one token.
    public func bytes(of id: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try appendBytes(of: id, to: &bytes, position: nil)
        return bytes
    }

    @inline(__always)
    func appendBytes(of id: Int, to bytes: inout [UInt8], position: Int?) throws {
        if id >= 0 && id < tokenBytes.count && !tokenBytes[id].isEmpty {
            bytes.append(contentsOf: tokenBytes[id])
        } else if let special = specialById[id] {
            bytes.append(contentsOf: special.utf8)
        } else {
            let at = position.map { " at position \($0)" } ?? ""
            throw TokenizerError("token id \(id)\(at) is not in the vocabulary (0..<\(vocabularySize))")
        }
    }
}

@inline(__always)
private func startsWith(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int, _ prefix: [UInt8]) -> Bool {
    guard i + prefix.count <= bytes.count else { return false }
    for k in 0..<prefix.count where bytes[i + k] != prefix[k] { return false }
    return true
}
