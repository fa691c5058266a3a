import Kernels

/// The keys and values one sequence has computed, per layer (capacity, NKV·hd), and the scratch
/// its forward passes run in. One sequence, one cache: many caches can share one model.
///
///     let cache = try KVCache(model, capacity: 256)
///     var logits = try model.forward(promptIDs, cache: cache)    // fills positions 0..<n
///     logits = try model.forward([next], cache: cache)           // position n
public final class KVCache {
    public let capacity: Int
    /// Positions filled so far: the next token's position.
    public private(set) var count = 0
    let keys: [FloatBuffer]
    let values: [FloatBuffer]
    let workspace: Workspace
    private var activations: InferenceActivations?
    /// Decoding's one-row activations, apart from the prompt's: a few KB that stay in cache.
    private var decodeActivations: InferenceActivations?

    public init(_ model: LanguageModel, capacity: Int) throws {
        guard capacity > 0 else { throw ModelError("the KV cache needs room for at least one token") }
        guard capacity <= model.config.contextLength else {
            throw ModelError("\(capacity) tokens exceed the model's context length \(model.config.contextLength)")
        }
        self.capacity = capacity
        let size = capacity * model.config.keyValueSize
        keys = (0..<model.config.layerCount).map { _ in .allocate(capacity: size) }
        values = (0..<model.config.layerCount).map { _ in .allocate(capacity: size) }
        workspace = Workspace(pool: model.pool)
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Forgets every position (the buffers stay for the next sequence).
    public func reset() { count = 0 }

    /// Bytes of keys and values held for `capacity` positions.
    public var byteCount: Int { (keys.count + values.count) * (keys.first?.count ?? 0) * 4 }

    /// Activations for `rows` new rows, grown on demand and kept.
    func activations(_ config: ModelConfig, rows: Int) -> InferenceActivations {
        if rows == 1 {
            if let a = decodeActivations { return a }
            let a = InferenceActivations(config: config, rows: 1, capacity: capacity)
            decodeActivations = a
            return a
        }
        if let a = activations, a.rows >= rows { return a }
        let a = InferenceActivations(config: config, rows: max(rows, activations?.rows ?? 0), capacity: capacity)
        activations = a
        return a
    }

    func advance(by n: Int) { count += n }
}
