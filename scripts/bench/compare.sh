#!/usr/bin/env bash
# Side-by-side measurement of mamba-gguf against llama.cpp on the same GGUF
# files (a measurement, not a test). It does not build or vendor llama.cpp:
# point it at an existing build's bin dir and source tree.
#
#   scripts/bench/compare.sh HF_DIR LLAMA_BIN_DIR LLAMA_SRC_DIR MAMBA_GGUF_BIN OUT_DIR [PYTHON]
#
#   HF_DIR          a Falcon Mamba checkpoint folder (e.g. the random 1.4B one
#                   from scripts/fixtures/make_big_random.py 1.4b DIR)
#   LLAMA_BIN_DIR   holds llama-bench and llama-quantize
#   LLAMA_SRC_DIR   holds convert_hf_to_gguf.py and gguf-py/
#   MAMBA_GGUF_BIN  a release build of mamba-gguf
#   OUT_DIR         GGUFs, /usr/bin/time -v logs, raw bench JSON, summary.md
#   PYTHON          a python with numpy/torch/safetensors for the HF converter
#                   (default python3)
#
# Environment knobs (defaults = the brief): THREADS=2 PP=512 TG=128 REPS=3
# DEPTHS=0,4096 DEPTH_TG=64 DEPTH_REPS=2 STEPS="convert bench depth"
# TYPES="q4_0 q4_k_m".
# The machine may be shared: runs of the two programs are interleaved file by
# file, `uptime` is logged before each, and the summary gives ratios of runs
# made back to back.
set -euo pipefail
if [ $# -lt 5 ]; then sed -n 2,24p "$0"; exit 2; fi
HF=$1; LB=$2; LS=$3; MG=$4; OUT=$5; PY=${6:-python3}
THREADS=${THREADS:-2}; PP=${PP:-512}; TG=${TG:-128}; REPS=${REPS:-3}
DEPTHS=${DEPTHS:-0,4096}; DEPTH_TG=${DEPTH_TG:-64}; DEPTH_REPS=${DEPTH_REPS:-2}
STEPS=${STEPS:-convert bench depth}; TYPES=${TYPES:-q4_0 q4_k_m}
mkdir -p "$OUT"
TIME=/usr/bin/time
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/compare.log"; }
load() { echo "$(date -u +%FT%TZ) $1 $(uptime)" >> "$OUT/load.log"; }
upper() { echo "$1" | tr a-z A-Z; }

if [[ " $STEPS " == *" convert "* ]]; then
  for ty in $TYPES; do
    log "ours: convert $ty"; load "ours-convert-$ty"
    $TIME -v -o "$OUT/ours-convert-$ty.time" "$MG" convert "$HF" -o "$OUT/ours-$ty.gguf" --type "$ty" --force --quiet \
      > "$OUT/ours-convert-$ty.log" 2>&1
  done
  log "llama.cpp: convert_hf_to_gguf.py --outtype bf16"; load "llama-convert-bf16"
  HF_HUB_OFFLINE=1 PYTHONPATH="$LS/gguf-py" $TIME -v -o "$OUT/llama-convert-bf16.time" \
    "$PY" "$LS/convert_hf_to_gguf.py" "$HF" --outtype bf16 --outfile "$OUT/llama-bf16.gguf" \
    > "$OUT/llama-convert-bf16.log" 2>&1
  for ty in $TYPES; do
    log "llama.cpp: llama-quantize $(upper "$ty")"; load "llama-quantize-$ty"
    $TIME -v -o "$OUT/llama-quantize-$ty.time" "$LB/llama-quantize" "$OUT/llama-bf16.gguf" \
      "$OUT/llama-$ty.gguf" "$(upper "$ty")" "$THREADS" > "$OUT/llama-quantize-$ty.log" 2>&1
  done
fi

if [[ " $STEPS " == *" bench "* ]]; then
  for ty in $TYPES; do for who in ours llama; do
    f="$OUT/$who-$ty.gguf"
    log "pp$PP/tg$TG on $f: llama-bench"; load "lb-$who-$ty"
    "$LB/llama-bench" -m "$f" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" -o json \
      > "$OUT/lb-$who-$ty.json" 2> "$OUT/lb-$who-$ty.err"
    log "pp$PP/tg$TG on $f: mamba-gguf bench"; load "mg-$who-$ty"
    "$MG" bench -m "$f" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" --json \
      > "$OUT/mg-$who-$ty.json" 2> "$OUT/mg-$who-$ty.err"
  done; done
fi

if [[ " $STEPS " == *" depth "* ]]; then
  f="$OUT/ours-q4_0.gguf"; [ -f "$f" ] || f="$OUT/ours-$(echo $TYPES | cut -d' ' -f1).gguf"
  log "decode at depth $DEPTHS on $f: llama-bench"; load "lb-depth"
  "$LB/llama-bench" -m "$f" -t "$THREADS" -p 0 -n "$DEPTH_TG" -d "$DEPTHS" -r "$DEPTH_REPS" -o json \
    > "$OUT/lb-depth.json" 2> "$OUT/lb-depth.err"
  log "decode at depth $DEPTHS on $f: mamba-gguf bench"; load "mg-depth"
  "$MG" bench -m "$f" -t "$THREADS" -p 0 -n "$DEPTH_TG" --depth "$DEPTHS" -r "$DEPTH_REPS" --json \
    --plot "$OUT/mg-depth.svg" > "$OUT/mg-depth.json" 2> "$OUT/mg-depth.err"
fi

python3 "$(dirname "$0")/summarize.py" "$OUT" | tee "$OUT/summary.md"
