"""Fixtures of the Python package's tests: the repository's GGUF and Hugging
Face fixtures, and the CLI binary (the reference the completions must equal).

A test that cannot run here (no CLI binary, a package missing) skips with
its reason, except under CI=true, where CI installs everything and a skip
fails instead (the repository's rule for tests, tests/support/skip.rs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# llama.cpp's own GGUFs of falcon-mamba-tiny: not committed, rebuilt byte for
# byte (sha256 in tests/fixtures/llamacpp/files.json) by the Rust tests or
# `cargo run --example llamacpp_fixtures`; the `llamacpp_ggufs` fixture below
# makes them when missing.
GGUF = FIXTURES / "llamacpp" / "falcon-mamba-tiny-q4_k_m.gguf"
GGUF_F32 = FIXTURES / "llamacpp" / "falcon-mamba-tiny-f32.gguf"
HF_TINY = FIXTURES / "hf" / "falcon-mamba-tiny"
HERE = Path(__file__).resolve().parent


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def skip_or_fail(why: str) -> None:
    if under_ci():
        pytest.fail(f"SKIPPED under CI=true is a failure: {why}")
    pytest.skip(why)


def _find_cli() -> Path | None:
    env = os.environ.get("MAMBA_GGUF_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("release", "debug"):
        p = target / profile / "mamba-gguf"
        if p.is_file():
            return p
    return None


@pytest.fixture(scope="session", autouse=True)
def llamacpp_ggufs() -> None:
    """GGUF and GGUF_F32, made by the `llamacpp_fixtures` example (built by
    cargo test into $CARGO_TARGET_DIR/{debug,release}/examples, else run
    with cargo) when missing. It checks the files' sha256 itself."""
    if GGUF.is_file() and GGUF_F32.is_file():
        return
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = next((p for p in (target / pr / "examples" / "llamacpp_fixtures" for pr in ("debug", "release"))
                if p.is_file()), None)
    if exe is not None:
        cmd = [str(exe)]
    elif shutil.which("cargo"):
        cmd = ["cargo", "run", "--quiet", "--example", "llamacpp_fixtures"]
    else:
        skip_or_fail("llama.cpp's tiny GGUFs are missing and neither the llamacpp_fixtures example nor cargo "
                     "is here to make them (cargo run --example llamacpp_fixtures)")
        return
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    assert GGUF.is_file() and GGUF_F32.is_file(), cmd


@pytest.fixture(scope="session")
def cli() -> Path:
    """The mamba-gguf CLI (MAMBA_GGUF_BIN, else target/{release,debug})."""
    p = _find_cli()
    if p is None or not p.is_file():
        skip_or_fail("no mamba-gguf CLI binary (build it with cargo build, or set MAMBA_GGUF_BIN)")
    assert p is not None
    return p


@pytest.fixture(scope="session")
def cli_run(cli: Path) -> Callable[..., Dict[str, Any]]:
    """`mamba-gguf run --json` (greedy): its prompt ids, ids and text."""

    def run(prompt: str, n: int, model: Path = GGUF, *extra: str) -> Dict[str, Any]:
        out = subprocess.run(
            [str(cli), "run", "-m", str(model), "-p", prompt, "-n", str(n), "--temp", "0", "--json", *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        res: Dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return res

    return run


@pytest.fixture(scope="session")
def model() -> Iterator[Any]:
    """One model (with both faces) for the tests that need no fresh one."""
    import mamba_gguf

    yield mamba_gguf.from_pretrained(GGUF)


@pytest.fixture
def hf_copy(tmp_path: Path) -> Path:
    """The tiny Hugging Face checkpoint, copied to a fresh folder."""
    dst = tmp_path / "falcon-mamba-tiny"
    shutil.copytree(HF_TINY, dst)
    return dst

