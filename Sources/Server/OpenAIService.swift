import BPE
import Foundation
import Generation
import Transformer

/// OpenAI's endpoints over a `ServingEngine`, with no HTTP in them: a request body in, a JSON
/// body or a stream of server-sent events out, and an `APIError` for anything wrong with it.
/// The HTTP layer (`ServerHTTP`) routes to these and adds authentication, limits and metrics.
///
///     let service = OpenAIService(engine: engine, modelName: "smollm2", chatTemplate: template)
///     switch try await service.completions(body) {
///     case .json(let data): ...                         // 200, application/json
///     case .events(let frames): for await frame in frames { ... }   // "data: {...}\n\n" ... "data: [DONE]\n\n"
///     }
public final class OpenAIService: Sendable {
    public enum Reply: Sendable {
        case json(Data)
        /// Server-sent event frames, each complete ("data: ...\n\n"), the last `data: [DONE]`.
        case events(AsyncStream<String>)
    }

    public let engine: ServingEngine
    public let modelName: String
    public let chatTemplate: ChatTemplate?
    public let created = Int(Date().timeIntervalSince1970)
    var tokenizer: Tokenizer { engine.tokenizer }
    /// The most sequences one request may ask for (prompts × n).
    var sequenceLimit: Int { engine.limits.maxBatch + engine.limits.maxQueue }

    public init(engine: ServingEngine, modelName: String, chatTemplate: ChatTemplate?) {
        self.engine = engine
        self.modelName = modelName
        self.chatTemplate = chatTemplate
    }

    // MARK: Endpoints

    /// POST /v1/completions.
    public func completions(_ body: Data) async throws(APIError) -> Reply {
        let request = try decodeBody(CompletionRequest.self, from: body)
        try checkModel(request.model)
        if let suffix = request.suffix, !suffix.isEmpty {
            throw APIError.invalidRequest("'suffix' is not supported by this model.", param: "suffix")
        }
        let prompts = try promptTokens(request.prompt)
        let alternatives = request.logprobs ?? 0
        guard alternatives >= 0 && alternatives <= 20 else {
            throw APIError.invalidRequest("Invalid 'logprobs': \(alternatives) is outside [0, 20].", param: "logprobs")
        }
        let echo = request.echo ?? false
        let wantLogprobs = request.logprobs != nil
        let maxTokens = request.maxTokens ?? 16
        let n = try request.sampling.choiceCount(limit: sequenceLimit)
        var base = try request.sampling.options(maxTokens: maxTokens, alternatives: alternatives,
                                                vocabularySize: engine.model.config.vocabularySize)
        // echo with logprobs scores the prompt too (its first token has no log-probability).
        base.promptLogprobs = echo && wantLogprobs
        guard prompts.count * n <= sequenceLimit else {
            throw APIError.invalidRequest("\(prompts.count) prompts × n = \(n) exceed the \(sequenceLimit) sequences this server holds.",
                                          param: "n")
        }
        let jobs = try submit(prompts: prompts, n: n, options: base, param: "max_tokens")
        let id = "cmpl-" + Self.randomID()
        var echoed = prompts.map { _ in "" }
        if echo { for (i, prompt) in prompts.enumerated() { echoed[i] = try decode(prompt) } }
        let prefixes = echoed

        if request.sampling.stream ?? false {
            let includeUsage = request.sampling.streamOptions?.includeUsage ?? false
            return .events(stream(jobs, includeUsage: includeUsage, promptTokens: prompts.map(\.count),
                                  scoresPrompt: base.promptLogprobs) { [self] job, event in
                // The echoed prompt first (with its scores once the prompt is in), a chunk per token
                // that shows text (or carries log-probabilities), one with the finish reason.
                switch event {
                case .start:
                    let echoNow = echo && !wantLogprobs && !prefixes[job.prompt].isEmpty
                    return echoNow ? completionChunk(id, job.choice, prefixes[job.prompt], nil, nil) : nil
                case .prompt(let scores):
                    return completionChunk(id, job.choice, prefixes[job.prompt], promptLogprobs(prompts[job.prompt], scores), nil)
                case .token(let token, let offset):
                    guard !token.text.isEmpty || wantLogprobs else { return nil }
                    // text_offset counts from the start of the choice's text, the echoed prompt included.
                    let logprobs = wantLogprobs
                        ? completionLogprobs([token.token], texts: [token.text], start: prefixes[job.prompt].count + offset) : nil
                    return completionChunk(id, job.choice, token.text, logprobs, nil)
                case .end(let reason):
                    return completionChunk(id, job.choice, "", nil, reason)
                }
            } usage: { [self] usage in
                CompletionResponse(id: id, created: Int(Date().timeIntervalSince1970), model: modelName, choices: [], usage: usage)
            })
        }
        let outputs = try await collect(jobs)
        var choices: [CompletionChoice] = []
        for (job, output) in zip(jobs, outputs) {
            let prefix = prefixes[job.prompt]
            var logprobs = wantLogprobs ? completionLogprobs(output.tokens, texts: output.texts, start: prefix.count) : nil
            if let generated = logprobs, base.promptLogprobs {
                logprobs = promptLogprobs(prompts[job.prompt], output.result.promptLogprobs)
                logprobs?.append(generated)
            }
            choices.append(CompletionChoice(index: job.choice, text: prefix + output.result.text, logprobs: logprobs,
                                            finishReason: output.result.finishReason.rawValue))
        }
        let usage = Usage(promptTokens: prompts.reduce(0) { $0 + $1.count },
                          completionTokens: outputs.reduce(0) { $0 + $1.result.tokens.count })
        return .json(try encode(CompletionResponse(id: id, created: Int(Date().timeIntervalSince1970), model: modelName,
                                                   choices: choices, usage: usage)))
    }

