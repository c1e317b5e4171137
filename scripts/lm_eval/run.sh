#!/usr/bin/env bash
# lm-evaluation-harness's `local-completions` model against `mamba-gguf
# serve`, on the small local multiple-choice task in tasks/ (16 questions,
# no download): the harness scores each choice by the log-likelihood the
# server reports for it (`/v1/completions` with token-id prompts, `echo`,
# `logprobs: 1`, `max_tokens: 1`), tokenizing through the server's own
# `/tokenizer_info`, `/tokenize` and `/detokenize` (its remote tokenizer), so
# no Hugging Face tokenizer is needed.
#
# Usage: bash scripts/lm_eval/run.sh [MODEL.gguf] [more lm_eval arguments]
#   Without a model it converts the repository's tiny Falcon Mamba (random
#   weights: expect chance accuracy) to Q4_0 first. Needs lm_eval
#   (pip install "lm_eval[api]"; $PYTHON picks the interpreter) and the CLI
#   ($MAMBA_GGUF_BIN, else target/release/mamba-gguf, built if missing).
# Other tasks: --tasks hellaswag etc. (those download their data sets).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"
"$python" -c "import lm_eval" 2>/dev/null || {
  echo "lm_eval is not installed for $python: pip install \"lm_eval[api]\"" >&2
  exit 2
}
bin="${MAMBA_GGUF_BIN:-$root/target/release/mamba-gguf}"
[ -x "$bin" ] || (cd "$root" && cargo build --release --quiet)

tmp="$(mktemp -d)"
pid=""
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

model="${1:-}"
[ $# -eq 0 ] || shift
if [ -z "$model" ]; then
  model="$tmp/falcon-mamba-tiny-q4_0.gguf"
  "$bin" convert "$root/tests/fixtures/hf/falcon-mamba-tiny" -o "$model" --type q4_0 --force >/dev/null
fi

port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" serve -m "$model" --port "$port" >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }
  sleep 0.2
done

cd "$root/scripts/lm_eval/tasks"
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "$python" -m lm_eval \
  --model local-completions \
  --model_args "base_url=http://127.0.0.1:$port/v1/completions,model=mamba-gguf,tokenizer_backend=remote,tokenized_requests=True,num_concurrent=1,max_retries=1" \
  --include_path . --tasks mamba_gguf_mc --output_path "$tmp/out" "$@"
