import ArgumentParser
import Foundation
import Logging
import ServerHTTP
import SwiftGPT

/// `gpt serve`: an OpenAI-compatible HTTP server over one model with continuous batching.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over OpenAI's HTTP API (/v1/completions, /v1/chat/completions) with continuous batching.")

    @Option(help: "A .gguf file or a checkpoint directory.") var model: String
    @Option(help: "A LoRA adapter directory (PEFT layout, from gpt finetune) to apply to the model.") var lora: String?
    @Option(help: "The address to listen on.") var host = "127.0.0.1"
    @Option(help: "The port to listen on (0: any free port).") var port = 8080
    @Option(help: "Require this key (Authorization: Bearer KEY) on every route but /health.") var apiKey: String?
    @Option(help: "Read the key from this file (its first line).") var apiKeyFile: String?
    @Option(help: "The most sequences decoding together in one step.") var maxBatch = 16
    @Option(help: "The most sequences waiting for a place in the batch; more are answered 429.") var maxQueue = 64
    @Option(help: "KV cache budget in MB (default: room for --max-batch sequences of --ctx positions).") var kvBudget: Int?
    @Option(help: "Positions one sequence may reach (default: the model's context, at most 4096).") var ctx: Int?
    @Option(help: "Prompt tokens prefilled per step at most (chunks of long prompts).") var chunk = 256
    @Option(help: "Largest request body in bytes.") var maxBody = 1 << 20
    @Option(help: "Seconds a SIGTERM waits for requests in flight.") var grace = 30
    @Option(help: "The model's name in the API (default: the file or directory name).") var name: String?
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "How the KV cache stores keys and values: f32, or f16 (half the memory and attention reads; rounded to fp16).") var kvType: KVStorage = .f32

    func validate() throws {
        if apiKey != nil && apiKeyFile != nil { throw ValidationError("give --api-key or --api-key-file, not both") }
        for (flag, value) in [("--max-batch", maxBatch), ("--chunk", chunk), ("--max-body", maxBody)] where value <= 0 {
            throw ValidationError("\(flag) must be positive, got \(value)")
        }
        if maxQueue < 0 { throw ValidationError("--max-queue must be >= 0") }
        if let kvBudget, kvBudget <= 0 { throw ValidationError("--kv-budget must be positive") }
        if let ctx, ctx < 2 { throw ValidationError("--ctx must be at least 2") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535") }
    }

    func run() async throws {
        var key = apiKey
        if let apiKeyFile {
            let text = try String(contentsOfFile: apiKeyFile, encoding: .utf8)
            key = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) }
            guard let key, !key.isEmpty else { throw ValidationError("\(apiKeyFile) holds no key") }
        }
        var logger = Logger(label: "swiftgpt.serve")
        logger.logLevel = .info
        let server = OpenAIHTTPServer(
            configuration: .init(host: host, port: port, apiKey: key, maxBodyBytes: maxBody, gracePeriod: .seconds(grace)),
            logger: logger)
        // The listener comes up first (/health answers 503) while the model loads.
        let (path, lora, threads, ctx, kvType) = (model, lora, threads, ctx, kvType)
        let limits = ServingEngine.Limits(maxBatch: maxBatch, maxQueue: maxQueue, chunkTokens: chunk,
                                          kvBudgetBytes: kvBudget.map { $0 << 20 })
        let modelName = name ?? URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent
        let loading = Task.detached {
            let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
            let loaded = try ModelLoader.load(path: path, lora: lora, pool: pool)
            loaded.model.keyValueStorage = kvType
            var limits = limits
            limits.contextLength = min(ctx ?? 4096, loaded.model.config.contextLength)
            let engine = try ServingEngine(model: loaded.model, tokenizer: loaded.tokenizer, limits: limits,
                                           metrics: server.metrics)
            server.serve(OpenAIService(engine: engine, modelName: modelName, chatTemplate: loaded.chatTemplate))
            let ready = "gpt serve: \(modelName) ready: batch \(limits.maxBatch), queue \(limits.maxQueue), "
                + "context \(engine.contextLength), KV cache \(engine.kvCapacity) positions\n"
            FileHandle.standardError.write(Data(ready.utf8))
        }
        let address = host
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.run { port in
                    FileHandle.standardError.write(Data("gpt serve: listening on http://\(address):\(port)\n".utf8))
                }
            }
            group.addTask {
                // A model that fails to load ends the server with its error.
                do { try await loading.value } catch {
                    await server.shutdown()
                    throw error
                }
            }
            try await group.waitForAll()
        }
    }
}
