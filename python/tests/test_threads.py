"""Threads and Ctrl-C: generations on several Models in several threads
finish with the results they have alone; threads sharing one Model take
turns; a thread that starts a second generation while its first stream is
open gets an error, not a deadlock; KeyboardInterrupt stops a generation
between tokens and leaves the Model usable."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any, Dict, List

import pytest

import mamba_gguf
from conftest import GGUF
from mamba_gguf import MambaGgufError

PROMPTS = ["The falcon flies", "Once upon a time", "In the beginning", "Rust and Python"]


def _alone(prompt: str) -> str:
    m = mamba_gguf.Model(GGUF)
    text: str = m(prompt, max_tokens=48, temperature=0)["choices"][0]["text"]
    return text


def _run_threads(target: Any, n: int) -> Dict[int, Any]:
    results: Dict[int, Any] = {}
    errors: List[BaseException] = []

    def wrap(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread did not finish (deadlock?)"
    assert not errors, errors
    return results


def test_models_in_threads() -> None:
    want = {i: _alone(p) for i, p in enumerate(PROMPTS[:2])}
    models = [mamba_gguf.Model(GGUF, n_threads=1) for _ in range(2)]

    def work(i: int) -> str:
        chunks = models[i](PROMPTS[i], max_tokens=48, temperature=0, stream=True)
        return "".join(c["choices"][0]["text"] for c in chunks)

    assert _run_threads(work, 2) == want


def test_threads_share_one_model() -> None:
    want = {i: _alone(p) for i, p in enumerate(PROMPTS)}
    shared = mamba_gguf.Model(GGUF)

    def work(i: int) -> str:
        text: str = shared(PROMPTS[i], max_tokens=48, temperature=0)["choices"][0]["text"]
        return text

    assert _run_threads(work, len(PROMPTS)) == want


def test_open_stream_in_the_same_thread_is_an_error_not_a_deadlock() -> None:
    m = mamba_gguf.Model(GGUF)
    stream = m("The falcon", max_tokens=10, temperature=0, stream=True)
    next(stream)
    with pytest.raises(MambaGgufError, match="busy"):
        m("Another", max_tokens=2)
    with pytest.raises(MambaGgufError, match="busy"):
        m.save_state()
    # Another thread waits for it instead (the GIL is free while it waits).
    done: List[str] = []
    t = threading.Thread(target=lambda: done.append(m("Another", max_tokens=2, temperature=0)["choices"][0]["text"]))
    t.start()
    time.sleep(0.3)
    assert not done
    rest = list(stream)
    assert rest[-1]["choices"][0]["finish_reason"] is not None
    t.join(timeout=60)
    assert len(done) == 1
    # A dropped stream frees the model too.
    s2 = m("The falcon", max_tokens=10, stream=True)
    next(s2)
    del s2
    m("Another", max_tokens=2)


def _interrupt_after(seconds: float) -> threading.Timer:
    t = threading.Timer(seconds, _thread.interrupt_main)
    t.start()
    return t


def test_keyboard_interrupt_stops_generate() -> None:
    m = mamba_gguf.from_pretrained(GGUF)
    ids = m.tokenize(b"The falcon")
    timer = _interrupt_after(0.5)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        m.generate(ids, max_new_tokens=1_000_000, eos_token_id=[])
    timer.join()
    assert time.monotonic() - t0 < 20
    # The model is free and works.
    assert len(m.generate(ids, max_new_tokens=2, eos_token_id=[])) == len(ids) + 2


def test_keyboard_interrupt_stops_a_stream_and_a_prefill() -> None:
    m = mamba_gguf.Model(GGUF, prefill_chunk=16)
    timer = _interrupt_after(0.5)
    n = 0
    with pytest.raises(KeyboardInterrupt):
        for _ in m("The falcon", max_tokens=0, temperature=0, stream=True, logit_bias={11: -100.0}):
            n += 1
    timer.join()
    assert n > 0
    # A long prompt is interrupted between prefill chunks.
    long = [1000 + i % 60_000 for i in range(200_000)]
    timer = _interrupt_after(0.5)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        m(long, max_tokens=1)
    timer.join()
    assert time.monotonic() - t0 < 20
    assert m("The falcon", max_tokens=2)["usage"]["completion_tokens"] == 2
