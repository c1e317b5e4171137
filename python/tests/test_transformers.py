"""transformers' face: from_pretrained converts a checkpoint folder once and
reuses it; generate returns the ids transformers would (prompt included,
end-of-sequence id included, padded rows, numpy in numpy out); pipeline
returns what transformers' pipeline returns, shape for shape (recorded by
record_pipeline_shapes.py in fixtures/transformers_shapes.json)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

import mamba_gguf
from conftest import GGUF, HERE, HF_TINY
from shapes import CALLS, CHAT, describe

RECORDED = json.loads((HERE / "fixtures" / "transformers_shapes.json").read_text())


def test_from_pretrained_converts_once_and_reuses(
    hf_copy: Path, cli: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cache = hf_copy / ".mamba-gguf" / "falcon-mamba-tiny-q4_k_m.gguf"
    a = mamba_gguf.from_pretrained(hf_copy)
    assert cache.is_file() and a.model_path == str(cache)
    err = capfd.readouterr().err
    assert "converting" in err and "wrote" in err
    st = cache.stat()
    b = mamba_gguf.AutoModelForCausalLM.from_pretrained(hf_copy)
    assert b.model_path == str(cache)
    assert "converting" not in capfd.readouterr().err
    st2 = cache.stat()
    assert (st2.st_mtime_ns, st2.st_ino) == (st.st_mtime_ns, st.st_ino)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]
    # The cached file is what the CLI's convert makes.
    ref = tmp_path / "cli.gguf"
    subprocess.run([str(cli), "convert", str(HF_TINY), "-o", str(ref), "--type", "q4_k_m", "-q"], check=True)
    assert ref.read_bytes() == cache.read_bytes()
    # Another quant is another file; a checkpoint file newer than the cache
    # makes the next call convert again.
    c = mamba_gguf.from_pretrained(hf_copy, quant="q8_0", progress=False)
    assert c.model_path.endswith("falcon-mamba-tiny-q8_0.gguf")
    later = time.time() + 5
    os.utime(hf_copy / "config.json", (later, later))
    mamba_gguf.from_pretrained(hf_copy)
    assert "converting" in capfd.readouterr().err
    assert cache.stat().st_mtime_ns != st.st_mtime_ns


def test_generate_equals_the_cli(model: Any, cli_run: Callable[..., Dict[str, Any]]) -> None:
    ref = cli_run("The falcon flies", 20)
    out = model.generate(ref["prompt_ids"])
    assert isinstance(out, list) and out[: len(ref["prompt_ids"])] == ref["prompt_ids"]
    gen = out[len(ref["prompt_ids"]):]
    if ref["stats"]["stop"] == "eos":
        assert gen[-1] in model._native.eos_ids
        gen = gen[:-1]
    assert gen == ref["ids"] and len(ref["ids"]) <= 20


def test_generate_shapes_match_transformers(model: Any) -> None:
    g = RECORDED["generate"]
    ids = model.tokenize(b"The falcon flies")
    assert len(ids) == g["prompt_len"]
    out = model.generate([ids], max_new_tokens=4)
    assert [len(out), len(out[0])] == g["greedy_shape"] and out[0][: len(ids)] == ids
    # An end-of-sequence id ends the row and is kept, as in transformers.
    first = out[0][len(ids)]
    stopped = model.generate([ids], max_new_tokens=4, eos_token_id=first)
    assert [len(stopped), len(stopped[0])] == g["eos_first_shape"] and stopped[0][-1] == first
    batch = model.generate([ids, ids], max_new_tokens=3)
    assert [len(batch), len(batch[0])] == g["batch_shape"]


def test_generate_pads_rows_and_keeps_numpy(model: Any) -> None:
    np = pytest.importorskip("numpy")
    a = model.tokenize(b"The falcon flies")
    b = model.tokenize(b"Once upon a time")
    ra = model.generate(a, max_new_tokens=6)
    first = ra[len(a)]
    # Row a stops at once (its first token made an end-of-sequence id).
    rows = model.generate([a, b], max_new_tokens=6, eos_token_id=first, pad_token_id=7)
    assert rows[0] == a + [first] + [7] * (len(rows[1]) - len(a) - 1)
    assert len(rows[0]) == len(rows[1])
    x = np.array([a], dtype=np.int64)
    y = model.generate(x, max_new_tokens=6)
    assert isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (1, len(ra))
    assert y[0].tolist() == ra
    y1 = model.generate(np.array(a, dtype=np.int32), max_new_tokens=6)
    assert y1.ndim == 1 and y1.dtype == np.int32 and y1.tolist() == ra
    # Defaults: 20 new tokens, or max_length in all.
    assert len(model.generate(a, eos_token_id=[])) == len(a) + 20
    assert len(model.generate(a, max_length=len(a) + 3, eos_token_id=[])) == len(a) + 3


def test_generate_sampling(model: Any) -> None:
    ids = model.tokenize(b"The falcon")
    a = model.generate([ids], do_sample=True, seed=3, max_new_tokens=8, num_return_sequences=2, eos_token_id=[])
    b = model.generate([ids], do_sample=True, seed=3, max_new_tokens=8, num_return_sequences=2, eos_token_id=[])
    assert a == b and len(a) == 2 and a[0] != a[1]
    # repetition_penalty takes effect: greedy repeats a token within 100,
    # penalised it does not.
    plain = model.generate(ids, max_new_tokens=100, eos_token_id=[])[len(ids):]
    pen = model.generate(ids, max_new_tokens=100, eos_token_id=[], repetition_penalty=5.0)[len(ids):]
    assert len(set(plain)) < 100 and len(set(pen)) == 100


@pytest.mark.parametrize("name, inputs, kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_pipeline_shapes_equal_transformers(model: Any, name: str, inputs: Any, kwargs: Dict[str, Any]) -> None:
    pipe = mamba_gguf.pipeline("text-generation", model=model)
    res = pipe(inputs, seed=1, **kwargs)
    want = RECORDED["pipeline"][name]
    assert describe(res) == want["shape"]
    single = isinstance(inputs, str) or isinstance(inputs[0], dict)
    flat = res if single else [r for rs in res for r in rs]
    prompts = [inputs] * len(flat) if single else [p for p in inputs for _ in range(len(flat) // len(inputs))]
    if "starts_with_prompt" in want:
        assert want["starts_with_prompt"]
        assert all(r["generated_text"].startswith(p) for r, p in zip(flat, prompts))
    if "starts_with_messages" in want:
        assert want["starts_with_messages"] and want["last_role"] == "assistant"
        assert all(r["generated_text"][: len(p)] == p for r, p in zip(flat, prompts))
        assert all(r["generated_text"][-1]["role"] == "assistant" for r in flat)


def test_pipeline_generation_is_the_models(model: Any) -> None:
    pipe = mamba_gguf.pipeline("text-generation", model=model)
    ids = model.tokenize(b"The falcon flies")
    new = model.generate(ids, max_new_tokens=5)[len(ids):]
    text = model.detokenize([i for i in new if i not in model._native.eos_ids]).decode("utf-8", "replace")
    res = pipe("The falcon flies", do_sample=False, max_new_tokens=5)
    assert res == [{"generated_text": "The falcon flies" + text}]
    reply = pipe(CHAT, do_sample=False, max_new_tokens=5, return_full_text=False)[0]["generated_text"]
    chat_ids = model.tokenize(model.chat_prompt(CHAT).encode(), special=True)
    chat_new = model.generate(chat_ids, max_new_tokens=5)[len(chat_ids):]
    want = model.detokenize([i for i in chat_new if i not in model._native.eos_ids]).decode("utf-8", "replace")
    assert reply == want
    # The transformers default is 256 new tokens.
    long = pipe("The falcon", do_sample=False, eos_token_id=[], return_full_text=False)
    assert len(model.tokenize(long[0]["generated_text"].encode(), special=True)) >= 200


def test_pipeline_from_a_folder(hf_copy: Path) -> None:
    pipe = mamba_gguf.pipeline("text-generation", model=hf_copy, device="cpu", n_threads=1)
    out = pipe("The falcon", max_new_tokens=3)
    assert isinstance(out[0]["generated_text"], str)
    assert pipe.model.device.startswith("CPU")
    assert (hf_copy / ".mamba-gguf" / "falcon-mamba-tiny-q4_k_m.gguf").is_file()


def test_convert_and_quantize_equal_the_cli(cli: Path, tmp_path: Path) -> None:
    from conftest import GGUF_F32

    ours = tmp_path / "ours.gguf"
    s = mamba_gguf.convert(HF_TINY, ours, "q4_0", progress=False)
    assert s["path"] == str(ours) and s["tensors"] > 0 and s["file_bytes"] == ours.stat().st_size
    ref = tmp_path / "ref.gguf"
    subprocess.run([str(cli), "convert", str(HF_TINY), "-o", str(ref), "--type", "q4_0", "-q"], check=True)
    assert ours.read_bytes() == ref.read_bytes()
    q = tmp_path / "q.gguf"
    mamba_gguf.quantize(GGUF_F32, q, "q8_0", progress=False)
    qref = tmp_path / "qref.gguf"
    subprocess.run([str(cli), "quantize", str(GGUF_F32), str(qref), "q8_0", "-q"], check=True)
    assert q.read_bytes() == qref.read_bytes()
    assert "q4_k_m" in mamba_gguf.FILE_TYPES
    # force overwrites
    mamba_gguf.convert(HF_TINY, ours, "q8_0", progress=False, force=True)
    assert ours.read_bytes() != ref.read_bytes()
    assert mamba_gguf.Model(ours).n_vocab() == mamba_gguf.Model(GGUF).n_vocab()