    /// POST /v1/chat/completions.
    public func chatCompletions(_ body: Data) async throws(APIError) -> Reply {
        let request = try decodeBody(ChatCompletionRequest.self, from: body)
        try checkModel(request.model)
        let prompt = try chatPrompt(request.messages)
        var alternatives = 0
        if let top = request.topLogprobs {
            guard request.logprobs == true else {
                throw APIError.invalidRequest("'top_logprobs' needs 'logprobs' set to true.", param: "top_logprobs")
            }
            guard top >= 0 && top <= 20 else {
                throw APIError.invalidRequest("Invalid 'top_logprobs': \(top) is outside [0, 20].", param: "top_logprobs")
            }
            alternatives = top
        }
        let wantLogprobs = request.logprobs ?? false
        let maxParam = request.maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens"
        let maxTokens = request.maxCompletionTokens ?? request.maxTokens ?? max(0, engine.contextLength - prompt.count)
        if maxTokens < 1 {
            throw APIError.invalidRequest("Invalid '\(maxParam)': \(maxTokens) must be at least 1.", param: maxParam)
        }
        let n = try request.sampling.choiceCount(limit: sequenceLimit)
        var base = try request.sampling.options(maxTokens: maxTokens, alternatives: alternatives,
                                                vocabularySize: engine.model.config.vocabularySize)
        if let end = chatTemplate?.endOfTurn, !base.stop.contains(end) { base.stop.append(end) }
        let jobs = try submit(prompts: [prompt], n: n, options: base, param: maxParam)
        let id = "chatcmpl-" + Self.randomID()

        if request.sampling.stream ?? false {
            let includeUsage = request.sampling.streamOptions?.includeUsage ?? false
            return .events(stream(jobs, includeUsage: includeUsage, promptTokens: [prompt.count], scoresPrompt: false) { [self] job, event in
                switch event {
                case .prompt:
                    return nil
                case .start:
                    return chatChunk(id, ChatChoice(index: job.choice, delta: ChatDelta(role: "assistant", content: "")))
                case .token(let token, _):
                    guard !token.text.isEmpty || wantLogprobs else { return nil }
                    let logprobs = wantLogprobs ? ChatLogprobs(content: [chatLogprob(token.token)]) : nil
                    return chatChunk(id, ChatChoice(index: job.choice, delta: ChatDelta(content: token.text), logprobs: logprobs))
                case .end(let reason):
                    return chatChunk(id, ChatChoice(index: job.choice, delta: ChatDelta(), finishReason: reason))
                }
            } usage: { [self] usage in
                ChatCompletionResponse(id: id, object: "chat.completion.chunk", created: Int(Date().timeIntervalSince1970),
                                       model: modelName, choices: [], usage: usage)
            })
        }
        let outputs = try await collect(jobs)
        let choices = zip(jobs, outputs).map { job, output in
            ChatChoice(index: job.choice, message: ChatMessage(role: "assistant", content: output.result.text),
                       logprobs: wantLogprobs ? ChatLogprobs(content: output.tokens.map(chatLogprob)) : nil,
                       finishReason: output.result.finishReason.rawValue)
        }
        let usage = Usage(promptTokens: prompt.count, completionTokens: outputs.reduce(0) { $0 + $1.result.tokens.count })
        return .json(try encode(ChatCompletionResponse(id: id, object: "chat.completion", created: Int(Date().timeIntervalSince1970),
                                                       model: modelName, choices: choices, usage: usage)))
    }

