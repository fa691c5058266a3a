import BPE
import Foundation

/// Reading and writing safetensors files: an 8-byte little-endian header length, a JSON header
/// `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
/// then the tensor bytes (offsets relative to the end of the header).
///
/// F32, F16 and BF16 read as Float; files are written as F32.
public struct SafetensorsFile {
    public struct TensorInfo: Sendable, Equatable {
        public var dtype: String
        public var shape: [Int]
        public var offsets: Range<Int>
        public var count: Int { shape.reduce(1, *) }
    }

    public let url: URL
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    /// Opens a file (memory-mapped) and checks its header against its size.
    public init(url: URL) throws {
        self.url = url
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw ModelError("\(url.path): cannot read (\((error as NSError).localizedDescription))")
        }
        guard data.count >= 8 else { throw ModelError("\(url.path): too short for a safetensors file (\(data.count) bytes)") }
        let headerLength = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLength > 0, headerLength <= data.count - 8, headerLength < 100_000_000 else {
            throw ModelError("\(url.path): header length \(headerLength) does not fit the file (\(data.count) bytes); truncated or not safetensors")
        }
        let headerData = data.subdata(in: 8..<(8 + headerLength))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw ModelError("\(url.path): the header is not a JSON object")
        }
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        let dataSize = data.count - 8 - headerLength
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int],
                  offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1], shape.allSatisfy({ $0 >= 0 }) else {
                throw ModelError("\(url.path): tensor '\(name)' has a malformed header entry")
            }
            guard let width = Self.byteWidth(dtype) else {
                throw ModelError("\(url.path): tensor '\(name)' has dtype \(dtype); F32, F16 and BF16 are supported")
            }
            let info = TensorInfo(dtype: dtype, shape: shape, offsets: offsets[0]..<offsets[1])
            guard info.offsets.count == info.count * width else {
                throw ModelError("\(url.path): tensor '\(name)' has shape \(shape) but \(info.offsets.count) bytes")
            }
            guard offsets[1] <= dataSize else {
                throw ModelError("\(url.path): tensor '\(name)' ends at byte \(offsets[1]) past the data (\(dataSize) bytes); the file is truncated")
            }
            tensors[name] = info
        }
        self.tensors = tensors
        self.metadata = metadata
        self.data = data
        self.dataStart = 8 + headerLength
    }

    static func byteWidth(_ dtype: String) -> Int? {
        switch dtype {
        case "F32": 4
        case "F16", "BF16": 2
        default: nil
        }
    }

    /// Copies tensor `name` as Float into `destination` (which must hold exactly its elements).
    public func read(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let info = tensors[name] else { throw ModelError("\(url.path): no tensor '\(name)'") }
        guard destination.count == info.count else {
            throw ModelError("\(url.path): tensor '\(name)' has \(info.count) elements, expected \(destination.count)")
        }
        data.withUnsafeBytes { raw in
            let bytes = raw.baseAddress! + dataStart + info.offsets.lowerBound
            switch info.dtype {
            case "F32":
                for i in 0..<info.count {
                    destination[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
            case "F16":
                for i in 0..<info.count {
                    destination[i] = Float(Float16(bitPattern: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
                }
            default:  // BF16: the top half of a Float
                for i in 0..<info.count {
                    let bits = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    destination[i] = Float(bitPattern: UInt32(bits) << 16)
                }
            }
        }
    }

    /// Tensor `name` as a new array.
    public func read(_ name: String) throws -> [Float] {
        guard let info = tensors[name] else { throw ModelError("\(url.path): no tensor '\(name)'") }
        var values = [Float](repeating: 0, count: info.count)
        try values.withUnsafeMutableBufferPointer { try read(name, into: $0) }
        return values
    }

    /// Writes F32 tensors (in the order given) and metadata to `url`, through a temporary file
    /// renamed into place.
    public static func write(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
                             metadata: [String: String] = [:], to url: URL) throws {
        var header: [String] = []
        if !metadata.isEmpty {
            let entries = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            header.append("\"__metadata__\":{\(entries.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in tensors {
            precondition(tensor.values.count == tensor.shape.reduce(1, *), "safetensors: shape of \(tensor.name)")
            let end = offset + 4 * tensor.values.count
            header.append("\(jsonString(tensor.name)):{\"dtype\":\"F32\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var headerBytes = Array(("{" + header.joined(separator: ",") + "}").utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }  // align the data to 8 bytes
        var data = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: headerBytes)
        for tensor in tensors {
            #if _endian(big)
            for value in tensor.values { withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
            #else
            data.append(UnsafeBufferPointer(start: UnsafeRawPointer(tensor.values.baseAddress!).assumingMemoryBound(to: UInt8.self),
                                            count: 4 * tensor.values.count))
            #endif
        }
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw ModelError("\(url.path): cannot write (\((error as NSError).localizedDescription))")
        }
    }
}
