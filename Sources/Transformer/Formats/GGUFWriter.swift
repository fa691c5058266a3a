import Foundation
import Kernels

/// Writes GGUF version 3 files, the format `GGUFFile` reads and llama.cpp runs: metadata
/// key/values, then tensor infos, then the tensor data, each tensor starting on a multiple of
/// the alignment (32 bytes unless `general.alignment` says otherwise).
///
///     var writer = GGUFWriter()
///     writer.setMetadata("general.architecture", .string("llama"))
///     writer.setMetadata("llama.block_count", .uint32(30))
///     try writer.addTensor("token_embd.weight", dimensions: [576, 49152], type: .q8_0, values: embedding)
///     try writer.write(to: URL(fileURLWithPath: "model.gguf"))
///
/// Dimensions are GGUF's `ne`: `ne[0]` is the row length (the fastest index), so a PyTorch
/// weight of shape [rows, columns] is `[columns, rows]` here. Float values are quantized when
/// the file is written, with exactly ggml's reference quantizers (`quantize`).
///
/// The file is written to a temporary file in the target directory and renamed into place, so a
/// reader never sees half a file and a failed write leaves any previous file as it was.
public struct GGUFWriter: Sendable {
    /// A metadata value with its GGUF type: the reader's `GGUFFile.Value` folds u32/i32/u64/i64
    /// into one integer case and f32/f64 into one float case, but llama.cpp checks the stored
    /// type (`general.alignment` must be u32, `tokenizer.ggml.token_type` an array of i32).
    public enum Value: Sendable, Equatable {
        case uint32(UInt32)
        case int32(Int32)
        case uint64(UInt64)
        case int64(Int64)
        case float32(Float)
        case float64(Double)
        case bool(Bool)
        case string(String)
        case stringArray([String])
        case int32Array([Int32])
        case float32Array([Float])

        /// The value `GGUFFile` reads back for this one.
        public var fileValue: GGUFFile.Value {
            switch self {
            case .uint32(let v): .uint(UInt64(v))
            case .int32(let v): .int(Int64(v))
            case .uint64(let v): .uint(v)
            case .int64(let v): .int(v)
            case .float32(let v): .float(Double(v))
            case .float64(let v): .float(v)
            case .bool(let v): .bool(v)
            case .string(let v): .string(v)
            case .stringArray(let v): .array(v.map { .string($0) })
            case .int32Array(let v): .array(v.map { .int(Int64($0)) })
            case .float32Array(let v): .array(v.map { .float(Double($0)) })
            }
        }
    }

    /// A tensor waiting to be written.
    struct PendingTensor: Sendable {
        enum Payload: Sendable {
            /// fp32 values, quantized when the file is written.
            case values([Float])
            /// Bytes already in the tensor's type.
            case encoded([UInt8])
        }

        let name: String
        let dimensions: [Int]
        let type: GGMLType
        let payload: Payload
        var byteCount: Int { type.byteCount(elementCount: dimensions.reduce(1, *)) }
    }

    private var metadataKeys: [String] = []
    private var metadataValues: [String: Value] = [:]
    private var pending: [PendingTensor] = []
    private var tensorNames: Set<String> = []

    public init() {}

    /// The metadata in the order it will be written.
    public var metadata: [(key: String, value: Value)] {
        metadataKeys.compactMap { key in metadataValues[key].map { (key, $0) } }
    }

    /// The names of the tensors added so far, in file order.
    public var tensorNamesInOrder: [String] { pending.map(\.name) }

    /// Sets `key` to `value`. A key set again keeps its first position and takes the new value.
    public mutating func setMetadata(_ key: String, _ value: Value) {
        if metadataValues.updateValue(value, forKey: key) == nil { metadataKeys.append(key) }
    }

    /// Sets each of `entries` in order (the pairs `Tokenizer.ggufMetadata` returns, say).
    public mutating func setMetadata(_ entries: [(key: String, value: Value)]) {
        for entry in entries { setMetadata(entry.key, entry.value) }
    }

