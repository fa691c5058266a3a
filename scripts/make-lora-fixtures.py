#!/usr/bin/env python3
"""PyTorch + PEFT reference fixtures for LoRA and QLoRA-style training, run from the repo root:

    pip install torch==2.13.0+cpu transformers==5.24.0 peft==0.21.2 safetensors==0.8.0 gguf==0.19.0 numpy
    python3 scripts/make-lora-fixtures.py

A tiny random LlamaForCausalLM (untied, grouped-query attention, widths that are multiples of 32 so
every matrix quantises to Q4_1) with PEFT LoRA adapters (r=4, alpha=8, no dropout) on all seven
projections, A and B both random (B is zero at PEFT's init, which would leave A without gradient).
Writes to Tests/TransformerTests/Fixtures/:

- lora-dense.safetensors: param.<HF name> the base, lora.<PEFT key> the adapters, grad.<PEFT key>
  d loss / d adapter, logits, loss, tokens, targets (as make-llama-fixtures.py; config in metadata)
- lora-dense-adapter/: the same adapters as PEFT's save_pretrained writes them
- lora-q4_1.gguf: the same base with every matrix quantised to Q4_1 by gguf-py, q/k rows permuted as
  llama.cpp's converter does; lora-q4_1.safetensors: as lora-dense but for the base dequantised
  from those Q4_1 blocks (what QLoRA trains through), param.<HF name> being that dequantised base
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as Q, GGUFWriter
from gguf.quants import dequantize, quantize
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = "Tests/TransformerTests/Fixtures"
CONFIG = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0,
              hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0, tie_word_embeddings=False)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
B, T = 2, 8


def base_params(generator):
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, attn_implementation="eager")).float()
    normal = lambda *shape, std: (torch.randn(*shape, generator=generator, dtype=torch.float64) * std).float()
    return {name: (1 + normal(*v.shape, std=0.2)) if name.endswith("norm.weight") else normal(*v.shape, std=0.2)
            for name, v in model.named_parameters()}


def gguf_name(hf):
    """model.layers.0.self_attn.q_proj.weight -> blk.0.attn_q.weight"""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in names:
        return names[hf]
    parts = hf.split(".")
    layer, module = parts[2], ".".join(parts[3:-1])
    local = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}[module]
    return f"blk.{layer}.{local}.weight"


def permute(w, heads):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows: halves -> adjacent pairs per head."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantised_base(params, path):
    """Writes the base as a Q4_1 GGUF; returns it dequantised, with HF names and layout."""
    writer = GGUFWriter(path, "llama")
    writer.add_context_length(CONFIG["max_position_embeddings"])
    writer.add_embedding_length(CONFIG["hidden_size"])
    writer.add_feed_forward_length(CONFIG["intermediate_size"])
    writer.add_block_count(CONFIG["num_hidden_layers"])
    writer.add_head_count(CONFIG["num_attention_heads"])
    writer.add_head_count_kv(CONFIG["num_key_value_heads"])
    writer.add_rope_freq_base(CONFIG["rope_theta"])
    writer.add_layer_norm_rms_eps(CONFIG["rms_norm_eps"])
    writer.add_vocab_size(CONFIG["vocab_size"])
    dequantised = {}
    for name, value in params.items():
        w = value.numpy()
        heads = {"q_proj": CONFIG["num_attention_heads"], "k_proj": CONFIG["num_key_value_heads"]}.get(name.split(".")[-2])
        if heads:
            w = permute(w, heads)
        if w.ndim == 2:
            blocks = quantize(w, Q.Q4_1)
            writer.add_tensor(gguf_name(name), blocks, raw_dtype=Q.Q4_1)
            w = dequantize(blocks, Q.Q4_1).astype(np.float32).reshape(w.shape)
        else:
            writer.add_tensor(gguf_name(name), w)
        if heads:  # back to Hugging Face's halves: the inverse permutation
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        dequantised[name] = torch.from_numpy(np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dequantised


def fixture(params, generator, name):
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, attn_implementation="eager")).float()
    missing, unexpected = model.load_state_dict(params, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none")
    peft_model = get_peft_model(model, lora)
    for key, p in sorted(peft_model.named_parameters()):
        if "lora_" in key:
            p.data = (torch.randn(*p.shape, generator=generator, dtype=torch.float64) * 0.2).float()
    V = CONFIG["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=generator)
    targets = torch.randint(0, V, (B, T), generator=generator)
    targets[1, 3] = -1
    logits = peft_model(input_ids=tokens, use_cache=False).logits
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)
    loss.backward()
    saved = get_peft_model_state_dict(peft_model)  # PEFT's key names, as in adapter_model.safetensors
    grads = {}
    for key, p in peft_model.named_parameters():
        if "lora_" in key:
            grads[key.replace(".default", "")] = p.grad.detach().clone()
    assert set(grads) == set(saved), set(grads) ^ set(saved)
    tensors = {f"param.{k}": v.contiguous() for k, v in params.items()}
    tensors.update({f"lora.{k}": v.contiguous() for k, v in saved.items()})
    tensors.update({f"grad.{k}": v.contiguous() for k, v in grads.items()})
    tensors.update(logits=logits.detach().contiguous(), loss=loss.detach().reshape(1), tokens=tokens.float(),
                   targets=targets.float())
    config = {k: v for k, v in model.config.to_dict().items() if _jsonable(v)}
    save_file(tensors, os.path.join(OUT, f"{name}.safetensors"),
              metadata={"config": json.dumps({**config, "batch": B, "length": T}),
                        "lora": json.dumps({"r": 4, "lora_alpha": 8})})
    peft_model.save_pretrained(os.path.join(OUT, f"{name}-adapter"))
    print(name, "loss", loss.item(), "adapters", len(saved))


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def main():
    generator = torch.Generator().manual_seed(4321)
    params = base_params(generator)
    fixture(params, generator, "lora-dense")
    dequantised = quantised_base(params, os.path.join(OUT, "lora-q4_1.gguf"))
    fixture(dequantised, generator, "lora-q4_1")


if __name__ == "__main__":
    main()
