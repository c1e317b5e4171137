"""save_state / load_state (bytes, pickled, files): a generation continued
from a saved state equals the uninterrupted one; the state file is the
CLI's format both ways."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import mamba_gguf
from conftest import GGUF

PROMPT = "The falcon flies over the"


def _uninterrupted(n: int) -> List[int]:
    m = mamba_gguf.from_pretrained(GGUF)
    ids: List[int] = m.generate(m.tokenize(PROMPT.encode(), special=True), max_new_tokens=n, eos_token_id=[])
    return ids


@pytest.mark.parametrize("via", ["object", "pickle", "bytes", "file"])
def test_state_continues_exactly(via: str, tmp_path: Path) -> None:
    full = _uninterrupted(24)
    a = mamba_gguf.from_pretrained(GGUF)
    prompt = a.tokenize(PROMPT.encode(), special=True)
    first: List[int] = a.generate(prompt, max_new_tokens=10, eos_token_id=[])
    assert first == full[: len(first)]
    b = mamba_gguf.from_pretrained(GGUF)
    if via == "file":
        path = tmp_path / "s.state"
        a.save_state_file(path)
        b.load_state_file(path)
    else:
        state = a.save_state()
        assert isinstance(state, mamba_gguf.ModelState)
        if via == "pickle":
            state = pickle.loads(pickle.dumps(state))
        b.load_state(bytes(state) if via == "bytes" else state)
    # The loaded context is the first run's: continuing it feeds nothing.
    out = b(first, max_tokens=14, temperature=0, logprobs=0)
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == len(first)
    rest = full[len(first):]
    assert out["choices"][0]["logprobs"]["tokens"] == [b._native.token_piece(i) for i in rest]
    # The same through generate().
    if via == "file":
        b.load_state_file(path)
    else:
        b.load_state(a.save_state())
    assert b.generate(first, max_new_tokens=14, eos_token_id=[]) == full


def test_reset_and_state_of_an_empty_context(tmp_path: Path) -> None:
    m = mamba_gguf.Model(GGUF)
    empty = m.save_state()
    m("The falcon", max_tokens=3, temperature=0)
    m.load_state(empty)
    out = m("The falcon", max_tokens=3, temperature=0)
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    m.reset()
    assert m._native.n_past() == 0


def test_cli_state_files_both_ways(cli: Path, cli_run: Callable[..., Dict[str, Any]], tmp_path: Path) -> None:
    """The CLI's --save-state file loads here (its context continues with the
    next prompt, as `run --load-state` continues it), and ours loads in the
    CLI."""
    cli_state = tmp_path / "cli.state"
    cli_run(PROMPT, 6, GGUF, "--save-state", str(cli_state))
    ref = cli_run(" and then", 8, GGUF, "--load-state", str(cli_state))
    m = mamba_gguf.from_pretrained(GGUF)
    m.load_state_file(cli_state)
    out = m(" and then", max_tokens=8, temperature=0)
    assert out["choices"][0]["text"] == ref["text"]

    ours = tmp_path / "ours.state"
    m.reset()
    ids = m.generate(m.tokenize(PROMPT.encode(), special=True), max_new_tokens=6, eos_token_id=[])
    m.save_state_file(ours)
    ref2 = cli_run(" and then", 8, GGUF, "--load-state", str(ours))
    m2 = mamba_gguf.Model(GGUF)
    m2.load_state_file(ours)
    out2 = m2(ids + m2.tokenize(b" and then", special=True), max_tokens=8, temperature=0)
    assert out2["usage"]["prompt_tokens_details"]["cached_tokens"] == len(ids)
    assert out2["choices"][0]["text"] == ref2["text"]
