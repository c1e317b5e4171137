#!/usr/bin/env bash
# Prefill and decode of one or two mamba-gguf builds and llama.cpp on the
# same GGUF files, each file's runs back to back (a measurement, not a
# test; the README's per-type tables come from it).
#
#   scripts/bench/side_by_side.sh LLAMA_BIN_DIR NEW_BIN [OLD_BIN] -- FILE.gguf...
#
#   LLAMA_BIN_DIR  holds llama-bench (and its shared libraries)
#   NEW_BIN        a release build of mamba-gguf
#   OLD_BIN        optional: an earlier build, run first on each file
#
# Environment knobs: THREADS=2 PP=256 TG=32 REPS=3. On a shared machine,
# stop other heavy jobs first (kill -STOP), as runs of a few seconds move
# by 5-10% with load.
set -euo pipefail
if [ $# -lt 4 ]; then sed -n 2,14p "$0"; exit 2; fi
LB=$1; NEW=$2; shift 2
OLD=""
if [ "$1" != "--" ]; then OLD=$1; shift; fi
[ "$1" = "--" ] || { echo "expected -- before the files" >&2; exit 2; }
shift
THREADS=${THREADS:-2}; PP=${PP:-256}; TG=${TG:-32}; REPS=${REPS:-3}
args=(-p "$PP" -n "$TG" -r "$REPS" -t "$THREADS")
# The mean ± sd column of each test row, "pp / tg".
cols() { grep -E "pp$PP|tg$TG" | awk -F'|' '{printf "%s /", $8}'; }
echo "| file | $( [ -n "$OLD" ] && echo "before (pp$PP / tg$TG) | ")now | llama.cpp |"
for f in "$@"; do
  row="| $(basename "$f")"
  if [ -n "$OLD" ]; then row="$row | $("$OLD" bench -m "$f" "${args[@]}" 2>&1 | cols)"; fi
  row="$row | $("$NEW" bench -m "$f" "${args[@]}" 2>&1 | cols)"
  row="$row | $(LD_LIBRARY_PATH="$LB" "$LB/llama-bench" -m "$f" "${args[@]}" 2>&1 | cols) |"
  echo "$row"
done
