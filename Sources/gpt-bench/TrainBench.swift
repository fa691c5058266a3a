import ArgumentParser
import Foundation
import SwiftGPT

/// `gpt-bench train`: training tokens/s of SwiftGPT and of PyTorch on the same model shape,
/// batch and thread count, measured in the same run, with the model FLOP utilisation.
struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training step speed (forward, backward, AdamW) against PyTorch, with MFU.")

    enum Preset: String, ExpressibleByArgument, CaseIterable {
        case tiny, small, gpt2
        case llamaTiny = "llama-tiny", llamaSmall = "llama-small"

        func config(vocabularySize: Int, length: Int) -> ModelConfig {
            switch self {
            case .tiny: .gpt2(layers: 4, heads: 4, embedding: 128, vocabularySize: vocabularySize, contextLength: length)
            case .small: .gpt2(layers: 6, heads: 6, embedding: 384, vocabularySize: vocabularySize, contextLength: length)
            case .gpt2: .gpt2(layers: 12, heads: 12, embedding: 768, vocabularySize: vocabularySize, contextLength: length)
            case .llamaTiny: .llama(layers: 4, heads: 4, keyValueHeads: 2, embedding: 128, hidden: 384,
                                    vocabularySize: vocabularySize, contextLength: length)
            case .llamaSmall: .llama(layers: 6, heads: 6, keyValueHeads: 2, embedding: 384, hidden: 1024,
                                     vocabularySize: vocabularySize, contextLength: length)
            }
        }
    }

    @Option(help: "Model shapes to measure, comma-separated: tiny, small, gpt2 (GPT-2 family), llama-tiny, llama-small (6 layers, width 384, 6 query / 2 KV heads).")
    var preset: String = "tiny,small,gpt2"

    @Option(help: "Thread counts, comma-separated.")
    var threads = ThreadList(argument: "1,2")!

    @Option(help: "Rows per batch.") var batch = 4
    @Option(help: "Tokens per row.") var length = 64
    @Option(help: "Vocabulary size (GPT-2's by default).") var vocab = 50257
    @Option(help: "Timed steps per measurement (after 2 warm-up steps).") var steps = 5

    @Flag(help: "Skip the PyTorch reference.") var noReference = false
    @Flag(help: "One JSON object per measurement.") var json = false

    func run() throws {
        let presets = try preset.split(separator: ",").map { name -> Preset in
            guard let p = Preset(rawValue: String(name)) else {
                throw ValidationError("unknown preset '\(name)' (\(Preset.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return p
        }
        let peak = InstructionSet.best.measuredPeakGFLOPS()
        if !json {
            print("training step (forward + backward + AdamW), B=\(batch) T=\(length) V=\(vocab); peak \(Int(peak)) GFLOP/s per core (\(InstructionSet.best))")
            print("preset       thr   SwiftGPT tok/s   PyTorch tok/s   ratio   ms/step   MFU")
        }
        for p in presets {
            let config = p.config(vocabularySize: vocab, length: length)
            let n = Double(config.parameterCount)
            let flopsPerToken = 6 * n + 12 * Double(config.layerCount * config.embeddingSize * length)
            for threadCount in threads.counts {
                let seconds = try swiftStep(config: config, threads: threadCount)
                let tokens = Double(batch * length)
                let reference = noReference ? nil : pytorchStep(config: config, threads: threadCount)
                let mfu = tokens / seconds * flopsPerToken / (peak * 1e9 * Double(threadCount))
                if json {
                    print(jsonLine(["bench": "train", "preset": p.rawValue, "threads": threadCount, "batch": batch,
                                    "length": length, "swift_tokens_per_sec": tokens / seconds,
                                    "pytorch_tokens_per_sec": reference.map { tokens / $0 },
                                    "ratio": reference.map { $0 / seconds }, "ms_per_step": seconds * 1000, "mfu": mfu]))
                } else {
                    let ref = reference.map { String(format: "%14.0f", tokens / $0) } ?? "             -"
                    let ratio = reference.map { String(format: "%6.2fx", $0 / seconds) } ?? "      -"
                    print(p.rawValue.padding(toLength: 11, withPad: " ", startingAt: 0) + String(format: " %4d %16.0f", threadCount, tokens / seconds) + "  " + ref + "  " + ratio
                          + String(format: " %9.1f %5.1f%%", seconds * 1000, mfu * 100))
                }
            }
        }
    }

    /// Median seconds of one training step of ours.
    func swiftStep(config: ModelConfig, threads: Int) throws -> Double {
        let model = try LanguageModel(config: config, pool: ThreadPool(threadCount: threads))
        model.initializeWeights(seed: 1)
        let optimizer = AdamWOptimizer(parameterCount: model.layout.totalCount, settings: AdamWSettings())
        var generator = SplitMix64(seed: 7)
        let tokens = (0..<(batch * length)).map { _ in Int32(generator.next() % UInt64(config.vocabularySize)) }
        let targets = (0..<(batch * length)).map { _ in Int32(generator.next() % UInt64(config.vocabularySize)) }
        var times: [Double] = []
        for step in 0..<(steps + 2) {
            let start = DispatchTime.now().uptimeNanoseconds
            try model.forward(tokens: tokens, targets: targets, batch: batch, length: length)
            model.zeroGradients()
            model.backward()
            clipGradientNorm(model.gradients, maxNorm: 1, pool: model.pool)
            optimizer.update(model, learningRate: 1e-4)
            if step >= 2 { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9) }
        }
        return median(times)
    }

    /// Median seconds of one PyTorch training step of the same model, or nil without torch.
    func pytorchStep(config: ModelConfig, threads: Int) -> Double? {
        let script = """
        import math, sys, time, torch
        import torch.nn as nn, torch.nn.functional as F
        llama = sys.argv[1] == "llama"
        L, NH, NKV, C, H, V, T, B, threads, steps = map(int, sys.argv[2:12])
        torch.set_num_threads(threads); torch.manual_seed(0)
        hd = C // NH
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(T).float(), inv)
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        def rope(x):
            x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
            return x * cos + torch.cat([-x2, x1], -1) * sin
        class LlamaBlock(nn.Module):
            def __init__(s):
                super().__init__()
                s.n1, s.n2 = nn.RMSNorm(C, eps=1e-5), nn.RMSNorm(C, eps=1e-5)
                s.qkv, s.o = nn.Linear(C, (NH + 2 * NKV) * hd, bias=False), nn.Linear(C, C, bias=False)
                s.gate_up, s.down = nn.Linear(C, 2 * H, bias=False), nn.Linear(H, C, bias=False)
            def forward(s, x):
                q, k, v = s.qkv(s.n1(x)).split([NH * hd, NKV * hd, NKV * hd], dim=2)
                q = rope(q.view(B, T, NH, hd).transpose(1, 2)); k = rope(k.view(B, T, NKV, hd).transpose(1, 2))
                v = v.view(B, T, NKV, hd).transpose(1, 2)
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2).contiguous().view(B, T, C)
                x = x + s.o(y)
                g, u = s.gate_up(s.n2(x)).chunk(2, dim=-1)
                return x + s.down(F.silu(g) * u)
        class Llama(nn.Module):
            def __init__(s):
                super().__init__()
                s.wte = nn.Embedding(V, C); s.h = nn.ModuleList([LlamaBlock() for _ in range(L)]); s.norm = nn.RMSNorm(C, eps=1e-5)
            def forward(s, idx, targets):
                x = s.wte(idx)
                for b in s.h: x = b(x)
                logits = s.norm(x) @ s.wte.weight.T
                return F.cross_entropy(logits.view(-1, V), targets.view(-1))
        class Block(nn.Module):
            def __init__(s):
                super().__init__()
                s.ln_1, s.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
                s.c_attn, s.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
                s.c_fc, s.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
            def forward(s, x):
                q, k, v = s.c_attn(s.ln_1(x)).split(C, dim=2)
                q, k, v = [t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v)]
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
                x = x + s.c_proj(y)
                return x + s.mlp_proj(F.gelu(s.c_fc(s.ln_2(x)), approximate="tanh"))
        class GPT(nn.Module):
            def __init__(s):
                super().__init__()
                s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
                s.h = nn.ModuleList([Block() for _ in range(L)]); s.ln_f = nn.LayerNorm(C)
            def forward(s, idx, targets):
                x = s.wte(idx) + s.wpe(torch.arange(T))
                for b in s.h: x = b(x)
                logits = s.ln_f(x) @ s.wte.weight.T
                return F.cross_entropy(logits.view(-1, V), targets.view(-1))
        model = Llama() if llama else GPT()
        decay = [p for p in model.parameters() if p.dim() >= 2]; other = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95))
        x = torch.randint(0, V, (B, T)); y = torch.randint(0, V, (B, T))
        times = []
        for i in range(steps + 2):
            t = time.perf_counter()
            loss = model(x, y); opt.zero_grad(set_to_none=True); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
            if i >= 2: times.append(time.perf_counter() - t)
        print(sorted(times)[len(times) // 2])
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, config.family.rawValue]
            + [config.layerCount, config.headCount, config.keyValueHeadCount, config.embeddingSize, config.hiddenSize,
               config.vocabularySize, length, batch, threads, steps].map(String.init)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            FileHandle.standardError.write(Data("gpt-bench: PyTorch reference unavailable (pip install torch==2.13.0+cpu)\n".utf8))
            return nil
        }
        return Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
