/// Splits text into the pieces BPE merges within, exactly as a tokenizer's regular expression
/// does, but as a hand-written scanner over UTF-8 (no regex engine on the hot path).
///
/// - `gpt2` (r50k/p50k, GPT-2):
///   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - `cl100k` (GPT-3.5/4): `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|
///   ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
/// - `o200k` (GPT-4o): letter runs split by case (`[^\r\n\p{L}\p{N}]?[upper]*[lower]+('s|...)?`
///   and `...?[upper]+[lower]*('s|...)?`), `\p{N}{1,3}`, ` ?[^\s\p{L}\p{N}]+[\r\n/]*`,
///   `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`
///
///     PreTokenizer.gpt2.split("Hello world's  end")  ->  ["Hello", " world", "'s", " ", " end"]
///
/// Each alternative is tried in the pattern's order at each position, with the same backtracking
/// a regex engine does (for example `\s+(?!\S)` leaves the last space of a run to the next word).
public enum PreTokenizer: String, Sendable, CaseIterable {
    case gpt2
    case cl100k
    case o200k
    /// SmolLM's: every digit (\p{N}) is a piece of its own, and the text between digits is split
    /// with GPT-2's pattern (Hugging Face: Digits(individual_digits) then ByteLevel).
    case smollm

    /// The regular expression this scanner implements (as tiktoken and Hugging Face write it).
    public var pattern: String {
        switch self {
        case .gpt2:
            return #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        case .cl100k:
            return #"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"#
        case .smollm:
            return #"\p{N}"# + " then " + PreTokenizer.gpt2.pattern
        case .o200k:
            return [
                #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"#,
                #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"#,
                #"\p{N}{1,3}"#,
                #" ?[^\s\p{L}\p{N}]+[\r\n/]*"#,
                #"\s*[\r\n]+"#,
                #"\s+(?!\S)"#,
                #"\s+"#,
            ].joined(separator: "|")
        }
    }

    /// The pattern as Hugging Face `tokenizers` must be given it. Its regex engine (Oniguruma,
    /// Ruby syntax) reads `{1,3}+` as "one or more groups of 1-3", not as possessive, so cl100k's
    /// possessive quantifiers become atomic groups, which mean the same.
    public var huggingFacePattern: String {
        switch self {
        case .cl100k:
            return #"'(?i:[sdmt]|ll|ve|re)|(?>[^\r\n\p{L}\p{N}]?)(?>\p{L}+)|(?>\p{N}{1,3})| ?(?>[^\s\p{L}\p{N}]+)(?>[\r\n]*)|(?>\s+)$|\s*[\r\n]|\s+(?!\S)|\s"#
        case .gpt2, .o200k, .smollm:
            return pattern
        }
    }

    /// The pieces of `text`, as strings (for tests and inspection; encoding uses `forEachPiece`).
    public func split(_ text: String) -> [String] {
        var text = text
        return text.withUTF8 { bytes in
            var pieces: [String] = []
            forEachPiece(in: bytes) { range in
                pieces.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self))
            }
            return pieces
        }
    }

    /// Calls `body` with the byte range of each piece of valid UTF-8 `bytes`, in order; the
    /// ranges cover the input without gaps.
    @inline(__always)
    public func forEachPiece(in bytes: UnsafeBufferPointer<UInt8>, _ body: (Range<Int>) -> Void) {
        var pieces = Pieces(bytes: bytes, pattern: self)
        while let range = pieces.next() { body(range) }
    }
}

/// The pieces of one UTF-8 buffer, in order.
struct Pieces {
    let pattern: PreTokenizer
    var scanner: Scanner
    let base: UnsafeBufferPointer<UInt8>
    var start = 0
    /// smollm: where the current digit-free segment ends (the scanner stops there).
    var segmentEnd = 0

    init(bytes: UnsafeBufferPointer<UInt8>, pattern: PreTokenizer) {
        self.pattern = pattern
        base = bytes
        scanner = Scanner(bytes: bytes)
    }

