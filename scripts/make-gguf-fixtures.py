#!/usr/bin/env python3
"""GGUF reader and quantised-kernel fixtures, written by gguf-py (llama.cpp's own Python
package), run from the repo root:

    pip install gguf numpy safetensors
    python3 scripts/make-gguf-fixtures.py

Writes to Tests/TransformerTests/Fixtures/:
- tiny.gguf: metadata of every value type, and 8 x 96 tensors in F32, F16, BF16, Q8_0, Q4_0,
  Q4_1 quantised by gguf-py from the same random matrix;
- tiny-expected.safetensors: gguf-py's dequantisation of each tensor (what we must read), and
  the random vector x the matrix-vector tests multiply by;
- unsupported.gguf: one Q5_0 tensor (a type SwiftGPT refuses, by name).
"""
import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFWriter
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

OUT = "Tests/TransformerTests/Fixtures"
rng = np.random.default_rng(7)
matrix = (rng.standard_normal((8, 96)) * 0.5).astype(np.float32)
matrix[3] += 0.75  # a row with a large mean, where Q4_1's offset matters

writer = GGUFWriter(f"{OUT}/tiny.gguf", "llama")
writer.add_uint8("test.u8", 200)
writer.add_int8("test.i8", -100)
writer.add_uint16("test.u16", 60000)
writer.add_int16("test.i16", -30000)
writer.add_uint32("test.u32", 4_000_000_000)
writer.add_int32("test.i32", -2_000_000_000)
writer.add_float32("test.f32", 0.25)
writer.add_bool("test.bool", True)
writer.add_string("test.string", "héllo wörld")
writer.add_array("test.ints", [1, -2, 3])
writer.add_array("test.strings", ["a", "bc", ""])
writer.add_uint64("test.u64", 2**40 + 3)
writer.add_int64("test.i64", -(2**40))
writer.add_float64("test.f64", 3.141592653589793)
expected = {"x": rng.standard_normal(96).astype(np.float32)}
for name, kind in [("f32", Q.F32), ("f16", Q.F16), ("bf16", Q.BF16), ("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1)]:
    data = quantize(matrix, kind)
    writer.add_tensor(name, data, raw_dtype=kind)
    expected[name] = dequantize(data, kind).astype(np.float32).reshape(8, 96)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
save_file(expected, f"{OUT}/tiny-expected.safetensors")

writer = GGUFWriter(f"{OUT}/unsupported.gguf", "llama")
writer.add_tensor("odd", quantize(matrix, Q.Q5_0), raw_dtype=Q.Q5_0)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print("wrote tiny.gguf, tiny-expected.safetensors, unsupported.gguf")

# A GPT-2 architecture GGUF holding the GELU test model of make-gpt-fixtures.py, laid out as
# llama.cpp's converter writes GPT-2: Conv1D [in, out] weights transposed to rows of outputs.
from safetensors.numpy import load_file

params = load_file(f"{OUT}/gpt-gelu.safetensors")
writer = GGUFWriter(f"{OUT}/gpt2-tiny.gguf", "gpt2")
writer.add_context_length(16)
writer.add_embedding_length(32)
writer.add_feed_forward_length(128)
writer.add_block_count(2)
writer.add_head_count(4)
writer.add_layer_norm_eps(1e-5)
names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
         "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
writer.add_tensor("token_embd.weight", params["param.wte.weight"])
writer.add_tensor("position_embd.weight", params["param.wpe.weight"])
for l in range(2):
    for hf, gg in names.items():
        w = params[f"param.h.{l}.{hf}.weight"]
        writer.add_tensor(f"blk.{l}.{gg}.weight", w if w.ndim == 1 else np.ascontiguousarray(w.T))
        writer.add_tensor(f"blk.{l}.{gg}.bias", params[f"param.h.{l}.{hf}.bias"])
writer.add_tensor("output_norm.weight", params["param.ln_f.weight"])
writer.add_tensor("output_norm.bias", params["param.ln_f.bias"])
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print("wrote gpt2-tiny.gguf")
