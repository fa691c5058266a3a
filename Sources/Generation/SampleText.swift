import BPE
import Transformer

/// Continues `prompt` by up to `maxTokens` tokens (fewer when the context fills up) with the
/// model's KV cache: for the short samples printed during training.
public func sampleText(model: LanguageModel, tokenizer: Tokenizer, prompt: String, maxTokens: Int,
                       temperature: Float = 0.8, topK: Int? = 40, seed: UInt64 = 0) throws -> String {
    var ids = tokenizer.encode(prompt, allowedSpecial: .all)
    if ids.isEmpty { ids = [tokenizer.endOfTextToken ?? 0] }
    ids = Array(ids.suffix(model.config.contextLength - 1))
    let cache = try KVCache(model, capacity: min(model.config.contextLength, ids.count + maxTokens))
    var sampler = Sampler(temperature: temperature, topK: topK, seed: seed)
    var decoder = IncrementalDecoder(tokenizer: tokenizer)
    var text = ""
    var logits = try model.forward(ids, cache: cache)
    for _ in 0..<maxTokens {
        let next = sampler.sample(logits)
        text += try decoder.append(next)
        if cache.count >= cache.capacity { break }
        logits = try model.forward([next], cache: cache)
    }
    return text + decoder.finish()
}
