import Foundation
import Kernels
import Transformer

/// llm.c's token shard format, which nanoGPT/llm.c data scripts write: a header of 256
/// little-endian int32 (magic 20240520, version 1, token count, the rest 0), then the tokens as
/// little-endian uint16. Vocabularies above 65,535 do not fit and are refused.
public enum TokenShard {
    public static let magic: Int32 = 20_240_520
    public static let version: Int32 = 1
    static let headerBytes = 256 * 4

    /// Writes `tokens` to `url` through a temporary file renamed into place.
    public static func write(_ tokens: [Int], to url: URL) throws {
        if let bad = tokens.first(where: { $0 < 0 || $0 > 65_535 }) {
            throw ModelError("\(url.path): token id \(bad) does not fit a uint16 shard (vocabularies above 65,535 are not supported)")
        }
        var header = [Int32](repeating: 0, count: 256)
        header[0] = magic
        header[1] = version
        guard tokens.count <= Int(Int32.max) else { throw ModelError("\(url.path): too many tokens for one shard") }
        header[2] = Int32(tokens.count)
        // Stored in place: a Data.append per token took 40% of gpt prepare.
        var data = Data(count: headerBytes + 2 * tokens.count)
        data.withUnsafeMutableBytes { bytes in
            for (i, value) in header.enumerated() { bytes.storeBytes(of: value.littleEndian, toByteOffset: 4 * i, as: Int32.self) }
            for (i, token) in tokens.enumerated() {
                bytes.storeBytes(of: UInt16(truncatingIfNeeded: token).littleEndian, toByteOffset: headerBytes + 2 * i, as: UInt16.self)
            }
        }
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw ModelError("\(url.path): cannot write (\((error as NSError).localizedDescription))")
        }
    }

    /// A shard, memory-mapped and checked.
    public struct Reader: @unchecked Sendable {
        public let url: URL
        public let count: Int
        private let data: Data

        public init(url: URL) throws {
            self.url = url
            do {
                data = try Data(contentsOf: url, options: .alwaysMapped)
            } catch {
                throw ModelError("\(url.path): cannot read (\((error as NSError).localizedDescription))")
            }
            guard data.count >= TokenShard.headerBytes else {
                throw ModelError("\(url.path): \(data.count) bytes is shorter than the 1024-byte shard header")
            }
            let header = data.withUnsafeBytes { raw in (0..<3).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) } }
            guard header[0] == TokenShard.magic else {
                throw ModelError("\(url.path): magic \(header[0]) is not llm.c's \(TokenShard.magic); not a token shard")
            }
            guard header[1] == TokenShard.version else {
                throw ModelError("\(url.path): shard version \(header[1]) is not supported (1: uint16 tokens)")
            }
            count = Int(header[2])
            guard count >= 0, data.count == TokenShard.headerBytes + 2 * count else {
                throw ModelError("\(url.path): the header says \(count) tokens but the file holds \((data.count - TokenShard.headerBytes) / 2); truncated or corrupt")
            }
        }

        /// Tokens [start, start + length) as Int32.
        public func tokens(from start: Int, count length: Int) -> [Int32] {
            precondition(start >= 0 && start + length <= count)
            return data.withUnsafeBytes { raw in
                (0..<length).map { Int32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: TokenShard.headerBytes + 2 * (start + $0), as: UInt16.self))) }
            }
        }

        /// The largest token id in the shard.
        public func maximumToken() -> Int {
            data.withUnsafeBytes { raw in
                var best: UInt16 = 0
                for i in 0..<count { best = max(best, UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: TokenShard.headerBytes + 2 * i, as: UInt16.self))) }
                return Int(best)
            }
        }
    }
}

/// Batches of (inputs, targets) from a set of shards: each row is a window of T + 1 tokens inside
/// one shard, chosen at random from a seeded generator whose state is the loader's position
/// (so a resumed run draws the same batches).
public struct BatchSampler: Sendable {
    public let shards: [TokenShard.Reader]
    public var generator: SplitMix64

    public init(shards: [TokenShard.Reader], seed: UInt64) throws {
        self.shards = shards
        generator = SplitMix64(seed: seed)
    }

    /// (inputs, targets) of B rows of T tokens; targets are the inputs shifted by one.
    public mutating func next(batch: Int, length: Int) throws -> (inputs: [Int32], targets: [Int32]) {
        let usable = shards.filter { $0.count > length }
        guard !usable.isEmpty else { throw ModelError("no shard holds more than \(length) tokens; use a shorter --seq-len or more data") }
        let total = usable.reduce(0) { $0 + $1.count - length }
        var inputs: [Int32] = [], targets: [Int32] = []
        inputs.reserveCapacity(batch * length)
        targets.reserveCapacity(batch * length)
        for _ in 0..<batch {
            var position = Int(generator.next() % UInt64(total))
            var shard = usable[0]
            for candidate in usable {
                if position < candidate.count - length { shard = candidate; break }
                position -= candidate.count - length
            }
            let window = shard.tokens(from: position, count: length + 1)
            inputs.append(contentsOf: window[0..<length])
            targets.append(contentsOf: window[1...])
        }
        return (inputs, targets)
    }

    /// Fixed, evenly spaced windows for validation: the same batches at every evaluation.
    public static func evaluationBatches(_ shards: [TokenShard.Reader], batch: Int, length: Int,
                                         maximumBatches: Int) -> [(inputs: [Int32], targets: [Int32])] {
        var windows: [(TokenShard.Reader, Int)] = []
        for shard in shards where shard.count > length {
            var start = 0
            while start + length + 1 <= shard.count { windows.append((shard, start)); start += length }
        }
        let wanted = min(windows.count / max(1, batch), maximumBatches)
        guard wanted > 0 else { return [] }
        let stride = Double(windows.count) / Double(wanted * batch)
        return (0..<wanted).map { b in
            var inputs: [Int32] = [], targets: [Int32] = []
            for r in 0..<batch {
                let (shard, start) = windows[Int(Double(b * batch + r) * stride)]
                let window = shard.tokens(from: start, count: length + 1)
                inputs.append(contentsOf: window[0..<length])
                targets.append(contentsOf: window[1...])
            }
            return (inputs, targets)
        }
    }
}
