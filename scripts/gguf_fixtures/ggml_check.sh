#!/usr/bin/env bash
# Manual check: ggml's own C GGUF loader (libggml-base.so from a llama.cpp or
# ggml build) reads what our writer writes, and accepts no damaged file that
# our reader refuses (gguf/tests/ggml_interop.rs). Not run by CI: building
# ggml there takes longer than CI can spend, and it is not on PyPI/crates.io.
#
# Usage: GGML_BASE_LIB=/path/to/libggml-base.so bash scripts/gguf_fixtures/ggml_check.sh
# ($GGUF_PYTHON picks the Python that runs read_with_ggml.py; default python3.)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${GGML_BASE_LIB:?set GGML_BASE_LIB to a libggml-base.so}"
[ -f "$GGML_BASE_LIB" ] || { echo "GGML_BASE_LIB=$GGML_BASE_LIB: no such file" >&2; exit 1; }
exec cargo test -p gguf --features ggml-interop --test ggml_interop -- --nocapture
