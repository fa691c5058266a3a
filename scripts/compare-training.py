#!/usr/bin/env python3
"""Trains the same GPT-2 config on the same shards with SwiftGPT (`gpt train`) and with PyTorch,
and compares their final validation losses. Run from the repo root after a release build:

    swift build -c release
    .build/release/gpt tokenizer train --input shakespeare/*.txt --vocab-size 4096 --output /tmp/tok
    .build/release/gpt prepare --tokenizer /tmp/tok --input shakespeare/*.txt --output /tmp/data
    python3 scripts/compare-training.py --data /tmp/data --steps 300

PyTorch uses the same model (Hugging Face names, GPT-2 init), AdamW with decay on matrices,
warmup + cosine schedule, gradient clipping at 1.0, random windows for batches, and the same
evaluation windows as SwiftGPT (evenly spaced, 20 batches). Initial weights and batch order come
from each framework's own generator, so the curves differ step by step; the final validation
losses should agree within a couple of percent.
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_shard(path):
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1, f"{path}: not an llm.c shard"
    return np.fromfile(path, dtype="<u2", offset=1024, count=int(header[2])).astype(np.int64)


class Block(nn.Module):
    def __init__(self, C, NH, L):
        super().__init__()
        self.NH = NH
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        for m in (self.c_attn, self.c_fc):
            nn.init.normal_(m.weight, std=0.02); nn.init.zeros_(m.bias)
        for m in (self.c_proj, self.mlp_proj):
            nn.init.normal_(m.weight, std=0.02 / math.sqrt(2 * L)); nn.init.zeros_(m.bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = [t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v)]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, C, NH, L):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        nn.init.normal_(self.wte.weight, std=0.02); nn.init.normal_(self.wpe.weight, std=0.02)
        self.h = nn.ModuleList([Block(C, NH, L) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def evaluation_windows(shards, B, T, max_batches):
    """SwiftGPT's BatchSampler.evaluationBatches: evenly spaced windows of T + 1 tokens."""
    windows = [(s, start) for s in shards if len(s) > T for start in range(0, len(s) - T, T)]
    wanted = min(len(windows) // max(1, B), max_batches)
    stride = len(windows) / max(1, wanted * B)
    batches = []
    for b in range(wanted):
        rows = [windows[int((b * B + r) * stride)] for r in range(B)]
        batches.append(np.stack([s[start:start + T + 1] for s, start in rows]))
    return batches


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--gpt", default=".build/release/gpt")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    out = tempfile.mkdtemp(prefix="compare-training-")
    subprocess.run([args.gpt, "train", "--data", args.data, "--out", out, "--n-layer", str(args.layers),
                    "--n-head", str(args.heads), "--n-embd", str(args.embd), "--seq-len", str(args.seq_len),
                    "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--lr", str(args.lr),
                    "--warmup", str(args.warmup), "--seed", str(args.seed), "--eval-interval", str(args.steps),
                    "--threads", str(args.threads)], check=True, stderr=subprocess.DEVNULL)
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    swift_val = [m["val_loss"] for m in metrics if "val_loss" in m][-1]

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    V = json.load(open(os.path.join(args.data, "config.json")))["vocab_size"] if os.path.exists(os.path.join(args.data, "config.json")) else None
    train = [read_shard(p) for p in sorted(glob.glob(os.path.join(args.data, "train_*.bin")))]
    val = [read_shard(p) for p in sorted(glob.glob(os.path.join(args.data, "val_*.bin")))]
    V = V or int(json.load(open(os.path.join(out, "config.json")))["vocab_size"])
    B, T = args.batch_size, args.seq_len
    model = GPT(V, T, args.embd, args.heads, args.layers)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    data = np.concatenate(train)
    rng = np.random.default_rng(args.seed)
    for step in range(args.steps):
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            progress = (step - args.warmup) / max(1, args.steps - args.warmup)
            lr = args.lr / 10 + 0.5 * (1 + math.cos(math.pi * progress)) * (args.lr - args.lr / 10)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(data) - T - 1, size=B)
        batch = torch.from_numpy(np.stack([data[s:s + T + 1] for s in starts]))
        loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        losses = [model(torch.from_numpy(b[:, :-1]), torch.from_numpy(b[:, 1:])).item()
                  for b in evaluation_windows(val, B, T, 20)]
    torch_val = sum(losses) / len(losses)
    difference = (swift_val - torch_val) / torch_val
    print(json.dumps({"bench": "learning", "steps": args.steps, "swiftgpt_val_loss": round(swift_val, 4),
                      "pytorch_val_loss": round(torch_val, 4), "relative_difference": round(difference, 4)}))
    sys.exit(0 if abs(difference) <= 0.02 else 1)


if __name__ == "__main__":
    main()
