#!/usr/bin/env python3
"""Float64 reference fixtures for SmolLM2-135M-Instruct (Q4_1 GGUF), run from the repo root:

    pip install gguf numpy tokenizers==0.23.3 safetensors
    scripts/fetch-assets.sh smollm2
    python3 scripts/make-smollm2-fixtures.py

The reference dequantises every tensor with gguf-py and runs the Llama forward pass in numpy
float64 (RMSNorm, RoPE in GGUF's adjacent-pair layout, grouped-query attention, SwiGLU, tied
output). Prompts are tokenised by Hugging Face `tokenizers` built from the GGUF vocabulary
(Digits + ByteLevel, as SmolLM2's tokenizer.json), independently of SwiftGPT.

Writes Tests/GenerationTests/Fixtures/smollm2-reference.safetensors with, per prompt k:
  prompt<k>.ids       the prompt's token ids                 prompt<k>.logprobs  last-position log-softmax (V)
  prompt<k>.greedy    12 greedy continuation ids             prompt<k>.margins   top-1 minus top-2 logit at each step
and the prompt texts in the metadata.
"""
import json
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

PATH = os.path.join(os.environ.get("SWIFTGPT_CACHE", os.path.expanduser("~/.cache/swiftgpt")), "models/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = "Tests/GenerationTests/Fixtures/smollm2-reference.safetensors"
PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. In 1984, 42 people",
]
GREEDY = 12


def field(reader, name):
    f = reader.fields[name]
    return f.contents()


def main():
    reader = GGUFReader(PATH)
    tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64).reshape([int(d) for d in reversed(t.shape)])
               for t in reader.tensors}
    L = field(reader, "llama.block_count"); C = field(reader, "llama.embedding_length")
    NH = field(reader, "llama.attention.head_count"); NKV = field(reader, "llama.attention.head_count_kv")
    eps = field(reader, "llama.attention.layer_norm_rms_epsilon"); base = field(reader, "llama.rope.freq_base")
    hd = C // NH

    tokens = field(reader, "tokenizer.ggml.tokens"); types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, ty in zip(tokens, types) if ty == 3])

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x, positions):  # x (T, heads, hd): adjacent pairs rotate
        i = np.arange(hd // 2)
        angle = positions[:, None] * base ** (-2.0 * i / hd)  # (T, hd/2)
        c, s = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(ids):
        T = len(ids)
        x = tensors["token_embd.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(L):
            p = f"blk.{l}."
            h = rms(x, tensors[p + "attn_norm.weight"])
            q = rope((h @ tensors[p + "attn_q.weight"].T).reshape(T, NH, hd), pos)
            k = rope((h @ tensors[p + "attn_k.weight"].T).reshape(T, NKV, hd), pos)
            v = (h @ tensors[p + "attn_v.weight"].T).reshape(T, NKV, hd)
            out = np.empty((T, NH, hd))
            for head in range(NH):
                g = head // (NH // NKV)
                scores = q[:, head] @ k[:, g].T / np.sqrt(hd) + mask
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                out[:, head] = (scores / scores.sum(-1, keepdims=True)) @ v[:, g]
            x = x + out.reshape(T, C) @ tensors[p + "attn_output.weight"].T
            h = rms(x, tensors[p + "ffn_norm.weight"])
            gate = h @ tensors[p + "ffn_gate.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * (h @ tensors[p + "ffn_up.weight"].T)) @ tensors[p + "ffn_down.weight"].T
        logits = rms(x[-1], tensors["output_norm.weight"]) @ tensors["token_embd.weight"].T
        return logits - (np.log(np.exp(logits - logits.max()).sum()) + logits.max())

    out = {}
    for k, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt).ids
        logprobs = forward(ids)
        greedy, margins, sequence = [], [], list(ids)
        step = logprobs
        for _ in range(GREEDY):
            order = np.argsort(-step)
            greedy.append(int(order[0])); margins.append(float(step[order[0]] - step[order[1]]))
            sequence.append(int(order[0]))
            step = forward(sequence)
        out[f"prompt{k}.ids"] = np.array(ids, dtype=np.float32)
        out[f"prompt{k}.logprobs"] = logprobs.astype(np.float32)
        out[f"prompt{k}.greedy"] = np.array(greedy, dtype=np.float32)
        out[f"prompt{k}.margins"] = np.array(margins, dtype=np.float32)
        print(k, len(ids), "tokens; greedy:", repr(tok.decode(greedy)), "margins", np.round(margins, 3))
    save_file(out, OUT, metadata={"prompts": json.dumps(PROMPTS)})


if __name__ == "__main__":
    main()
