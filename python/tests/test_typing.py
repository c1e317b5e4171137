"""The package is typed (py.typed, .pyi stubs): the examples pass
`mypy --strict` and run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mamba_gguf
from conftest import GGUF, ROOT, skip_or_fail

EXAMPLES = ROOT / "python" / "examples"


def test_examples_pass_mypy_strict() -> None:
    try:
        import mypy  # noqa: F401
    except ImportError:
        skip_or_fail("mypy is not installed")
    env = dict(os.environ)
    pkg = Path(mamba_gguf.__file__).resolve().parent.parent
    if "site-packages" not in pkg.parts:
        env["MYPYPATH"] = str(pkg)  # a source checkout on PYTHONPATH
    files = sorted(str(p) for p in EXAMPLES.glob("*.py"))
    assert files
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_examples_run(hf_copy: Path) -> None:
    for script, arg in [("llama_cpp_style.py", GGUF), ("transformers_style.py", hf_copy)]:
        r = subprocess.run(
            [sys.executable, str(EXAMPLES / script), str(arg)], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip()
