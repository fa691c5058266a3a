import Metrics

/// What the server counts, through the swift-metrics API: the HTTP layer chooses the backend
/// (Prometheus for `/metrics`) by the factory it passes, so two servers in one process (tests)
/// keep their counts apart and nothing here touches the global metrics system.
///
///     swiftgpt_requests_total{status}          counter     swiftgpt_queue_depth        gauge
///     swiftgpt_prompt_tokens_total             counter     swiftgpt_active_sequences   gauge
///     swiftgpt_generated_tokens_total          counter     swiftgpt_batch_size         gauge
///     swiftgpt_time_to_first_token_seconds     histogram   swiftgpt_kv_blocks_in_use   gauge
///     swiftgpt_request_latency_seconds         histogram   (per sequence, submit to end)
public struct ServerMetrics: Sendable {
    public let factory: any MetricsFactory
    public let promptTokens: Counter
    public let generatedTokens: Counter
    public let timeToFirstToken: Metrics.Timer
    public let latency: Metrics.Timer
    let queueDepth: Gauge
    let activeSequences: Gauge
    let batchSize: Gauge
    let kvBlocksInUse: Gauge

    public init(factory: any MetricsFactory) {
        self.factory = factory
        promptTokens = Counter(label: "swiftgpt_prompt_tokens_total", factory: factory)
        generatedTokens = Counter(label: "swiftgpt_generated_tokens_total", factory: factory)
        timeToFirstToken = Metrics.Timer(label: "swiftgpt_time_to_first_token_seconds", factory: factory)
        latency = Metrics.Timer(label: "swiftgpt_request_latency_seconds", factory: factory)
        queueDepth = Gauge(label: "swiftgpt_queue_depth", factory: factory)
        activeSequences = Gauge(label: "swiftgpt_active_sequences", factory: factory)
        batchSize = Gauge(label: "swiftgpt_batch_size", factory: factory)
        kvBlocksInUse = Gauge(label: "swiftgpt_kv_blocks_in_use", factory: factory)
    }

    /// Counts one answered request by its HTTP status.
    public func countRequest(status: Int) {
        Counter(label: "swiftgpt_requests_total", dimensions: [("status", String(status))], factory: factory).increment()
    }

    func record(_ counts: ServingEngine.Snapshot) {
        queueDepth.record(counts.waiting)
        activeSequences.record(counts.active)
        batchSize.record(counts.lastBatchSize)
        kvBlocksInUse.record(counts.kvBlocksInUse)
    }
}