    @inline(__always)
    mutating func next() -> Range<Int>? {
        guard start < base.count else { return nil }
        let end: Int
        if pattern == .smollm {
            end = nextSmolLMPiece()
        } else {
            end = scanner.piece(at: start, pattern: pattern)
        }
        defer { start = end }
        return start..<end
    }

    private mutating func nextSmolLMPiece() -> Int {
        let full = Scanner(bytes: base)
        let (c, length) = full.classes(at: start)
        if c.contains(.number) { return start + length }
        if start >= segmentEnd {
            segmentEnd = full.run(from: start, none: .number)
            scanner = Scanner(bytes: UnsafeBufferPointer(rebasing: base[0..<segmentEnd]))
        }
        return scanner.gpt2Piece(at: start)
    }
}

/// The scanner over one UTF-8 buffer. Positions are byte offsets at scalar boundaries.
struct Scanner {
    let bytes: UnsafeBufferPointer<UInt8>
    let count: Int
    let table = CharacterClasses.bmpTable

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        count = bytes.count
    }

    /// The end of the piece that starts at `i`.
    @inline(__always)
    func piece(at i: Int, pattern: PreTokenizer) -> Int {
        switch pattern {
        case .gpt2: return gpt2Piece(at: i)
        case .cl100k: return cl100kPiece(at: i)
        case .o200k: return o200kPiece(at: i)
        case .smollm: preconditionFailure("smollm pieces depend on segments: use Pieces")
        }
    }

    // MARK: scalars and classes

    /// The scalar value at byte offset `i` and its length in bytes.
    @inline(__always)
    func scalar(at i: Int) -> (value: UInt32, length: Int) {
        let b0 = UInt32(bytes[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 {
            return ((b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F), 3)
        }
        return ((b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
                | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F), 4)
    }

    @inline(__always)
    func classes(at i: Int) -> (classes: CharacterClasses, length: Int) {
        let b0 = bytes[i]
        if b0 < 0x80 { return (CharacterClasses(rawValue: table[Int(b0)]), 1) }
        let (value, length) = scalar(at: i)
        if value < 0x10000 { return (CharacterClasses(rawValue: table[Int(value)]), length) }
        return (CharacterClasses.of(value), length)
    }

    /// Not whitespace, not a letter, not a number: `[^\s\p{L}\p{N}]`.
    @inline(__always)
    static func isOther(_ c: CharacterClasses) -> Bool {
        c.isDisjoint(with: notOther)
    }

    /// The end of the run of scalars from `i` that have some class in `mask` (or, with
    /// `none`, no class in it). ASCII bytes take a fast path: one table load per byte.
    @inline(__always)
    func run(from i: Int, any mask: CharacterClasses) -> Int {
        var j = i
        while j < count {
            let b = bytes[j]
            if b < 0x80 {
                if table[Int(b)] & mask.rawValue == 0 { break }
                j += 1
            } else {
                let (c, length) = classes(at: j)
                if c.isDisjoint(with: mask) { break }
                j += length
            }
        }
        return j
    }

    @inline(__always)
    func run(from i: Int, none mask: CharacterClasses) -> Int {
        var j = i
        while j < count {
            let b = bytes[j]
            if b < 0x80 {
                if table[Int(b)] & mask.rawValue != 0 { break }
                j += 1
            } else {
                let (c, length) = classes(at: j)
                if !c.isDisjoint(with: mask) { break }
                j += length
            }
        }
        return j
    }

    /// The end of the run of letters from `j`: 8 ASCII bytes at a time while they are all
    /// letters (no mispredicted exit per byte), then the general loop for what follows a
    /// non-ASCII byte.
    @inline(__always)
    func letterRun(from start: Int) -> Int {
        var j = start
        let raw = UnsafeRawPointer(bytes.baseAddress!)
        while j + 8 <= count {
            // Bit 7 of each byte of `letters` is set when that byte is an ASCII letter:
            // y = byte & 0x7F | 0x20 (lower case, no carries), then y >= 'a' and y <= 'z'.
            let word = raw.loadUnaligned(fromByteOffset: j, as: UInt64.self)
            let y = (word & 0x7F7F_7F7F_7F7F_7F7F) | 0x2020_2020_2020_2020
            let atLeastA = y &+ 0x1F1F_1F1F_1F1F_1F1F
            let aboveZ = y &+ 0x0505_0505_0505_0505
            let letters = atLeastA & ~aboveZ & ~word & 0x8080_8080_8080_8080
            if letters != 0x8080_8080_8080_8080 {
                j += (~letters & 0x8080_8080_8080_8080).trailingZeroBitCount / 8
                return j < count && bytes[j] >= 0x80 ? run(from: j, any: .letter) : j
            }
            j += 8
        }
        return run(from: j, any: .letter)
    }

    /// `[^\s\p{L}\p{N}]`'s complement: the classes an "other" scalar has none of.
    static let notOther: CharacterClasses = [.whitespace, .letter, .number]
    // Class sets as constants: an OptionSet array literal in a hot path builds an array on the
    // heap each time (19% of cl100k encoding went to allocating and freeing them).
    static let newlineOrNumber: CharacterClasses = [.newline, .number]
    static let newlineLetterOrNumber: CharacterClasses = [.newline, .letter, .number]

    /// The start of the scalar that ends at byte offset `end` (stepping over continuation bytes).
    @inline(__always)
    func previousBoundary(before end: Int) -> Int {
        var j = end - 1
        while j > 0 && bytes[j] & 0xC0 == 0x80 { j -= 1 }
        return j
    }

    // MARK: contractions

    /// 's 't 'm 'd (1 letter) or 'll 've 're (2 letters) at `i`, case-sensitive as GPT-2;
    /// the end of the contraction or nil.
    @inline(__always)
    func contraction(at i: Int, ignoringCase: Bool) -> Int? {
        guard i + 1 < count, bytes[i] == UInt8(ascii: "'") else { return nil }
        let (first, firstLength) = scalar(at: i + 1)
        let a = ignoringCase ? lowercased(first) : first
        switch a {
        case 0x73, 0x74, 0x6D, 0x64:  // s t m d
            return i + 1 + firstLength
        case 0x6C, 0x76, 0x72:  // l v r: need ll, ve, re
            let second = i + 1 + firstLength
            guard second < count else { return nil }
            let (next, nextLength) = scalar(at: second)
            let b = ignoringCase ? lowercased(next) : next
            let matches = (a == 0x6C && b == 0x6C) || (a == 0x76 && b == 0x65) || (a == 0x72 && b == 0x65)
            return matches ? second + nextLength : nil
        default:
            return nil
        }
    }

    /// Simple case folding for the letters of the contractions: ASCII, and ſ (U+017F), which
    /// folds to s under Unicode rules (the regex engines' `(?i)`).
    @inline(__always)
    func lowercased(_ value: UInt32) -> UInt32 {
        if value >= 0x41 && value <= 0x5A { return value + 0x20 }
        if value == 0x17F { return 0x73 }
        return value
    }

    // MARK: whitespace endings shared by the patterns

    /// For a whitespace run [i, runEnd) followed by non-whitespace: `\s+(?!\S)` keeps all but the
    /// last scalar when the run has two or more; otherwise the single scalar (`\s+` or `\s`).
    @inline(__always)
    func whitespaceBeforeWord(at i: Int, runEnd: Int) -> Int {
        let last = previousBoundary(before: runEnd)
        return last > i ? last : runEnd
    }

    /// The end of the last \r or \n in [i, runEnd), or nil: `\s*[\r\n]+`.
    @inline(__always)
    func lastNewlineEnd(from i: Int, runEnd: Int) -> Int? {
        var j = runEnd - 1
        while j >= i {
            if bytes[j] == 0x0A || bytes[j] == 0x0D { return j + 1 }
            j -= 1
        }
        return nil
    }

    // MARK: the patterns

    @inline(__always)
    func gpt2Piece(at i: Int) -> Int {
        // ASCII words, " words", numbers and punctuation, most of English, without the general
        // path's scalar decoding: the class of each byte is one table load.
        let b0 = bytes[i]
        if b0 < 0x80 && b0 != 0x27 {
            let t0 = CharacterClasses(rawValue: table[Int(b0)])
            if t0.contains(.letter) { return letterRun(from: i + 1) }
            if b0 == 0x20 && i + 1 < count && bytes[i + 1] < 0x80 {
                let t1 = CharacterClasses(rawValue: table[Int(bytes[i + 1])])
                if t1.contains(.letter) { return letterRun(from: i + 2) }
                if t1.contains(.number) { return run(from: i + 2, any: .number) }
                if t1.isDisjoint(with: Self.notOther) { return run(from: i + 2, none: Self.notOther) }
            } else if t0.contains(.number) {
                return run(from: i + 1, any: .number)
            } else if t0.isDisjoint(with: Self.notOther) {
                return run(from: i + 1, none: Self.notOther)
            }
        }
        if let end = contraction(at: i, ignoringCase: false) { return end }
        var start = i, c = classes(at: i).classes
        if bytes[i] == 0x20 && i + 1 < count {
            let (c1, _) = classes(at: i + 1)
            if !c1.contains(.whitespace) {
                start = i + 1
                c = c1
            }
        }
        if c.contains(.letter) { return run(from: start, any: .letter) }
        if c.contains(.number) { return run(from: start, any: .number) }
        if Self.isOther(c) { return run(from: start, none: Self.notOther) }
        let runEnd = run(from: i, any: .whitespace)
        if runEnd == count { return count }
        return whitespaceBeforeWord(at: i, runEnd: runEnd)
    }

    @inline(__always)
    func cl100kPiece(at i: Int) -> Int {
        if let end = contraction(at: i, ignoringCase: true) { return end }
        let (c0, l0) = classes(at: i)
        // [^\r\n\p{L}\p{N}]?+\p{L}++
        if c0.contains(.letter) { return letterRun(from: i + l0) }
        if c0.isDisjoint(with: Self.newlineOrNumber), i + l0 < count,
           classes(at: i + l0).classes.contains(.letter) {
            return letterRun(from: i + l0)
        }
        // \p{N}{1,3}+
        if c0.contains(.number) { return upToThreeNumbers(from: i + l0) }
        // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
        if let end = punctuation(at: i, c0, trailingSlash: false) { return end }
        // Whitespace: \s++$ | \s*[\r\n] | \s+(?!\S) | \s
        let runEnd = run(from: i, any: .whitespace)
        if runEnd == count { return count }
        if let end = lastNewlineEnd(from: i, runEnd: runEnd) { return end }
        return whitespaceBeforeWord(at: i, runEnd: runEnd)
    }

    @inline(__always)
    func o200kPiece(at i: Int) -> Int {
        if bytes[i] < 0x80, let end = o200kASCIIPiece(at: i) { return end }
        return o200kGeneralPiece(at: i)
    }

    /// o200k's pieces in general (kept out of line so the ASCII fast path inlines small).
    @inline(never)
    func o200kGeneralPiece(at i: Int) -> Int {
        let (c0, l0) = classes(at: i)
        // The optional prefix [^\r\n\p{L}\p{N}] is tried consumed first, then not (which
        // matters only for a mark: it is outside \p{L} yet inside both case classes).
        let afterPrefix = c0.isDisjoint(with: Self.newlineLetterOrNumber) ? i + l0 : -1
        if afterPrefix >= 0, let end = lowerCaseWord(at: afterPrefix) { return contractionOrSelf(end) }
        if let end = lowerCaseWord(at: i) { return contractionOrSelf(end) }
        if afterPrefix >= 0, let end = upperCaseWord(at: afterPrefix) { return contractionOrSelf(end) }
        if let end = upperCaseWord(at: i) { return contractionOrSelf(end) }
        // \p{N}{1,3}
        if c0.contains(.number) { return upToThreeNumbers(from: i + l0) }
        // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
        if let end = punctuation(at: i, c0, trailingSlash: true) { return end }
        return o200kWhitespace(at: i)
    }

    /// o200k's whitespace alternatives at `i`: `\s*[\r\n]+ | \s+(?!\S) | \s+`.
    @inline(__always)
    func o200kWhitespace(at i: Int) -> Int {
        let runEnd = run(from: i, any: .whitespace)
        if let end = lastNewlineEnd(from: i, runEnd: runEnd) { return end }
        if runEnd == count { return count }
        return whitespaceBeforeWord(at: i, runEnd: runEnd)
    }

    /// The end of at most three number scalars, the first of which ends at `j` (`\p{N}{1,3}`).
    @inline(__always)
    func upToThreeNumbers(from j: Int) -> Int {
        var j = j, digits = 1
        while digits < 3 && j < count {
            let (c, length) = classes(at: j)
            guard c.contains(.number) else { break }
            j += length
            digits += 1
        }
        return j
    }

    /// ` ?[^\s\p{L}\p{N}]+` then a run of \r and \n (and `/` for o200k), or nil when `i`
    /// starts no such piece. `c0` is the classes of the scalar at `i`.
    @inline(__always)
    func punctuation(at i: Int, _ c0: CharacterClasses, trailingSlash: Bool) -> Int? {
        var start = -1
        if Self.isOther(c0) {
            start = i
        } else if bytes[i] == 0x20 && i + 1 < count && Self.isOther(classes(at: i + 1).classes) {
            start = i + 1
        }
        guard start >= 0 else { return nil }
        var j = run(from: start, none: Self.notOther)
        while j < count && (bytes[j] == 0x0A || bytes[j] == 0x0D || (trailingSlash && bytes[j] == 0x2F)) { j += 1 }
        return j
    }

    /// o200k's pieces that start with an ASCII byte followed by another, or nil to take the
    /// general path: a word of ASCII letters, optionally after one prefix byte such as a space,
    /// split by case (an upper-case run then a lower-case run: "Hello", "HTTPServer" ->
    /// "HTTPS"), with its contraction; punctuation; numbers; whitespace. A word that runs on into a non-ASCII
    /// scalar may continue (marks, accented letters): nil.
    @inline(__always)
    func o200kASCIIPiece(at i: Int) -> Int? {
        let b0 = bytes[i]
        var s = i
        if !isASCIILetter(b0) {
            guard i + 1 < count, bytes[i + 1] < 0x80 else { return nil }
            let t0 = CharacterClasses(rawValue: table[Int(b0)]), b1 = bytes[i + 1]
            if isASCIILetter(b1) && t0.isDisjoint(with: Self.newlineLetterOrNumber) {
                s = i + 1
            } else if Self.isOther(t0) || (b0 == 0x20 && Self.isOther(CharacterClasses(rawValue: table[Int(b1)]))) {
                // No letter follows, so neither word alternative matches: ` ?[^\s\p{L}\p{N}]+[\r\n/]*`.
                var j = run(from: b0 == 0x20 ? i + 1 : i, none: Self.notOther)
                while j < count && (bytes[j] == 0x0A || bytes[j] == 0x0D || bytes[j] == 0x2F) { j += 1 }
                return j
            } else if t0.contains(.number) {
                return upToThreeNumbers(from: i + 1)
            } else if t0.contains(.whitespace) {
                // No letter follows (an ASCII non-letter cannot start either case run).
                return o200kWhitespace(at: i)
            } else {
                return nil
            }
        }
        let end = upperThenLowerRun(from: s)
        guard end < count else { return end }
        if bytes[end] >= 0x80 { return nil }
        return bytes[end] == 0x27 ? contractionOrSelf(end) : end
    }

    /// The end of `[A-Z]*[a-z]*` from `s`: one 8-byte load answers for words that end within
    /// it (most do), with no branch per byte.
    @inline(__always)
    func upperThenLowerRun(from s: Int) -> Int {
        guard s + 8 <= count else { return caseRun(from: caseRun(from: s, upper: true), upper: false) }
        let word = UnsafeRawPointer(bytes.baseAddress! + s).loadUnaligned(as: UInt64.self)
        let upper = Self.bytesInRange(word, first: 0x41), lower = Self.bytesInRange(word, first: 0x61)
        let highBits: UInt64 = 0x8080_8080_8080_8080
        // Bit 7 of the first byte that is not upper case (64: all eight are).
        let upperEnd = (~upper & highBits).trailingZeroBitCount
        if upperEnd == 64 { return caseRun(from: caseRun(from: s + 8, upper: true), upper: false) }
        let lowerEnd = (~lower & highBits & (UInt64.max << UInt64(upperEnd - 7))).trailingZeroBitCount
        if lowerEnd == 64 { return caseRun(from: s + 8, upper: false) }
        return s + lowerEnd / 8
    }

    /// Bit 7 of each byte set where that byte is an ASCII letter in first...first + 25: adding
    /// 0x80 - first sets bit 7 from `first` up, adding 0x80 - (first + 26) from past the end.
    @inline(__always)
    static func bytesInRange(_ word: UInt64, first: UInt64) -> UInt64 {
        let y = word & 0x7F7F_7F7F_7F7F_7F7F
        let fromFirst = (0x80 - first) &* 0x0101_0101_0101_0101
        let pastLast = (0x80 - first - 26) &* 0x0101_0101_0101_0101
        return (y &+ fromFirst) & ~(y &+ pastLast) & ~word & 0x8080_8080_8080_8080
    }

    /// The end of the run of ASCII upper-case (or lower-case) letters from `start`, 8 bytes at
    /// a time.
    @inline(__always)
    func caseRun(from start: Int, upper: Bool) -> Int {
        var j = start
        let raw = UnsafeRawPointer(bytes.baseAddress!)
        let first: UInt64 = upper ? 0x41 : 0x61
        while j + 8 <= count {
            let inRange = Self.bytesInRange(raw.loadUnaligned(fromByteOffset: j, as: UInt64.self), first: first)
            if inRange != 0x8080_8080_8080_8080 {
                return j + (~inRange & 0x8080_8080_8080_8080).trailingZeroBitCount / 8
            }
            j += 8
        }
        let low = UInt8(truncatingIfNeeded: first)
        while j < count && bytes[j] >= low && bytes[j] < low + 26 { j += 1 }
        return j
    }
    @inline(__always)
    func isASCIILetter(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }

    /// `[upper]*[lower]+` at `s`: the greedy upper run, backing off one scalar at a time until a
    /// lower-ish scalar starts the lower run. Nil when no lower-ish scalar can start it.
    @inline(__always)
    func lowerCaseWord(at s: Int) -> Int? {
        guard s < count else { return nil }
        let upperEnd = run(from: s, any: .upperish)
        var p = upperEnd
        while true {
            if p < count && classes(at: p).classes.contains(.lowerish) {
                return run(from: p, any: .lowerish)
            }
            if p == s { return nil }
            p = previousBoundary(before: p)
        }
    }

    /// `[upper]+[lower]*` at `s`, or nil when `s` does not start an upper-ish scalar.
    @inline(__always)
    func upperCaseWord(at s: Int) -> Int? {
        guard s < count, classes(at: s).classes.contains(.upperish) else { return nil }
        let upperEnd = run(from: s, any: .upperish)
        return run(from: upperEnd, any: .lowerish)
    }

    @inline(__always)
    func contractionOrSelf(_ end: Int) -> Int {
        contraction(at: end, ignoringCase: true) ?? end
    }
}