    /// GET /v1/models.
    public func models() throws(APIError) -> Data {
        try encode(ModelList(data: [.init(id: modelName, created: created)]))
    }

    /// POST /tokenize: `prompt` (special tokens parsed, as the completions endpoint does) or
    /// `messages` (through the chat template, as the chat endpoint does).
    public func tokenize(_ body: Data) throws(APIError) -> Data {
        let request = try decodeBody(TokenizeRequest.self, from: body)
        try checkModel(request.model)
        let ids: [Int]
        if let messages = request.messages {
            ids = try chatPrompt(messages)
        } else if let text = request.prompt ?? request.content {
            ids = tokenizer.encode(text, allowedSpecial: (request.addSpecial ?? true) ? .all : .none)
        } else {
            throw APIError.invalidRequest("Missing required parameter: 'prompt' (or 'messages').", param: "prompt")
        }
        return try encode(TokenizeResponse(tokens: ids, count: ids.count, maxModelLen: engine.contextLength))
    }

    /// POST /detokenize.
    public func detokenize(_ body: Data) throws(APIError) -> Data {
        let request = try decodeBody(DetokenizeRequest.self, from: body)
        try checkModel(request.model)
        try checkTokenIDs(request.tokens, param: "tokens")
        return try encode(DetokenizeResponse(prompt: try decode(request.tokens)))
    }

    // MARK: Requests into sequences

    private func checkModel(_ model: String?) throws(APIError) {
        if let model, model != modelName { throw APIError.modelNotFound(model) }
    }

    private func checkTokenIDs(_ ids: [Int], param: String) throws(APIError) {
        let size = engine.model.config.vocabularySize
        if let bad = ids.first(where: { $0 < 0 || $0 >= size }) {
            throw APIError.invalidRequest("Invalid '\(param)': token id \(bad) is outside [0, \(size)).", param: param)
        }
    }

    private func promptTokens(_ prompt: PromptInput) throws(APIError) -> [[Int]] {
        let prompts: [[Int]]
        switch prompt {
        case .texts(let texts): prompts = texts.map { tokenizer.encode($0, allowedSpecial: .all) }
        case .tokens(let batches): prompts = batches
        }
        guard !prompts.isEmpty else { throw APIError.invalidRequest("'prompt' is empty.", param: "prompt") }
        for ids in prompts {
            guard !ids.isEmpty else { throw APIError.invalidRequest("'prompt' is empty (no tokens).", param: "prompt") }
            try checkTokenIDs(ids, param: "prompt")
        }
        return prompts
    }

    /// The messages through the model's chat template: roles' markers as special tokens, the
    /// contents as plain text (a user who types `<|im_end|>` gets those characters).
    private func chatPrompt(_ messages: [ChatMessage]) throws(APIError) -> [Int] {
        guard let chatTemplate, chatTemplate.format != .unknown else {
            throw APIError.invalidRequest("This model has no chat template SwiftGPT recognises; use /v1/completions.",
                                          param: "messages")
        }
        guard !messages.isEmpty else { throw APIError.invalidRequest("'messages' is empty.", param: "messages") }
        let roles: Set = ["system", "developer", "user", "assistant"]
        var turns: [ChatTemplate.Message] = []
        for (index, message) in messages.enumerated() {
            guard roles.contains(message.role) else {
                throw APIError.invalidRequest("Invalid 'messages[\(index)].role': '\(message.role)' is not one of system, developer, user, assistant.",
                                              param: "messages[\(index)].role")
            }
            turns.append(.init(role: message.role == "developer" ? "system" : message.role, content: message.content ?? ""))
        }
        do {
            return try chatTemplate.tokens(turns, tokenizer: tokenizer)
        } catch {
            throw APIError.invalidRequest("\(error)", param: "messages")
        }
    }

