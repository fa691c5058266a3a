#!/usr/bin/env python3
"""PyTorch reference fixtures for the GPT model (llm.c's test_gpt2 is the model), run from the
repo root:

    pip install torch==2.13.0+cpu safetensors
    python3 scripts/make-gpt-fixtures.py

For each activation (gelu: GPT-2's tanh form, relu) it builds a tiny random GPT-2 in plain
PyTorch with Hugging Face's parameter names and Conv1D [in, out] layout, and writes
Tests/TransformerTests/Fixtures/gpt-<activation>.safetensors holding:
  param.<name>   the initial parameters          tokens, targets  (B, T) as float
  logits         (B, T, V)                       loss             the mean cross-entropy
  grad.<name>    d loss / d parameter            adamw_losses     losses of 10 AdamW steps
The config is in the file's metadata.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = "Tests/TransformerTests/Fixtures"
CONFIG = dict(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4)
B, T = 2, 8


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def init_params(generator):
    V, P, C, L = CONFIG["vocab_size"], CONFIG["n_positions"], CONFIG["n_embd"], CONFIG["n_layer"]
    p = {}
    normal = lambda *shape, std=0.02: (torch.randn(*shape, generator=generator, dtype=torch.float64) * std).float()
    # Not GPT-2's init scale on purpose: larger weights make the fixtures more discriminating.
    p["wte.weight"] = normal(V, C, std=0.3)
    p["wpe.weight"] = normal(P, C, std=0.3)
    for l in range(L):
        h = f"h.{l}."
        p[h + "ln_1.weight"] = 1 + normal(C, std=0.2)
        p[h + "ln_1.bias"] = normal(C, std=0.2)
        p[h + "attn.c_attn.weight"] = normal(C, 3 * C, std=0.2)
        p[h + "attn.c_attn.bias"] = normal(3 * C, std=0.2)
        p[h + "attn.c_proj.weight"] = normal(C, C, std=0.2)
        p[h + "attn.c_proj.bias"] = normal(C, std=0.2)
        p[h + "ln_2.weight"] = 1 + normal(C, std=0.2)
        p[h + "ln_2.bias"] = normal(C, std=0.2)
        p[h + "mlp.c_fc.weight"] = normal(C, 4 * C, std=0.2)
        p[h + "mlp.c_fc.bias"] = normal(4 * C, std=0.2)
        p[h + "mlp.c_proj.weight"] = normal(4 * C, C, std=0.2)
        p[h + "mlp.c_proj.bias"] = normal(C, std=0.2)
    p["ln_f.weight"] = 1 + normal(C, std=0.2)
    p["ln_f.bias"] = normal(C, std=0.2)
    return p


def forward(p, tokens, targets, activation):
    C, NH, L = CONFIG["n_embd"], CONFIG["n_head"], CONFIG["n_layer"]
    hs = C // NH
    x = p["wte.weight"][tokens] + p["wpe.weight"][torch.arange(T)]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = f"h.{l}."
        a = F.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], eps=1e-5)
        qkv = a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NH, hs).transpose(1, 2)
        v = v.view(B, T, NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = F.layer_norm(x, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], eps=1e-5)
        m = m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"]
        m = gelu_tanh(m) if activation == "gelu" else torch.relu(m)
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps=1e-5)
    logits = x @ p["wte.weight"].T
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
    return logits, loss


def main():
    os.makedirs(OUT, exist_ok=True)
    for activation in ["gelu", "relu"]:
        generator = torch.Generator().manual_seed(1234)
        params = init_params(generator)
        tokens = torch.randint(0, CONFIG["vocab_size"], (B, T), generator=generator)
        targets = torch.randint(0, CONFIG["vocab_size"], (B, T), generator=generator)
        targets[1, 3] = -1  # an ignored position
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        logits, loss = forward(leaves, tokens, targets, activation)
        loss.backward()
        tensors = {f"param.{k}": v.contiguous() for k, v in params.items()}
        tensors.update({f"grad.{k}": v.grad.contiguous() for k, v in leaves.items()})
        tensors["logits"] = logits.detach().contiguous()
        tensors["loss"] = loss.detach().reshape(1)
        tensors["tokens"] = tokens.float()
        tensors["targets"] = targets.float()

        # 10 AdamW steps on the same batch; decay on matrices only (nanoGPT's groups).
        train = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        groups = [
            {"params": [v for v in train.values() if v.dim() >= 2], "weight_decay": 0.1},
            {"params": [v for v in train.values() if v.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
        losses = []
        for _ in range(10):
            optimizer.zero_grad()
            _, step_loss = forward(train, tokens, targets, activation)
            step_loss.backward()
            optimizer.step()
            losses.append(step_loss.item())
        tensors["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)

        metadata = {"config": json.dumps({**CONFIG, "activation": activation, "batch": B, "length": T})}
        save_file(tensors, os.path.join(OUT, f"gpt-{activation}.safetensors"), metadata=metadata)
        print(activation, "loss", loss.item(), "adamw", losses[0], "->", losses[-1])


if __name__ == "__main__":
    main()
