#!/usr/bin/env bash
# Builds llama.cpp's command-line tools from the llama-cpp-python 0.3.36 sdist (PyPI) into the
# cache, for comparisons only (never committed, never linked into SwiftGPT):
#
#   scripts/build-llama-cpp.sh native [TARGET...]   # -march=native (AVX-512 where the CPU has it)
#   scripts/build-llama-cpp.sh avx2 [TARGET...]     # AVX2 + FMA + F16C only, AVX-512 off: Zen3-like on any x86
#
# TARGETs default to llama-perplexity llama-bench llama-server. Prints the bin directory last.
# The cache is $SWIFTGPT_CACHE (default ~/.cache/swiftgpt); a finished build is reused.
set -euo pipefail

variant=${1:-native}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(llama-perplexity llama-bench llama-server)
cache="${SWIFTGPT_CACHE:-$HOME/.cache/swiftgpt}"
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
source_dir="$cache/llama.cpp/src-$version"
build_dir="$cache/llama.cpp/build-$variant"

case "$variant" in
    native) flags=(-DGGML_NATIVE=ON) ;;
    avx2) flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
                 -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF) ;;
    *) echo "build-llama-cpp: unknown variant '$variant' (native, avx2)" >&2; exit 2 ;;
esac
command -v cmake >/dev/null || { echo "build-llama-cpp: needs cmake (apt-get install cmake)" >&2; exit 1; }

if [ ! -f "$source_dir/CMakeLists.txt" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # The sdist itself: `pip download --no-binary` would build its build dependencies (cmake) from source.
    url=$(curl -fsS https://pypi.org/simple/llama-cpp-python/ | grep -o "https://[^\"#]*llama_cpp_python-$version.tar.gz" | head -n 1)
    [ -n "$url" ] || { echo "build-llama-cpp: llama-cpp-python $version not found on PyPI" >&2; exit 1; }
    curl -fsS -o "$work/sdist.tar.gz" "$url"
    echo "$sha256  $work/sdist.tar.gz" | sha256sum -c --quiet - || { echo "build-llama-cpp: the sdist's SHA-256 differs" >&2; exit 1; }
    tar -xzf "$work/sdist.tar.gz" -C "$work"
    mkdir -p "$(dirname "$source_dir")"
    rm -rf "$source_dir" && mv "$work/llama_cpp_python-$version/vendor/llama.cpp" "$source_dir"
fi

cmake -S "$source_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_OPENMP=ON "${flags[@]}" >/dev/null
cmake --build "$build_dir" --target "${targets[@]}" -j "$(nproc)" >/dev/null
echo "$build_dir/bin"
