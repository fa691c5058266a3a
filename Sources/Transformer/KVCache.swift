import CKernels
import Foundation
import Kernels

/// How a KV pool stores keys and values: fp32 (what the model computed), or fp16 (half the
/// memory, and half the bytes decoding attention reads; each key and value rounded to 11
/// significant bits, as llama.cpp's default cache).
public enum KVStorage: String, Sendable, CaseIterable {
    case f32, f16

    /// Bytes per element.
    public var bytes: Int { self == .f32 ? 4 : 2 }
}

/// Keys and values of many sequences in fixed-size blocks of positions (vLLM's PagedAttention):
/// per layer one arena of `blockCount` blocks × `blockSize` positions × (NKV · hd) elements for
/// keys and one for values. Sequences (`KVCache`) draw blocks as they grow and return them when
/// they end; a fork shares its parent's blocks, counted by reference, and copies a shared block
/// only when it writes into it.
///
///     let pool = try KVBlockPool(config: model.config, budget: .tokens(16_384))   // 1,024 blocks of 16
///     let a = KVCache(pool: pool, capacity: 2048), b = a.fork()
public final class KVBlockPool: @unchecked Sendable {
    public enum Budget: Sendable {
        case tokens(Int)
        case bytes(Int)
    }

    public let blockSize: Int
    public let blockCount: Int
    public let storage: KVStorage
    let keyValueSize: Int
    private let keys: [UnsafeMutableRawPointer]
    private let values: [UnsafeMutableRawPointer]
    private var free: [Int32]
    private var references: [Int32]
    private let lock = NSLock()

    public init(config: ModelConfig, budget: Budget, blockSize: Int = 16, storage: KVStorage = .f32) throws {
        guard blockSize > 0 else { throw ModelError("the KV block size must be positive, got \(blockSize)") }
        let kv = config.keyValueSize
        let bytesPerBlock = 2 * config.layerCount * blockSize * kv * storage.bytes
        let blocks: Int
        switch budget {
        case .tokens(let tokens): blocks = (tokens + blockSize - 1) / blockSize
        case .bytes(let bytes): blocks = bytes / bytesPerBlock
        }
        guard blocks > 0 else { throw ModelError("the KV budget holds no block of \(blockSize) positions (\(bytesPerBlock) bytes each)") }
        guard Double(blocks) * Double(bytesPerBlock) < Double(ProcessInfo.processInfo.physicalMemory) else {
            throw ModelError(String(format: "a KV budget of %d blocks needs %.1f GB; this machine has %.1f GB", blocks,
                                    Double(blocks * bytesPerBlock) / 1e9, Double(ProcessInfo.processInfo.physicalMemory) / 1e9))
        }
        self.blockSize = blockSize
        self.storage = storage
        blockCount = blocks
        keyValueSize = kv
        let arena = blocks * blockSize * kv * storage.bytes
        keys = (0..<config.layerCount).map { _ in .allocate(byteCount: arena, alignment: 64) }
        values = (0..<config.layerCount).map { _ in .allocate(byteCount: arena, alignment: 64) }
        free = (0..<Int32(blocks)).reversed()
        references = [Int32](repeating: 0, count: blocks)
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Layers the pool holds keys and values for.
    var layerCount: Int { keys.count }

    /// Blocks no sequence holds.
    public var freeBlocks: Int { lock.withLock { free.count } }

    /// Bytes of keys and values the pool holds.
    public var byteCount: Int { 2 * keys.count * blockCount * blockSize * keyValueSize * storage.bytes }

    /// A block for one holder, or nil when the budget is spent.
    func take() -> Int32? {
        lock.withLock {
            guard let block = free.popLast() else { return nil }
            references[Int(block)] = 1
            return block
        }
    }

    func retain(_ block: Int32) { lock.withLock { references[Int(block)] += 1 } }

    func release(_ block: Int32) {
        lock.withLock {
            references[Int(block)] -= 1
            precondition(references[Int(block)] >= 0, "KVBlockPool: block \(block) released too often")
            if references[Int(block)] == 0 { free.append(block) }
        }
    }

    func isShared(_ block: Int32) -> Bool { lock.withLock { references[Int(block)] > 1 } }

    /// Copies the first `positions` positions of block `source` into `target`, every layer.
    func copy(_ source: Int32, to target: Int32, positions: Int) {
        let bytes = positions * keyValueSize * storage.bytes
        let from = offset(block: source, slot: 0) * storage.bytes, to = offset(block: target, slot: 0) * storage.bytes
        for layer in keys.indices {
            (keys[layer] + to).copyMemory(from: keys[layer] + from, byteCount: bytes)
            (values[layer] + to).copyMemory(from: values[layer] + from, byteCount: bytes)
        }
    }

    /// Where position slot `slot` of `block` keeps its key (and, in `values`, its value), in elements.
    @inline(__always)
    func offset(block: Int32, slot: Int) -> Int { (Int(block) * blockSize + slot) * keyValueSize }

    /// Stores one position's `keyValueSize` keys (fp32 at `key`) and values (`valueOffset` floats
    /// after them) of `layer` at element `offset`.
    func store(layer: Int, at offset: Int, key: UnsafePointer<Float>, valueOffset: Int) {
        switch storage {
        case .f32:
            (keys[layer].assumingMemoryBound(to: Float.self) + offset).update(from: key, count: keyValueSize)
            (values[layer].assumingMemoryBound(to: Float.self) + offset).update(from: key + valueOffset, count: keyValueSize)
        case .f16:
            let isa = InstructionSet.best.rawValue
            sg_to_half(isa, keyValueSize, key, keys[layer].assumingMemoryBound(to: UInt16.self) + offset)
            sg_to_half(isa, keyValueSize, key + valueOffset, values[layer].assumingMemoryBound(to: UInt16.self) + offset)
        }
    }

    /// Copies `count` elements of `layer`'s keys and values from element `offset` out as fp32.
    func load(layer: Int, at offset: Int, count: Int, keys outKeys: UnsafeMutablePointer<Float>, values outValues: UnsafeMutablePointer<Float>) {
        switch storage {
        case .f32:
            outKeys.update(from: keys[layer].assumingMemoryBound(to: Float.self) + offset, count: count)
            outValues.update(from: values[layer].assumingMemoryBound(to: Float.self) + offset, count: count)
        case .f16:
            let isa = InstructionSet.best.rawValue
            sg_from_half(isa, count, keys[layer].assumingMemoryBound(to: UInt16.self) + offset, outKeys)
            sg_from_half(isa, count, values[layer].assumingMemoryBound(to: UInt16.self) + offset, outValues)
        }
    }

    /// `layer`'s paged rows from column `column` (elements) through a sequence's block table.
    func rows(layer: Int, column: Int, table: UnsafePointer<Int32>?) -> KeyValueRows {
        KeyValueRows(keys: UnsafeRawPointer(keys[layer]) + column * storage.bytes, values: UnsafeRawPointer(values[layer]) + column * storage.bytes,
                     ld: keyValueSize, table: table, blockSize: blockSize, storage: storage)
    }
}

/// One sequence's keys and values: a block table into a `KVBlockPool` and the number of
/// positions filled. Blocks return to the pool when the cache is reset, truncated or freed.
///
///     let cache = try KVCache(model, capacity: 256)               // with a pool of its own
///     var logits = try model.forward(promptIDs, cache: cache)     // fills positions 0..<n
///     logits = try model.forward([next], cache: cache)            // position n
public final class KVCache: @unchecked Sendable {
    public let pool: KVBlockPool
    /// The most positions this sequence may hold (at most the model's context length).
    public let capacity: Int
    /// Positions filled so far: the next token's position.
    public private(set) var count = 0
    public private(set) var blocks: [Int32] = []
    /// Scratch for `LanguageModel.forward(_:cache:)`, made on first use.
    var workspace: InferenceWorkspace?