    /// One sequence of a request: which prompt and which choice it is.
    struct Job {
        let prompt: Int
        let choice: Int
        let stream: AsyncStream<ServingEngine.Event>
    }

    /// Every prompt `n` times (choice seeds seed, seed+1, ...), submitted all at once.
    private func submit(prompts: [[Int]], n: Int, options: GenerationOptions, param: String) throws(APIError) -> [Job] {
        var jobs: [Job] = []
        for (p, prompt) in prompts.enumerated() {
            let choices = (0..<n).map { i in
                var options = options
                options.sampling.seed &+= UInt64(i)
                return options
            }
            let streams: [AsyncStream<ServingEngine.Event>]
            do {
                streams = try engine.submit(prompt: prompt, options: choices)
            } catch {
                switch error {
                case .full: throw APIError.rateLimited
                case .stopping: throw APIError.unavailable
                case .tooLong(let why):
                    throw APIError.invalidRequest("\(why) (\(prompt.count) in the prompt, \(options.maxTokens) for the completion).",
                                                  param: param)
                }
            }
            jobs += streams.enumerated().map { Job(prompt: p, choice: p * n + $0.offset, stream: $0.element) }
        }
        return jobs
    }

    struct Output {
        var result: GenerationResult
        var tokens: [SampledToken] = []
        var texts: [String] = []
    }

    /// Waits for every sequence's end (dropping the streams, should this task be cancelled,
    /// cancels their sequences).
    private func collect(_ jobs: [Job]) async throws(APIError) -> [Output] {
        let outputs = await withTaskGroup(of: (Int, Result<Output, APIError>).self) { group in
            for (index, job) in jobs.enumerated() {
                group.addTask {
                    var tokens: [SampledToken] = [], texts: [String] = []
                    for await event in job.stream {
                        switch event {
                        case .token(let token):
                            tokens.append(token.token)
                            texts.append(token.text)
                        case .finished(let result):
                            return (index, .success(Output(result: result, tokens: tokens, texts: texts)))
                        case .failed(let message):
                            return (index, .failure(.engineFailure(message)))
                        }
                    }
                    return (index, .failure(.engineFailure("the request was cancelled")))
                }
            }
            var outputs = [Result<Output, APIError>?](repeating: nil, count: jobs.count)
            for await (index, output) in group { outputs[index] = output }
            return outputs.compactMap { $0 }
        }
        return try outputs.map { output throws(APIError) in try output.get() }
    }

    enum StreamEvent {
        case start
        /// The scored prompt (echo with logprobs), before the first token.
        case prompt([SampledToken])
        /// A token, and how many characters of its sequence's text came before it.
        case token(GenerationEvent, offset: Int)
        case end(String)
    }

