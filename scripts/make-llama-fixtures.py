#!/usr/bin/env python3
"""PyTorch reference fixtures for the Llama model (Hugging Face's LlamaForCausalLM is the model),
run from the repo root:

    pip install torch==2.13.0+cpu transformers==5.24.0 safetensors==0.8.0
    python3 scripts/make-llama-fixtures.py
    python3 scripts/make-llama-fixtures.py --check-rope   # only checks HF's RoPE, writes nothing

For untied and tied output embeddings it builds a tiny random LlamaForCausalLM (eager attention,
float32, no dropout; grouped-query attention with 4 query and 2 key/value heads) and writes
Tests/TransformerTests/Fixtures/llama-<untied|tied>.safetensors holding:
  param.<name>   the initial parameters          tokens, targets  (B, T) as float
  logits         (B, T, V)                       loss             the mean cross-entropy
  grad.<name>    d loss / d parameter            adamw_losses     losses of 10 AdamW steps
with Hugging Face's parameter names (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight,
..., model.norm.weight, and lm_head.weight only when untied: a tied embedding is one parameter whose
gradient includes both uses). The loss is computed here from the logits, without HF's label shift:
targets[b, t] is the target of position t, and -1 is ignored. The config is in the file's metadata.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = "Tests/TransformerTests/Fixtures"
CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0,
              hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0)
B, T = 2, 8


def build_model(tied):
    config = LlamaConfig(**CONFIG, tie_word_embeddings=tied, attn_implementation="eager")
    model = LlamaForCausalLM(config).float()
    assert model.config._attn_implementation == "eager"
    return model


def init_params(model, generator):
    p = {}
    normal = lambda *shape, std: (torch.randn(*shape, generator=generator, dtype=torch.float64) * std).float()
    # Not Llama's init scale on purpose: larger weights make the fixtures more discriminating.
    for name, v in model.named_parameters():  # deduplicated: a tied embedding appears once
        if name.endswith("norm.weight"):
            p[name] = 1 + normal(*v.shape, std=0.2)
        elif name == "model.embed_tokens.weight":
            p[name] = normal(*v.shape, std=0.3)
        else:
            p[name] = normal(*v.shape, std=0.2)
    return p


def load(model, params, tied):
    missing, unexpected = model.load_state_dict(params, strict=False)
    assert not unexpected, unexpected
    assert missing == (["lm_head.weight"] if tied else []), missing
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def loss_of(model, tokens, targets):
    logits = model(input_ids=tokens, use_cache=False).logits
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
    return logits, loss


def check_rope():
    """HF's rotary embedding (rotate_half: dims i and i + hd/2 form a pair) against the formula
    x'[i] = x[i] cos(p w_i) - x[i + hd/2] sin(p w_i), x'[i + hd/2] = x[i + hd/2] cos(p w_i) + x[i] sin(p w_i),
    w_i = theta^(-2i/hd), at positions 0..T-1."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = build_model(tied=False)
    hd, NH, theta = CONFIG["head_dim"], CONFIG["num_attention_heads"], CONFIG["rope_theta"]
    generator = torch.Generator().manual_seed(1234)
    q = torch.randn(B, NH, T, hd, generator=generator, dtype=torch.float64)
    k = torch.randn(B, NH, T, hd, generator=generator, dtype=torch.float64)
    positions = torch.arange(T).unsqueeze(0).expand(B, T)
    cos, sin = model.model.rotary_emb(q.float(), positions)
    hq, hk = apply_rotary_pos_emb(q.float(), k.float(), cos, sin)

    def reference(x):
        half = hd // 2
        w = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
        angle = torch.arange(T, dtype=torch.float64)[:, None] * w[None, :]  # (T, hd/2)
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()], dim=-1)

    err = max((hq.double() - reference(q)).abs().max().item(), (hk.double() - reference(k)).abs().max().item())
    print("rope max abs error", err)
    assert err < 1e-5, err


def main():
    os.makedirs(OUT, exist_ok=True)
    for tied in [False, True]:
        generator = torch.Generator().manual_seed(1234)
        model = build_model(tied)
        params = init_params(model, generator)
        V = CONFIG["vocab_size"]
        tokens = torch.randint(0, V, (B, T), generator=generator)
        targets = torch.randint(0, V, (B, T), generator=generator)
        targets[1, 3] = -1  # an ignored position
        load(model, params, tied)
        expected = set(model.state_dict()) - ({"lm_head.weight"} if tied else set())
        assert set(params) == expected, set(params) ^ expected  # no buffers (inv_freq) in either
        model.zero_grad()
        logits, loss = loss_of(model, tokens, targets)
        loss.backward()
        named = dict(model.named_parameters())
        tensors = {f"param.{k}": v.contiguous() for k, v in params.items()}
        tensors.update({f"grad.{k}": named[k].grad.detach().clone().contiguous() for k in params})
        tensors["logits"] = logits.detach().contiguous()
        tensors["loss"] = loss.detach().reshape(1)
        tensors["tokens"] = tokens.float()
        tensors["targets"] = targets.float()

        # 10 AdamW steps on the same batch; decay on matrices only (nanoGPT's groups).
        train = load(build_model(tied), {k: v.clone() for k, v in params.items()}, tied)
        groups = [
            {"params": [v for v in train.parameters() if v.dim() >= 2], "weight_decay": 0.1},
            {"params": [v for v in train.parameters() if v.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
        losses = []
        for _ in range(10):
            optimizer.zero_grad()
            _, step_loss = loss_of(train, tokens, targets)
            step_loss.backward()
            optimizer.step()
            losses.append(step_loss.item())
        tensors["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)

        config = {}
        for key, value in model.config.to_dict().items():
            try:
                json.dumps(value)
            except TypeError:
                continue
            config[key] = value
        metadata = {"config": json.dumps({**config, "batch": B, "length": T})}
        name = "tied" if tied else "untied"
        save_file(tensors, os.path.join(OUT, f"llama-{name}.safetensors"), metadata=metadata)
        print(name, "loss", loss.item(), "adamw", losses[0], "->", losses[-1])


if __name__ == "__main__":
    if "--check-rope" in sys.argv[1:]:
        check_rope()
    else:
        main()
