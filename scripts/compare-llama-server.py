#!/usr/bin/env python3
"""gpt serve against llama.cpp's llama-server: the same model, prompts, clients and slots in one run.

    python3 scripts/compare-llama-server.py --model ~/.cache/swiftgpt/models/SmolLM2-135M-Instruct.Q4_1.gguf

Both servers run on loopback with the same threads (--threads, default 2) and 16 slots
(gpt serve --max-batch 16, llama-server -np 16 with continuous batching). For each client count
(--clients 1,4,16), C clients each send --requests streamed /v1/completions of --max-tokens tokens
(end of text suppressed: ignore_eos for llama-server, logit_bias for gpt serve) one after
another; aggregate generated tokens/s, requests/s, p50/p99 time to first token and latency are
printed for both, with their ratio. The servers are measured one after the other at each client
count, so they see the same machine load.

llama-server comes from llama.cpp's sources in the llama-cpp-python sdist (pip download, never
committed), built with -DGGML_NATIVE=ON into ~/.cache/swiftgpt/llama.cpp (SWIFTGPT_CACHE moves
it); an existing build there with the server target is reused.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request

from server_process import free_port, wait_healthy

LLAMA_CPP_PYTHON = "0.3.36"
CACHE = os.path.join(os.environ.get("SWIFTGPT_CACHE", os.path.expanduser("~/.cache/swiftgpt")), "llama.cpp")


def llama_server_binary():
    """The llama-server binary, built from the sdist's llama.cpp sources when missing."""
    for found in glob.glob(os.path.join(CACHE, "build-*", "bin", "llama-server")):
        return found
    source = os.path.join(CACHE, f"src-{LLAMA_CPP_PYTHON}")
    if not os.path.exists(os.path.join(source, "CMakeLists.txt")):
        download = os.path.join(CACHE, "sdist")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", download], check=True)
        archive = glob.glob(os.path.join(download, "llama_cpp_python-*.tar.gz"))[0]
        with tarfile.open(archive) as tar:
            tar.extractall(download, filter="data")
        vendored = glob.glob(os.path.join(download, "llama_cpp_python-*", "vendor", "llama.cpp"))[0]
        os.rename(vendored, source)
    build = os.path.join(CACHE, "build-server")
    subprocess.run(["cmake", "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"], check=True)
    subprocess.run(["cmake", "--build", build, "--target", "llama-server", "-j", str(os.cpu_count() or 2)], check=True)
    return os.path.join(build, "bin", "llama-server")


def post(port, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def streamed_completion(port, prompt, max_tokens, extra):
    """(tokens, time to first token, latency) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7, "seed": 1, "stream": True, **extra}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first, tokens = None, 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                if choice.get("text"):
                    tokens += 1  # both servers send one chunk per token
                    if first is None:
                        first = time.perf_counter() - start
    latency = time.perf_counter() - start
    return tokens, first if first is not None else latency, latency


def measure(port, clients, requests, max_tokens, extra):
    results, failures, lock = [], [0], threading.Lock()

    def client(c):
        for r in range(requests):
            try:
                result = streamed_completion(port, f"Story {c}-{r}: Once upon a time, in a land far away,", max_tokens, extra)
                with lock:
                    results.append(result)
            except Exception:  # counted: the comparison reports failed requests
                with lock:
                    failures[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start

    def percentile(values, q):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))] if ordered else float("nan")

    ttft, latency = [r[1] for r in results], [r[2] for r in results]
    return {"tokens_per_sec": sum(r[0] for r in results) / seconds, "requests_per_sec": len(results) / seconds,
            "failed": failures[0], "tokens_per_request": statistics.mean(r[0] for r in results) if results else 0,
            "ttft_p50_ms": percentile(ttft, 0.5) * 1000, "ttft_p99_ms": percentile(ttft, 0.99) * 1000,
            "latency_p50_ms": percentile(latency, 0.5) * 1000, "latency_p99_ms": percentile(latency, 0.99) * 1000}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--gpt", default=".build/release/gpt")
    parser.add_argument("--llama-server", help="a llama-server binary (default: build it into the cache)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    llama = args.llama_server or llama_server_binary()
    ours_port, theirs_port = free_port(), free_port()
    servers = [
        subprocess.Popen([args.gpt, "serve", "--model", args.model, "--port", str(ours_port), "--threads", str(args.threads),
                          "--max-batch", str(args.slots), "--ctx", "1024"], stderr=subprocess.DEVNULL),
        subprocess.Popen([llama, "-m", args.model, "--port", str(theirs_port), "-t", str(args.threads), "-tb", str(args.threads),
                          "-np", str(args.slots), "-c", str(1024 * args.slots), "-cb", "--no-webui"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        for port, server in zip((ours_port, theirs_port), servers):
            wait_healthy(port, server)
        # End of text never sampled, so that every completion is --max-tokens long on both.
        end_ids = {str(t) for name in ("<|endoftext|>", "<|im_end|>")
                   for t in post(ours_port, "/tokenize", {"prompt": name})["tokens"]}
        ours_extra = {"logit_bias": {t: -100 for t in end_ids}}
        theirs_extra = {"ignore_eos": True}
        for port, extra in ((ours_port, ours_extra), (theirs_port, theirs_extra)):
            streamed_completion(port, "Warm up.", 8, extra)
        if not args.json:
            print(f"{args.model}: {args.threads} threads, {args.slots} slots, {args.max_tokens}-token streamed completions, "
                  f"{args.requests} per client; llama-server {llama}")
        for clients in [int(c) for c in args.clients.split(",")]:
            ours = measure(ours_port, clients, args.requests, args.max_tokens, ours_extra)
            theirs = measure(theirs_port, clients, args.requests, args.max_tokens, theirs_extra)
            ratio = ours["tokens_per_sec"] / theirs["tokens_per_sec"] if theirs["tokens_per_sec"] else float("nan")
            if args.json:
                print(json.dumps({"clients": clients, "swiftgpt": ours, "llama_server": theirs, "ratio": ratio}))
                continue
            for name, r in (("gpt serve", ours), ("llama-server", theirs)):
                print(f"{clients:2d} clients, {name:12s}: {r['tokens_per_sec']:6.1f} tok/s, {r['requests_per_sec']:.2f} req/s, "
                      f"TTFT p50 {r['ttft_p50_ms']:.0f} ms p99 {r['ttft_p99_ms']:.0f} ms, latency p50 {r['latency_p50_ms']:.0f} ms "
                      f"p99 {r['latency_p99_ms']:.0f} ms, {r['tokens_per_request']:.1f} tokens/request, {r['failed']} failed")
            print(f"{clients:2d} clients: gpt serve / llama-server = {ratio:.2f}x")
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
