#!/usr/bin/env bash
# Builds the `quant` crate's tests for aarch64 and runs them under
# qemu-aarch64, so the NEON kernels are checked against the scalar reference
# on an x86-64 machine. Needs the rustup target, a cross linker and
# qemu-user; installs them when it can (rustup; apt-get as root or with
# sudo). Without them it prints why and exits 0, unless REQUIRE_AARCH64=1
# or CI=true (CI can install them, so a skip there is a failure).
# Once set up, a failing test fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=aarch64-unknown-linux-gnu
skip() {
  echo "SKIPPED: aarch64 (NEON) tests: $1" >&2
  if [ "${REQUIRE_AARCH64:-0}" = 1 ] || [ "${CI:-}" = true ]; then exit 1; fi
  exit 0
}

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >/dev/null 2>&1 || skip "could not add the rustup target $TARGET"
fi
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null && SUDO="sudo -n" \
      || skip "qemu-user and gcc-aarch64-linux-gnu are missing and apt-get needs root"
  fi
  export DEBIAN_FRONTEND=noninteractive
  { $SUDO apt-get install -y -q qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 \
      && $SUDO apt-get install -y -q qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null 2>&1; }; } \
    || skip "could not install qemu-user and gcc-aarch64-linux-gnu"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
echo "aarch64: testing quant (NEON kernels) under $(qemu-aarch64 --version | head -1)"
cargo test -p quant --release --locked --target "$TARGET" "$@"