    public init(pool: KVBlockPool, capacity: Int) {
        self.pool = pool
        self.capacity = capacity
    }

    /// A cache with a pool of its own, room for `capacity` positions.
    public convenience init(_ model: LanguageModel, capacity: Int) throws {
        guard capacity > 0 else { throw ModelError("the KV cache needs room for at least one token") }
        guard capacity <= model.config.contextLength else {
            throw ModelError("\(capacity) tokens exceed the model's context length \(model.config.contextLength)")
        }
        self.init(pool: try KVBlockPool(config: model.config, budget: .tokens(capacity), storage: model.keyValueStorage), capacity: capacity)
    }

    deinit { blocks.forEach(pool.release) }

    /// Forgets every position and returns the blocks.
    public func reset() { truncate(to: 0) }

    /// Rolls the sequence back to its first `n` positions, returning the blocks past them.
    public func truncate(to n: Int) {
        precondition(n >= 0 && n <= count, "KVCache: cannot truncate \(count) positions to \(n)")
        let kept = (n + pool.blockSize - 1) / pool.blockSize
        blocks[kept...].forEach(pool.release)
        blocks.removeLast(blocks.count - kept)
        count = n
    }

    /// A second sequence with the same positions, sharing their blocks until one of them writes
    /// into a shared block (the choices of one multiple-choice item; n completions of one prompt).
    public func fork() -> KVCache {
        let child = KVCache(pool: pool, capacity: capacity)
        blocks.forEach(pool.retain)
        child.blocks = blocks
        child.count = count
        return child
    }

    /// Makes the next `n` positions writable: blocks drawn from the pool, and a shared,
    /// partly filled last block copied first. Throws when the capacity or the pool runs out.
    func reserve(_ n: Int) throws {
        guard count + n <= capacity else {
            throw ModelError("position \(count + n) exceeds the KV cache (\(capacity) tokens)")
        }
        let P = pool.blockSize
        if count % P != 0, let last = blocks.last, pool.isShared(last) {
            guard let copy = pool.take() else { throw outOfBlocks }
            pool.copy(last, to: copy, positions: count % P)
            pool.release(last)
            blocks[blocks.count - 1] = copy
        }
        while blocks.count * P < count + n {
            guard let block = pool.take() else { throw outOfBlocks }
            blocks.append(block)
        }
    }

    private var outOfBlocks: ModelError {
        ModelError("the KV pool is full (\(pool.blockCount) blocks of \(pool.blockSize) positions)")
    }

    func advance(by n: Int) { count += n }
}
