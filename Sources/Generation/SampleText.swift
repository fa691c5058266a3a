import BPE
import Transformer

/// Continues `prompt` by `maxTokens` tokens with a GPT model, re-running the whole window for
/// each new token (no KV cache): for the short samples printed during training.
public func sampleText(model: GPT, tokenizer: Tokenizer, prompt: String, maxTokens: Int,
                       temperature: Float = 0.8, topK: Int? = 40, seed: UInt64 = 0) throws -> String {
    var ids = tokenizer.encode(prompt, allowedSpecial: .all)
    if ids.isEmpty { ids = [tokenizer.id(of: "<|endoftext|>") ?? 0] }
    var sampler = Sampler(temperature: temperature, topK: topK, seed: seed)
    var decoder = IncrementalDecoder(tokenizer: tokenizer)
    var text = ""
    let vocabulary = model.config.vocabularySize
    for _ in 0..<maxTokens {
        let window = Array(ids.suffix(model.config.contextLength)).map(Int32.init)
        try model.forward(tokens: window, targets: nil, batch: 1, length: window.count)
        let last = UnsafeBufferPointer(rebasing: model.logits[((window.count - 1) * vocabulary)..<(window.count * vocabulary)])
        let next = sampler.sample(last)
        ids.append(next)
        text += try decoder.append(next)
    }
    return text + decoder.finish()
}
