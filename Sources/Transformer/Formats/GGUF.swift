import Foundation
import Kernels

/// A GGUF file (versions 2 and 3), as llama.cpp writes them: a header of metadata key/values
/// and tensor infos, then the tensor data (aligned, memory-mapped here, never copied whole).
///
///     magic "GGUF" | version u32 | tensor count u64 | metadata count u64
///     metadata: key (u64 length + bytes) | type u32 | value   (arrays: item type u32, count u64, items)
///     tensors:  name | dims u32 | ne[dims] u64 (ne[0] is the row length) | type u32 | offset u64
///     padding to `general.alignment` (32), then the data section.
public final class GGUFFile: @unchecked Sendable {
    /// A metadata value.
    public enum Value: Sendable, Equatable {
        case int(Int64)
        case uint(UInt64)
        case float(Double)
        case bool(Bool)
        case string(String)
        case array([Value])

        public var int: Int? {
            switch self {
            case .int(let v): return Int(exactly: v)
            case .uint(let v): return Int(exactly: v)
            default: return nil
            }
        }

        public var double: Double? {
            switch self {
            case .float(let v): return v
            case .int(let v): return Double(v)
            case .uint(let v): return Double(v)
            default: return nil
            }
        }

        public var string: String? { if case .string(let s) = self { return s } else { return nil } }
        public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
        public var array: [Value]? { if case .array(let a) = self { return a } else { return nil } }
    }

    public struct TensorInfo: Sendable {
        public let name: String
        /// ne: ne[0] is the number of elements in a row (the fastest dimension).
        public let dimensions: [Int]
        public let type: GGMLType
        /// Byte offset of the data from the start of the file.
        public let offset: Int
        public var elementCount: Int { dimensions.reduce(1, *) }
        public var byteCount: Int { elementCount / type.blockSize * type.blockBytes }
        public var rowLength: Int { dimensions.first ?? 1 }
        public var rowCount: Int { elementCount / max(1, rowLength) }
    }

    public let url: URL
    public let version: Int
    public let metadata: [String: Value]
    public let tensors: [String: TensorInfo]
    /// Tensor names in file order.
    public let tensorOrder: [String]
    /// The whole file, mapped read-only for the life of this object.
    let base: UnsafeRawPointer
    let size: Int

