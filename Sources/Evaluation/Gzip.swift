import CZlib
import Foundation

/// The bytes of a file, decompressed when they are gzip's (they start with 1f 8b).
func readMaybeGzipped(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else { throw EvaluationError("\(path): cannot read the file") }
    let bytes = [UInt8](data)
    guard bytes.count >= 2, bytes[0] == 0x1f, bytes[1] == 0x8b else { return bytes }
    return try gunzip(bytes, name: path)
}

/// Decompresses gzip data (every member, as `gzip -d` does).
func gunzip(_ input: [UInt8], name: String) throws -> [UInt8] {
    var stream = z_stream()
    // 16 + MAX_WBITS: expect a gzip header.
    guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw EvaluationError("\(name): zlib could not start")
    }
    defer { inflateEnd(&stream) }
    var output: [UInt8] = []
    output.reserveCapacity(input.count * 4)
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    try input.withUnsafeBufferPointer { source in
        stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
        stream.avail_in = UInt32(source.count)
        while true {
            let status = chunk.withUnsafeMutableBufferPointer { buffer -> Int32 in
                stream.next_out = buffer.baseAddress
                stream.avail_out = UInt32(buffer.count)
                return inflate(&stream, Z_NO_FLUSH)
            }
            output += chunk[0..<(chunk.count - Int(stream.avail_out))]
            if status == Z_STREAM_END {
                // Another gzip member may follow.
                guard stream.avail_in > 0 else { return }
                guard inflateReset(&stream) == Z_OK else { throw EvaluationError("\(name): zlib could not reset") }
            } else if status != Z_OK {
                throw EvaluationError("\(name): not valid gzip data (zlib error \(status))")
            } else if stream.avail_in == 0 && stream.avail_out > 0 {
                throw EvaluationError("\(name): the gzip data ends early")
            }
        }
    }
    return output
}

/// The non-blank lines of a file (gzip or not), with their line numbers from 1.
func numberedLines(_ path: String) throws -> [(number: Int, bytes: Data)] {
    try readMaybeGzipped(path).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
        .compactMap { index, line in line.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 } ? nil : (index + 1, Data(line)) }
}

/// What happens to a malformed line of an input file: an error naming the file and line, or with
/// `skip` (--skip-bad) a warning and the line left out.
struct BadLines {
    let path: String
    let skip: Bool
    let warn: (String) -> Void

    func report(_ line: Int, _ what: String) throws {
        let message = "\(path):\(line): \(what)"
        guard skip else { throw EvaluationError(message + " (--skip-bad skips such lines)") }
        warn(message)
    }
}

/// What went wrong in an evaluation, in one line.
public struct EvaluationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