    /// Adds a tensor to be quantized to `type` from fp32 `values` (row-major, `dimensions[0]`
    /// fastest) when the file is written.
    ///
    /// Throws, naming the tensor, for a name already used or longer than 63 bytes, 0 or more than
    /// 4 dimensions, a dimension below 1, a row length that is not whole blocks of `type`, or a
    /// value count that is not the product of the dimensions.
    public mutating func addTensor(_ name: String, dimensions: [Int], type: GGMLType, values: [Float]) throws {
        let count = try checkTensor(name, dimensions: dimensions, type: type)
        guard values.count == count else {
            throw ModelError("tensor \(name): \(values.count) values given for dimensions \(dimensions) (\(count) elements)")
        }
        append(PendingTensor(name: name, dimensions: dimensions, type: type, payload: .values(values)))
    }

    /// Adds a tensor whose bytes are already in `type`'s encoding (copied from another GGUF, or
    /// quantized by the caller): `type.byteCount(elementCount:)` of the element count.
    public mutating func addTensor(_ name: String, dimensions: [Int], type: GGMLType, encodedBytes: [UInt8]) throws {
        let count = try checkTensor(name, dimensions: dimensions, type: type)
        let expected = type.byteCount(elementCount: count)
        guard encodedBytes.count == expected else {
            throw ModelError("tensor \(name): \(encodedBytes.count) bytes given, but \(count) \(type) values take \(expected)")
        }
        append(PendingTensor(name: name, dimensions: dimensions, type: type, payload: .encoded(encodedBytes)))
    }

    private mutating func append(_ tensor: PendingTensor) {
        pending.append(tensor)
        tensorNames.insert(tensor.name)
    }

    /// Checks a new tensor's name and shape; returns its element count.
    private func checkTensor(_ name: String, dimensions: [Int], type: GGMLType) throws -> Int {
        // ggml keeps names in 64 bytes with the terminating zero (GGML_MAX_NAME).
        guard !name.isEmpty && name.utf8.count < 64 else {
            throw ModelError("tensor '\(name)': a name must have 1 to 63 bytes (it has \(name.utf8.count))")
        }
        guard !tensorNames.contains(name) else { throw ModelError("tensor \(name): added twice") }
        guard (1...4).contains(dimensions.count) else {
            throw ModelError("tensor \(name): \(dimensions.count) dimensions \(dimensions); GGUF allows 1 to 4")
        }
        guard dimensions.allSatisfy({ $0 >= 1 }) else {
            throw ModelError("tensor \(name): dimensions \(dimensions) must all be at least 1")
        }
        guard dimensions[0] % type.blockSize == 0 else {
            throw ModelError("tensor \(name): row length \(dimensions[0]) is not a multiple of \(type)'s block of \(type.blockSize)")
        }
        var count = 1
        for dimension in dimensions {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow && product < 1 << 40 else { throw ModelError("tensor \(name): dimensions \(dimensions) are implausibly large") }
            count = product
        }
        return count
    }

    /// The data alignment: `general.alignment` when set (a u32 power of two), else 32.
    private func alignment(for url: URL) throws -> Int {
        guard let value = metadataValues["general.alignment"] else { return 32 }
        guard case .uint32(let alignment) = value, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw ModelError("\(url.path): general.alignment must be a u32 power of two, not \(value)")
        }
        return Int(alignment)
    }

    /// Writes the file: header, then each tensor (quantized now if given as floats, the blocks
    /// spread over `pool`) padded to the alignment, to a temporary file beside `url` that is
    /// flushed to disk and renamed over `url`.
    public func write(to url: URL, pool: ThreadPool = .shared) throws {
        let alignment = try alignment(for: url)
        var header = LittleEndianBytes()
        header.append(UInt32(0x4655_4747))  // "GGUF"
        header.append(UInt32(3))
        header.append(UInt64(pending.count))
        header.append(UInt64(metadataKeys.count))
        for (key, value) in metadata {
            guard !key.isEmpty && key.utf8.count <= Int(UInt16.max) else {
                throw ModelError("\(url.path): metadata key '\(key.prefix(80))' must have 1 to 65535 bytes")
            }
            header.append(key)
            header.append(value)
        }
        var offset = 0  // from the start of the data section
        for tensor in pending {
            header.append(tensor.name)
            header.append(UInt32(tensor.dimensions.count))
            for dimension in tensor.dimensions { header.append(UInt64(dimension)) }
            header.append(tensor.type.rawValue)
            header.append(UInt64(offset))
            offset = roundUp(offset + tensor.byteCount, alignment)
        }
        header.padding(to: alignment)

        let file = try AtomicFile(url)
        do {
            try file.write(header.bytes)
            for tensor in pending {
                switch tensor.payload {
                case .values(let values):
                    try file.write(values.withUnsafeBufferPointer { quantize(tensor.type, $0, pool: pool) })
                case .encoded(let bytes):
                    try file.write(bytes)
                }
                try file.write([UInt8](repeating: 0, count: roundUp(tensor.byteCount, alignment) - tensor.byteCount))
            }
            try file.commit()
        } catch {
            file.discard()
            throw error
        }
    }
}