    /// Server-sent events for every job, interleaved as tokens come: `chunk` makes a job's
    /// frames (nil: none for this event), `usage` the closing usage frame, then `[DONE]`. The
    /// consumer going away cancels every sequence.
    private func stream<Chunk: Encodable & Sendable>(_ jobs: [Job], includeUsage: Bool, promptTokens: [Int], scoresPrompt: Bool,
                                          chunk: @escaping @Sendable (Job, StreamEvent) -> Chunk?,
                                          usage: @escaping @Sendable (Usage) -> Chunk) -> AsyncStream<String> {
        let (frames, continuation) = AsyncStream<String>.makeStream()
        let task = Task {
            let generated = await withTaskGroup(of: Int.self) { group in
                for job in jobs {
                    group.addTask {
                        func send(_ event: StreamEvent) {
                            if let frame = chunk(job, event) { continuation.yield(Self.frame(frame)) }
                        }
                        send(.start)
                        var promptSent = false, emitted = 0
                        for await event in job.stream {
                            switch event {
                            case .token(let token):
                                if let scores = token.promptLogprobs {
                                    send(.prompt(scores))
                                    promptSent = true
                                }
                                send(.token(token, offset: emitted))
                                emitted += token.text.count
                            case .finished(let result):
                                if scoresPrompt && !promptSent { send(.prompt(result.promptLogprobs)) }
                                send(.end(result.finishReason.rawValue))
                                return result.tokens.count
                            case .failed(let message):
                                continuation.yield(Self.frame(APIError.engineFailure(message).body))
                                return 0
                            }
                        }
                        return 0
                    }
                }
                return await group.reduce(0, +)
            }
            guard !Task.isCancelled else { return }
            if includeUsage {
                continuation.yield(Self.frame(usage(Usage(promptTokens: promptTokens.reduce(0, +), completionTokens: generated))))
            }
            continuation.yield("data: [DONE]\n\n")
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return frames
    }

    // MARK: Response pieces

    private func completionChunk(_ id: String, _ index: Int, _ text: String, _ logprobs: CompletionLogprobs?,
                                 _ finishReason: String?) -> CompletionResponse {
        CompletionResponse(id: id, created: Int(Date().timeIntervalSince1970), model: modelName,
                           choices: [CompletionChoice(index: index, text: text, logprobs: logprobs, finishReason: finishReason)])
    }

    private func chatChunk(_ id: String, _ choice: ChatChoice) -> ChatCompletionResponse {
        ChatCompletionResponse(id: id, object: "chat.completion.chunk", created: Int(Date().timeIntervalSince1970),
                               model: modelName, choices: [choice])
    }

    /// Completions' log-probabilities: each token's own text and, with alternatives, the top ones.
    private func completionLogprobs(_ tokens: [SampledToken], texts: [String], start: Int) -> CompletionLogprobs {
        var logprobs = CompletionLogprobs(), offset = start
        for (token, text) in zip(tokens, texts) {
            logprobs.tokens.append(tokenText(token.id))
            logprobs.tokenLogprobs.append(token.logprob)
            logprobs.topLogprobs.append(token.topAlternatives.isEmpty ? nil : Dictionary(
                token.topAlternatives.map { (tokenText($0.id), $0.logprob) }, uniquingKeysWith: { a, _ in a }))
            logprobs.textOffset.append(offset)
            offset += text.count
        }
        return logprobs
    }

    /// The echoed prompt's log-probabilities: its first token has none (nothing precedes it).
    private func promptLogprobs(_ prompt: [Int], _ scores: [SampledToken]) -> CompletionLogprobs {
        let first = tokenText(prompt[0])
        var logprobs = CompletionLogprobs(tokens: [first], tokenLogprobs: [nil], topLogprobs: [nil], textOffset: [0])
        logprobs.append(completionLogprobs(scores, texts: scores.map { tokenText($0.id) }, start: first.count))
        return logprobs
    }

    private func chatLogprob(_ token: SampledToken) -> ChatTokenLogprob {
        ChatTokenLogprob(token: tokenText(token.id), logprob: token.logprob, bytes: tokenBytes(token.id),
                         topLogprobs: token.topAlternatives.map {
                             .init(token: tokenText($0.id), logprob: $0.logprob, bytes: tokenBytes($0.id))
                         })
    }

    private func tokenBytes(_ id: Int) -> [UInt8] { (try? tokenizer.bytes(of: id)) ?? [] }
    private func tokenText(_ id: Int) -> String { String(decoding: tokenBytes(id), as: UTF8.self) }

    private func decode(_ ids: [Int]) throws(APIError) -> String {
        do { return try tokenizer.decode(ids) } catch { throw APIError.invalidRequest("\(error)", param: "tokens") }
    }

    private func encode(_ value: some Encodable) throws(APIError) -> Data {
        do { return try JSONEncoder().encode(value) } catch { throw APIError.engineFailure("could not encode the response: \(error)") }
    }

    static func frame(_ value: some Encodable) -> String {
        let data = (try? JSONEncoder().encode(value)) ?? Data("{}".utf8)
        return "data: " + String(decoding: data, as: UTF8.self) + "\n\n"
    }

    static func randomID() -> String {
        (0..<12).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
    }
}
