#!/usr/bin/env bash
# The CUDA backend on a real GPU (issue 13), for a task lent a GPU machine:
# driver only (no nvcc, no network, no registry), 10 minutes a command.
#
# Here (a machine with Rust), build and strip what travels:
#     bash scripts/gpu/check.sh --prepare        # fills gpu-bin/ (git-ignored)
# Then, with the device tool, carrying gpu-bin:
#     bash scripts/gpu/check.sh                  # writes its figures to $OUT
#
# There it runs, each step's output in $OUT/<step>.txt:
#   1. nvidia-smi;
#   2. tests/cuda_emu.rs on the GPU (MAMBA_GGUF_TEST_DEVICE=cuda: float
#      weights against transformers, every quantized type against the CPU,
#      batched decode, states across backends, the CLI);
#   3. compute-sanitizer memcheck and racecheck on a short run of the tiny
#      fixture, when compute-sanitizer is on the machine;
#   4. the quant crate's tests with AVX-512 (the host CPU has it, ours do not);
#   5. a 7B-shape random Falcon Mamba (scripts/fixtures/make_big_random.py,
#      needs numpy) converted to Q4_K_M, then bench -p 512 -n 128 at depths
#      0 and 16384 on the GPU, with the peak VRAM sampled by nvidia-smi.
# Targets (issue 13): decode >= 75% of the measured copy bandwidth
# (file bytes per token / bandwidth), depth 16384 within 3% of depth 0, VRAM
# <= file + 300 MB for one sequence.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=gpu-bin

if [ "${1:-}" = "--prepare" ]; then
  set -e
  cargo build --release
  # The test binaries' paths, from cargo's JSON messages.
  cuda_test=$(cargo test --release --no-run --test cuda_emu --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="cuda_emu": print(m["executable"])')
  quant_test=$(cargo test --release -p quant --features avx512 --no-run --lib --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["executable"])' | head -1)
  rm -rf "$BIN" && mkdir -p "$BIN"
  cp target/release/mamba-gguf "$BIN/mamba-gguf"
  cp "$cuda_test" "$BIN/cuda_emu"
  cp "$quant_test" "$BIN/quant_tests"
  strip "$BIN"/*
  # The tests find the repository and the CLI by the paths they were built
  # with; the device recreates them with a symlink.
  echo "$PWD" > "$BIN/built-in"
  du -sh "$BIN"
  exit 0
fi

OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
step() { echo "== $1 ($(date +%T))"; }

built=$(cat "$BIN/built-in")
if [ "$built" != "$PWD" ]; then
  mkdir -p "$(dirname "$built")" && ln -sfn "$PWD" "$built"
fi
mkdir -p target/release target/tmp && cp "$BIN/mamba-gguf" target/release/mamba-gguf

step nvidia-smi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

step "GPU tests"
MAMBA_GGUF_TEST_DEVICE=cuda timeout 240 "$BIN/cuda_emu" --test-threads 1 --nocapture \
  > "$OUT/cuda_tests.txt" 2>&1
echo "rc=$?" >> "$OUT/cuda_tests.txt"

step sanitizer
tiny=tests/fixtures/llamacpp/falcon-mamba-tiny-f32.gguf
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    timeout 120 compute-sanitizer --tool "$tool" "$BIN/mamba-gguf" run -m "$tiny" \
      -p "The falcon" -n 4 --temp 0 --device cuda > "$OUT/sanitizer-$tool.txt" 2>&1
    echo "rc=$?" >> "$OUT/sanitizer-$tool.txt"
  done
else
  echo "compute-sanitizer not on this machine" > "$OUT/sanitizer.txt"
fi

step "quant AVX-512"
MAMBA_GGUF_SIMD=avx512 timeout 120 "$BIN/quant_tests" > "$OUT/quant-avx512.txt" 2>&1
echo "rc=$?" >> "$OUT/quant-avx512.txt"

step "7B random model"
big=/tmp/big && mkdir -p "$big"
timeout 300 python3 scripts/fixtures/make_big_random.py 7b "$big" > "$OUT/make-7b.txt" 2>&1
src="$big/falcon-mamba-7b-random"
timeout 300 "$BIN/mamba-gguf" convert "$src" -o "$big/7b-q4_k_m.gguf" --type q4_k_m --force \
  > "$OUT/convert-7b.txt" 2>&1
rm -rf "$src"

step bench
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/vram-samples.txt" 2>/dev/null &
smi=$!
timeout 240 "$BIN/mamba-gguf" bench -m "$big/7b-q4_k_m.gguf" -p 512 -n 128 --depth 0,16384 \
  --device cuda --json > "$OUT/bench-7b-cuda.json" 2> "$OUT/bench-7b-cuda.log"
kill "$smi" 2>/dev/null
sort -n "$OUT/vram-samples.txt" | tail -1 > "$OUT/vram-peak-mib.txt"
ls -l "$big/7b-q4_k_m.gguf" >> "$OUT/vram-peak-mib.txt"
step done
