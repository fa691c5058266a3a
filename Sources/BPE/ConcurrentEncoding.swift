import Dispatch
import Synchronization

// Encoding one long text on several threads, with exactly the ids of encoding it on one.
//
// The text is cut just after a newline that follows a printable ASCII character other than a
// space and precedes an ASCII letter ("...heart.\nThe..."). Every pattern here ends a piece
// there whatever comes before or after: no alternative crosses "x\n" into a letter (a
// punctuation run takes the newline with it, `[\r\n]*`, and stops at the letter), the newline's
// whitespace run is the newline alone, and a piece starting at the letter never looks back.
// Regex alternatives that look past their match (`\s+(?!\S)`, `\s++$`) still end the newline
// there at the end of a part. Tests check the parts' ids against the whole text's.

extension PreTokenizer {
    /// Where `bytes` can be cut into parts of about `partLength` bytes that encode independently
    /// (see above): the start of each part after the first, in order. Text without such places
    /// stays one part.
    public static func partStarts(of bytes: UnsafeBufferPointer<UInt8>, partLength: Int) -> [Int] {
        var starts: [Int] = []
        var i = max(1, partLength)
        while i + 1 < bytes.count {
            if bytes[i] == 0x0A, (0x21...0x7E).contains(bytes[i - 1]), isASCIILetter(bytes[i + 1]) {
                starts.append(i + 1)
                i += 1 + max(1, partLength)
            } else {
                i += 1
            }
        }
        return starts
    }

    @inline(__always)
    private static func isASCIILetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A }
}

extension Tokenizer {
    /// Encodes `bytes` in parts of about `partLength` bytes on `threads` threads (special tokens
    /// as plain text), with exactly the ids `encodeOrdinary` gives the whole. Each part is
    /// checked as UTF-8 before it is encoded.
    ///
    /// - Parameter body: called once per part, from the thread that encoded it and in no
    ///   particular order, with the part's index (0, 1, ...) and its ids.
    /// - Returns: the number of parts.
    /// - Throws: `TokenizerError` naming the byte offset of the first invalid UTF-8; some parts
    ///   may have gone to `body` by then.
    @discardableResult
    public func encodeOrdinaryConcurrently(_ bytes: UnsafeBufferPointer<UInt8>, threads: Int, partLength: Int = 1 << 20,
                                           _ body: @Sendable (_ part: Int, _ ids: [Int]) -> Void) throws -> Int {
        let starts = [0] + PreTokenizer.partStarts(of: bytes, partLength: partLength) + [bytes.count]
        let partCount = starts.count - 1
        let nextPart = Atomic<Int>(0)
        let firstInvalid = Mutex<Int?>(nil)
        // Each thread reads its own parts of the caller's bytes, which outlive this call.
        nonisolated(unsafe) let bytes = bytes
        DispatchQueue.concurrentPerform(iterations: max(1, min(threads, partCount))) { _ in
            withSession { session in
                // Sized once for this thread's share of the text, not regrown part by part.
                session.reserveCache(forBytes: bytes.count / max(1, min(threads, partCount)))
                var ids: [Int] = []
                while true {
                    let part = nextPart.add(1, ordering: .relaxed).oldValue
                    guard part < partCount else { return }
                    let range = starts[part]..<starts[part + 1]
                    let text = UnsafeBufferPointer(rebasing: bytes[range])
                    if let offset = firstInvalidOffset(text) {
                        firstInvalid.withLock { $0 = min($0 ?? .max, range.lowerBound + offset) }
                        nextPart.store(partCount, ordering: .relaxed)
                        return
                    }
                    ids.removeAll(keepingCapacity: true)
                    ids.reserveCapacity(text.count / 3)
                    session.encodeOrdinary(text, into: &ids)
                    body(part, ids)
                }
            }
        }
        if let offset = firstInvalid.withLock({ $0 }) { throw TokenizerError("invalid UTF-8 at byte offset \(offset)") }
        return partCount
    }
}

/// The offset of the first byte of `bytes` that is not valid UTF-8, or nil. The standard
/// library's validation runs at memory speed and copies nothing.
func firstInvalidOffset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
    if #available(macOS 26, *) {
        do {
            _ = try UTF8Span(validating: bytes.span)
            return nil
        } catch {
            return error.byteOffsets.lowerBound
        }
    }
    return String(validating: bytes, as: UTF8.self) == nil ? firstInvalidUTF8Offset(bytes) : nil
}
