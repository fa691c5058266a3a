#!/usr/bin/env python3
"""Drives `gpt serve` with the official `openai` Python package: completions, chat, streaming,
logprobs and the errors a client sees (400, 401, 404, 429), then SIGTERM and a clean exit.

    pip install openai==3.57.0
    python3 scripts/openai-client-check.py --model ~/.cache/swiftgpt/models/SmolLM2-135M-Instruct.Q4_1.gguf

It starts the server itself (--gpt, default .build/release/gpt) on a free loopback port with an
API key, and exits non-zero on the first check that fails.
"""
import argparse
import concurrent.futures
import json
import signal
import subprocess
import sys
import time
import urllib.request

import openai

from server_process import free_port, wait_healthy

KEY = "ci-secret"


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}")
        sys.exit(1)
    print(f"ok: {message}")


def expect_error(kind, status, call, message):
    try:
        call()
    except kind as error:
        check(error.status_code == status, f"{message}: {status} ({error.message})")
        return error
    check(False, f"{message}: no {kind.__name__} raised")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--gpt", default=".build/release/gpt")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen([args.gpt, "serve", "--model", args.model, "--port", str(port), "--api-key", KEY,
                               "--max-batch", "4", "--max-queue", "2", "--ctx", "1024", "--threads", str(args.threads),
                               "--name", "smollm2", "--grace", "60"])
    try:
        wait_healthy(port, server)
        run_checks(port)
        # SIGTERM with a request in flight: it finishes, then the server exits 0.
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(lambda: client.completions.create(model="smollm2", prompt="Count: 1, 2, 3,",
                                                                      max_tokens=48, temperature=0))
            time.sleep(0.5)
            server.send_signal(signal.SIGTERM)
            finished = in_flight.result(timeout=120)
        check(finished.choices[0].finish_reason in ("length", "stop") and finished.usage.completion_tokens > 0,
              "a request in flight at SIGTERM is answered in full")
        check(server.wait(timeout=120) == 0, "SIGTERM: the server drains and exits 0")
    finally:
        if server.poll() is None:
            server.kill()


def run_checks(port):
    base = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)

    models = client.models.list()
    check([m.id for m in models.data] == ["smollm2"], "models.list names the served model")

    completion = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8,
                                           temperature=0, logprobs=2)
    choice = completion.choices[0]
    check(completion.object == "text_completion" and choice.finish_reason in ("length", "stop"), "completions.create")
    check(completion.usage.completion_tokens == len(choice.logprobs.tokens) <= 8, "usage counts the tokens logprobs lists")
    check(all(len(top) == 2 for top in choice.logprobs.top_logprobs), "logprobs=2 gives two alternatives per token")

    many = client.completions.create(model="smollm2", prompt=["Hello", "Goodbye"], max_tokens=4, n=2, seed=3, temperature=1)
    check(sorted(c.index for c in many.choices) == [0, 1, 2, 3], "two prompts with n=2 give four choices")

    chat = client.chat.completions.create(model="smollm2", temperature=0, max_completion_tokens=16,
                                          messages=[{"role": "system", "content": "Answer in one word."},
                                                    {"role": "user", "content": "What is the capital of France?"}])
    answer = chat.choices[0].message.content
    check(chat.choices[0].message.role == "assistant" and "Paris" in answer, f"chat.completions.create: {answer!r}")

    stream = client.chat.completions.create(model="smollm2", temperature=0, max_completion_tokens=16, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "system", "content": "Answer in one word."},
                                                      {"role": "user", "content": "What is the capital of France?"}])
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    check("".join(pieces) == answer, "streamed chat equals the whole answer")
    check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens and finish is not None,
          "the stream ends with a finish reason and usage")

    streamed = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8,
                                         temperature=0, stream=True)
    check("".join(c.choices[0].text for c in streamed if c.choices) == choice.text, "streamed completion equals the whole one")

    error = expect_error(openai.BadRequestError, 400,
                         lambda: client.completions.create(model="smollm2", prompt="x", temperature=5), "temperature out of range")
    check(error.body.get("param") == "temperature", "the 400 names the field")
    expect_error(openai.BadRequestError, 400,
                 lambda: client.completions.create(model="smollm2", prompt="x", max_tokens=5000), "prompt + max_tokens past --ctx")
    expect_error(openai.BadRequestError, 400,
                 lambda: client.chat.completions.create(model="smollm2", messages=[{"role": "robot", "content": "x"}]),
                 "an unknown role")
    expect_error(openai.NotFoundError, 404,
                 lambda: client.completions.create(model="gpt-4", prompt="x"), "an unknown model")
    wrong = openai.OpenAI(base_url=base, api_key="wrong", max_retries=0)
    expect_error(openai.AuthenticationError, 401, lambda: wrong.models.list(), "a wrong API key")

    # 4 in the batch and 2 waiting: 8 long requests at once, so some are refused with 429.
    def long_request(_):
        try:
            client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=200, temperature=0)
            return 200
        except openai.RateLimitError as error:
            return error.status_code
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(long_request, range(8)))
    check(statuses.count(200) >= 6 and statuses.count(429) >= 1 and set(statuses) <= {200, 429},
          f"a full queue answers 429 and the rest complete: {statuses}")

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as response:
        check(json.load(response)["status"] == "ok", "/health is public and ok")


if __name__ == "__main__":
    main()