    public init(url: URL) throws {
        self.url = url
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw ModelError("\(url.path): cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size > 0 else { throw ModelError("\(url.path): empty or unreadable") }
        size = Int(info.st_size)
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw ModelError("\(url.path): cannot map (\(String(cString: strerror(errno))))")
        }
        base = UnsafeRawPointer(mapped)
        var parsed = false
        let mappedSize = size
        defer { if !parsed { munmap(mapped, mappedSize) } }  // a throwing init runs no deinit
        let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: size, deallocator: .none)
        var reader = ByteReader(data: data, path: url.path)
        let magic = try reader.read(UInt32.self)
        guard magic == 0x4655_4747 else {
            throw ModelError("\(url.path): not a GGUF file (magic 0x\(String(magic, radix: 16)), expected \"GGUF\")")
        }
        let version = Int(try reader.read(UInt32.self))
        guard version == 2 || version == 3 else {
            throw ModelError("\(url.path): GGUF version \(version) is not supported (2 and 3 are)")
        }
        self.version = version
        let tensorCount = try reader.count(try reader.read(UInt64.self), what: "tensor count")
        let metadataCount = try reader.count(try reader.read(UInt64.self), what: "metadata count")
        var metadata: [String: Value] = [:]
        for _ in 0..<metadataCount {
            let key = try reader.string()
            let type = try reader.read(UInt32.self)
            metadata[key] = try reader.value(type: type, key: key)
        }
        var infos: [TensorInfo] = []
        for _ in 0..<tensorCount {
            let name = try reader.string()
            let dimensionCount = Int(try reader.read(UInt32.self))
            guard (1...4).contains(dimensionCount) else {
                throw ModelError("\(url.path): tensor \(name) has \(dimensionCount) dimensions")
            }
            var dimensions: [Int] = []
            for _ in 0..<dimensionCount { dimensions.append(try reader.count(try reader.read(UInt64.self), what: "dimension of \(name)")) }
            let typeCode = try reader.read(UInt32.self)
            guard let type = GGMLType(rawValue: typeCode) else {
                throw ModelError("\(url.path): tensor \(name) has type \(GGMLType.name(of: typeCode)), which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1)")
            }
            let offset = try reader.count(try reader.read(UInt64.self), what: "offset of \(name)")
            guard dimensions[0] % type.blockSize == 0 else {
                throw ModelError("\(url.path): tensor \(name) rows of \(dimensions[0]) are not whole \(type) blocks")
            }
            infos.append(TensorInfo(name: name, dimensions: dimensions, type: type, offset: offset))
        }
        let alignment = metadata["general.alignment"]?.int ?? 32
        guard alignment > 0 && alignment & (alignment - 1) == 0 else {
            throw ModelError("\(url.path): general.alignment \(alignment) is not a power of two")
        }
        let dataStart = (reader.offset + alignment - 1) / alignment * alignment
        var tensors: [String: TensorInfo] = [:]
        for info in infos {
            let absolute = TensorInfo(name: info.name, dimensions: info.dimensions, type: info.type, offset: dataStart + info.offset)
            guard absolute.offset + absolute.byteCount <= size else {
                throw ModelError("\(url.path): tensor \(info.name) ends at byte \(absolute.offset + absolute.byteCount), past the end of the file (\(size) bytes); the file is truncated")
            }
            tensors[info.name] = absolute
        }
        self.metadata = metadata
        self.tensors = tensors
        tensorOrder = infos.map(\.name)
        parsed = true
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }

    /// The raw bytes of a tensor (valid while the file object lives).
    public func bytes(of tensor: TensorInfo) -> UnsafeRawPointer { base + tensor.offset }

    public func tensor(_ name: String) throws -> TensorInfo {
        guard let info = tensors[name] else { throw ModelError("\(url.path): tensor \(name) is missing") }
        return info
    }

    /// A tensor dequantised to Float (row-major, ne[0] fastest).
    public func floats(_ name: String) throws -> [Float] {
        let info = try tensor(name)
        var out = [Float](repeating: 0, count: info.elementCount)
        out.withUnsafeMutableBufferPointer { dequantize(info.type, bytes(of: info), count: info.elementCount, into: $0.baseAddress!) }
        return out
    }
}

/// Sequential little-endian reads with bounds checks that name the file.
struct ByteReader {
    let data: Data
    let path: String
    var offset = 0

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let size = MemoryLayout<T>.size
        guard offset + size <= data.count else { throw ModelError("\(path): truncated at byte \(offset) (header)") }
        let value = data.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        offset += size
        return value
    }

    /// A u64 count that must be plausible for this file.
    func count(_ value: UInt64, what: String) throws -> Int {
        guard value < UInt64(1 << 40) else { throw ModelError("\(path): \(what) \(value) is implausible; corrupt header") }
        return Int(value)
    }

    mutating func string() throws -> String {
        let length = try count(try read(UInt64.self), what: "string length")
        guard offset + length <= data.count else { throw ModelError("\(path): truncated at byte \(offset) (string)") }
        let text = String(decoding: data[(data.startIndex + offset)..<(data.startIndex + offset + length)], as: UTF8.self)
        offset += length
        return text
    }

    mutating func value(type: UInt32, key: String) throws -> GGUFFile.Value {
        switch type {
        case 0: return .uint(UInt64(try read(UInt8.self)))
        case 1: return .int(Int64(try read(Int8.self)))
        case 2: return .uint(UInt64(try read(UInt16.self)))
        case 3: return .int(Int64(try read(Int16.self)))
        case 4: return .uint(UInt64(try read(UInt32.self)))
        case 5: return .int(Int64(try read(Int32.self)))
        case 6: return .float(Double(Float(bitPattern: try read(UInt32.self))))
        case 7: return .bool(try read(UInt8.self) != 0)
        case 8: return .string(try string())
        case 9:
            let itemType = try read(UInt32.self)
            let n = try count(try read(UInt64.self), what: "length of \(key)")
            var items: [GGUFFile.Value] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(type: itemType, key: key)) }
            return .array(items)
        case 10: return .uint(try read(UInt64.self))
        case 11: return .int(try read(Int64.self))
        case 12: return .float(Double(bitPattern: try read(UInt64.self)))
        default: throw ModelError("\(path): metadata \(key) has unknown value type \(type)")
        }
    }
}