private func roundUp(_ value: Int, _ alignment: Int) -> Int { (value + alignment - 1) / alignment * alignment }

/// The GGUF header as it is built: little-endian numbers, strings as u64 length + UTF-8 bytes.
private struct LittleEndianBytes {
    var bytes: [UInt8] = []

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(_ text: String) {
        append(UInt64(text.utf8.count))
        bytes.append(contentsOf: text.utf8)
    }

    /// A value's type code (GGUF's gguf_type), then the value.
    mutating func append(_ value: GGUFWriter.Value) {
        switch value {
        case .uint32(let v): append(UInt32(4)); append(v)
        case .int32(let v): append(UInt32(5)); append(v)
        case .float32(let v): append(UInt32(6)); append(v.bitPattern)
        case .bool(let v): append(UInt32(7)); append(UInt8(v ? 1 : 0))
        case .string(let v): append(UInt32(8)); append(v)
        case .uint64(let v): append(UInt32(10)); append(v)
        case .int64(let v): append(UInt32(11)); append(v)
        case .float64(let v): append(UInt32(12)); append(v.bitPattern)
        case .stringArray(let items):
            append(UInt32(9)); append(UInt32(8)); append(UInt64(items.count))
            for item in items { append(item) }
        case .int32Array(let items):
            append(UInt32(9)); append(UInt32(5)); append(UInt64(items.count))
            for item in items { append(item) }
        case .float32Array(let items):
            append(UInt32(9)); append(UInt32(6)); append(UInt64(items.count))
            for item in items { append(item.bitPattern) }
        }
    }

    mutating func padding(to alignment: Int) {
        bytes.append(contentsOf: repeatElement(0, count: roundUp(bytes.count, alignment) - bytes.count))
    }
}

/// A file written under a temporary name in the target's directory, then flushed and renamed
/// over the target (`commit`), or removed (`discard`). Errors name the target.
private final class AtomicFile {
    let url: URL
    let temporaryPath: String
    private var descriptor: Int32

    init(_ url: URL) throws {
        self.url = url
        temporaryPath = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp").path
        descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ModelError("\(url.path): cannot write (\(String(cString: strerror(errno))))") }
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            var done = 0
            while done < buffer.count {
                let written = Foundation.write(descriptor, base + done, buffer.count - done)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { throw ModelError("\(url.path): cannot write (\(String(cString: strerror(errno))))") }
                done += written
            }
        }
    }

    func commit() throws {
        guard fsync(descriptor) == 0 else { throw ModelError("\(url.path): cannot flush (\(String(cString: strerror(errno))))") }
        let closed = close(descriptor)
        descriptor = -1
        guard closed == 0 else { throw ModelError("\(url.path): cannot close (\(String(cString: strerror(errno))))") }
        guard rename(temporaryPath, url.path) == 0 else {
            throw ModelError("\(url.path): cannot rename the temporary file into place (\(String(cString: strerror(errno))))")
        }
    }

    func discard() {
        if descriptor >= 0 { close(descriptor) }
        descriptor = -1
        unlink(temporaryPath)
    }
}
