#!/usr/bin/env python3
"""SwiftGPT against llama.cpp on the same GGUF file, run from the repo root after
`swift build -c release`.

Speed, like for like per instruction set (llama.cpp's own llama-bench, built from the
llama-cpp-python sdist into the cache; the AVX2 build has AVX-512 off, and SwiftGPT runs with
SWIFTGPT_ISA=avx2 beside it, so AVX2 ratios can be measured on any x86 machine):

    scripts/build-llama-cpp.sh native llama-bench && scripts/build-llama-cpp.sh avx2 llama-bench
    python3 scripts/compare-llama-cpp.py --speed native,avx2 [--model PATH] [--threads 1,2]

Fidelity, through llama-cpp-python (for each prompt: whether both tokenise it to the same ids,
the KL divergence between the two last-position distributions and whether their top-1 agrees):

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python==0.3.36   # compiles llama.cpp
    python3 scripts/compare-llama-cpp.py [--model PATH] [--threads 1,2]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. In 1984, 42 people",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Les élèves ont étudié 3 langues: français, 日本語 et English 🙂.",
]


def log_softmax(x):
    x = x.astype(np.float64)
    return x - (np.log(np.exp(x - x.max()).sum()) + x.max())


def main():
    parser = argparse.ArgumentParser()
    default = os.path.join(os.environ.get("SWIFTGPT_CACHE", os.path.expanduser("~/.cache/swiftgpt")), "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--model", default=default)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokenizer-only", action="store_true")
    parser.add_argument("--speed", help="llama-bench builds to compare speed with (native, avx2), comma-separated")
    args = parser.parse_args()
    if args.speed:
        for variant in args.speed.split(","):
            compare_speed(variant, args.model, args.threads)
        return
    from llama_cpp import Llama
    llm = Llama(model_path=args.model, n_ctx=1024, n_threads=2, n_batch=512, logits_all=True, verbose=False)
    for text in PROMPTS:
        theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
        ours = subprocess.run([".build/release/gpt", "tokenizer", "encode", "--tokenizer", args.model, "--allow-special"],
                              input=text.encode(), capture_output=True)
        ours_ids = [int(t) for t in ours.stdout.split()] if ours.returncode == 0 else None
        result = {"prompt": text[:40], "same_tokens": ours_ids == theirs, "tokens": len(theirs)}
        if not args.tokenizer_only:
            llm.reset()
            llm.eval(theirs)
            their_logits = np.array(llm.scores[len(theirs) - 1], dtype=np.float32)
            with tempfile.NamedTemporaryFile(suffix=".f32") as f:
                subprocess.run([".build/release/gpt-bench", "logits", "--model", args.model, "--tokens", " ".join(map(str, theirs)),
                                "--out", f.name], check=True)
                our_logits = np.fromfile(f.name, dtype="<f4")
            p, q = log_softmax(their_logits), log_softmax(our_logits)
            top = np.argsort(-their_logits)
            result.update(kl=float((np.exp(p) * (p - q)).sum()), same_top1=int(np.argmax(our_logits)) == int(top[0]),
                          llama_margin=float(their_logits[top[0]] - their_logits[top[1]]))
        print(json.dumps(result, ensure_ascii=False))
    if args.tokenizer_only:
        return
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 49152, 512).tolist()
    for threads in map(int, args.threads.split(",")):
        llm = Llama(model_path=args.model, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
        pp, tg = [], []
        for _ in range(3):
            llm.reset(); start = time.perf_counter(); llm.eval(tokens); pp.append(512 / (time.perf_counter() - start))
            llm.reset(); llm.eval(tokens[:1]); start = time.perf_counter()
            for t in tokens[1:129]:
                llm.eval([t])
            tg.append(128 / (time.perf_counter() - start))
        print(json.dumps({"engine": "llama.cpp", "threads": threads, "pp512": round(sorted(pp)[1], 1), "tg128": round(sorted(tg)[1], 1)}))
    subprocess.run([".build/release/gpt-bench", "generate", "--model", args.model, "--threads", args.threads, "--json"], check=True)


def compare_speed(variant, model, threads):
    """pp512 and tg128 of llama-bench (median of 3) and gpt-bench generate, per thread count, on one ISA."""
    cache = os.environ.get("SWIFTGPT_CACHE", os.path.expanduser("~/.cache/swiftgpt"))
    bench = os.path.join(cache, f"llama.cpp/build-{variant}/bin/llama-bench")
    if not os.path.exists(bench):
        raise SystemExit(f"{bench} is missing: run scripts/build-llama-cpp.sh {variant} llama-bench")
    theirs = json.loads(subprocess.run([bench, "-m", model, "-p", "512", "-n", "128", "-t", threads, "-r", "3", "-o", "json"],
                                       check=True, capture_output=True, text=True).stdout)
    env = dict(os.environ, SWIFTGPT_ISA="avx2" if variant == "avx2" else os.environ.get("SWIFTGPT_ISA", ""))
    ours = [json.loads(line) for line in subprocess.run(
        [".build/release/gpt-bench", "generate", "--model", model, "--threads", threads, "--batch", "1", "--json"],
        check=True, capture_output=True, text=True, env=env).stdout.splitlines() if '"bench":"generate"' in line.replace(" ", "")]
    for t in map(int, threads.split(",")):
        row = {"variant": variant, "threads": t}
        for test in theirs:
            if test["n_threads"] == t:
                key = "pp512" if test["n_prompt"] else "tg128"
                row["llama_cpp_" + key] = round(test["avg_ts"], 1)
        mine = next(o for o in ours if o["threads"] == t)
        row.update(swiftgpt_isa=mine["isa"], swiftgpt_pp512=round(mine["pp_tokens_per_sec"], 1), swiftgpt_tg128=round(mine["tg_tokens_per_sec"], 1))
        row["pp512_ratio"] = round(row["swiftgpt_pp512"] / row["llama_cpp_pp512"], 2)
        row["tg128_ratio"] = round(row["swiftgpt_tg128"] / row["llama_cpp_tg128"], 2)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
