"""Every error is the named Python exception with the Rust message: a missing
file FileNotFoundError, bad input ValueError, a parameter mamba-gguf does not
implement NotImplementedError (naming it), the rest MambaGgufError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mamba_gguf
from conftest import GGUF, GGUF_F32, HF_TINY, ROOT
from mamba_gguf import MambaGgufError

MSGS = [{"role": "user", "content": "Hi"}]


def test_exception_class() -> None:
    assert issubclass(MambaGgufError, Exception)
    assert MambaGgufError.__module__ == "mamba_gguf"


def test_model_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        mamba_gguf.Model(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="is a folder"):
        mamba_gguf.Model(tmp_path)
    with pytest.raises(MambaGgufError, match="GGUF"):
        mamba_gguf.Model(ROOT / "README.md")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mamba_gguf.Model(GGUF, device="tpu")
    with pytest.raises(ValueError, match="n_threads"):
        mamba_gguf.Model(GGUF, n_threads=0)
    with pytest.raises(ValueError, match="prefill_chunk"):
        mamba_gguf.Model(GGUF, prefill_chunk=0)
    with pytest.raises(ValueError, match="n_ctx"):
        mamba_gguf.Model(GGUF, n_ctx=-1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"top_k": -1}, "top_k"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"stop": [""]}, "stop"),
        ({"logprobs": -1}, "logprobs"),
        ({"logit_bias": {10**9: 1.0}}, "logit_bias"),
        ({"frequency_penalty": float("inf")}, "frequency_penalty"),
    ],
)
def test_bad_parameters_are_value_errors(model: Any, kwargs: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model("The falcon", max_tokens=2, **kwargs)


def test_bad_prompts_and_ids(model: Any) -> None:
    with pytest.raises(ValueError, match="empty"):
        model([], max_tokens=2)
    with pytest.raises(ValueError, match="out of range"):
        model([10**9], max_tokens=2)
    with pytest.raises(ValueError, match="out of range"):
        model([-1], max_tokens=2)
    with pytest.raises(ValueError, match="out of range"):
        model.detokenize([65024])
    with pytest.raises(UnicodeDecodeError):
        model.tokenize(b"\xff\xfe")
    with pytest.raises(ValueError, match="content"):
        model.create_chat_completion([{"role": "user", "content": [{"type": "text", "text": "x"}]}])
    with pytest.raises(ValueError, match="role"):
        model.create_chat_completion([{"content": "x"}])
    with pytest.raises(ValueError, match="messages is empty"):
        model.create_chat_completion([])
    with pytest.raises(ValueError, match="top_logprobs"):
        model.create_chat_completion(MSGS, top_logprobs=2)


def test_unimplemented_parameters_are_refused(model: Any) -> None:
    with pytest.raises(NotImplementedError, match="typical_p"):
        model("The falcon", max_tokens=2, typical_p=0.5)
    with pytest.raises(NotImplementedError, match="mirostat_mode"):
        model.create_completion("The falcon", max_tokens=2, mirostat_mode=2)
    with pytest.raises(NotImplementedError, match="grammar"):
        model("The falcon", grammar=object())
    with pytest.raises(NotImplementedError, match="suffix"):
        model("The falcon", suffix="!")
    with pytest.raises(NotImplementedError, match="tools"):
        model.create_chat_completion(MSGS, tools=[{"type": "function"}])
    with pytest.raises(NotImplementedError, match="echo"):
        model("The falcon", echo=True, logprobs=1)
    with pytest.raises(NotImplementedError, match="prev_tokens"):
        model.detokenize([1], prev_tokens=[2])
    with pytest.raises(NotImplementedError, match="n_gpu_layers"):
        mamba_gguf.Model(GGUF, n_gpu_layers=-1)
    with pytest.raises(NotImplementedError, match="num_beams"):
        model.generate([1, 2], num_beams=4)
    with pytest.raises(NotImplementedError, match="attention_mask"):
        model.generate([[1, 2]], attention_mask=[[0, 1]])
    # Neutral values are accepted (they change nothing).
    model("The falcon", max_tokens=1, typical_p=1.0, mirostat_mode=0, grammar=None)
    mamba_gguf.Model(GGUF, n_gpu_layers=0, use_mlock=False)
    model.generate([1, 2], max_new_tokens=1, num_beams=1, attention_mask=[[1, 1]])
    # Unknown keywords are Python's TypeError.
    with pytest.raises(TypeError, match="bogus"):
        model("The falcon", bogus=1)


def test_transformers_face_errors(model: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate([1, 2], num_return_sequences=2)
    with pytest.raises(ValueError, match="temperature"):
        model.generate([1, 2], do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="input_ids"):
        model.generate("text")
    with pytest.raises(ValueError, match="task"):
        mamba_gguf.pipeline("summarization", model=model)
    with pytest.raises(ValueError, match="model="):
        mamba_gguf.pipeline("text-generation")
    with pytest.raises(FileNotFoundError):
        mamba_gguf.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="config.json"):
        mamba_gguf.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown type 'q3_x'"):
        mamba_gguf.from_pretrained(HF_TINY, quant="q3_x")


def test_state_errors(model: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad magic"):
        model.load_state(b"not a state")
    good = model.save_state().data
    with pytest.raises(ValueError, match="checksum"):
        model.load_state(good[:-1])
    flipped = bytearray(good)
    flipped[100] ^= 1
    with pytest.raises(ValueError, match="checksum"):
        model.load_state(bytes(flipped))
    other = mamba_gguf.Model(GGUF_F32)
    with pytest.raises(ValueError, match="different model"):
        other.load_state(good)
    with pytest.raises(FileNotFoundError):
        model.load_state_file(tmp_path / "missing.state")
    (tmp_path / "junk.state").write_bytes(b"MAMBAST\0" + b"\0" * 10)
    with pytest.raises(ValueError, match="damaged"):
        model.load_state_file(tmp_path / "junk.state")
    with pytest.raises(TypeError):
        model.load_state(123)
    with pytest.raises(OSError):
        model.save_state_file(tmp_path / "no" / "such" / "dir" / "s.state")
    # A failed load leaves the model usable.
    model("The falcon", max_tokens=2, temperature=0)


def test_conversion_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        mamba_gguf.convert(tmp_path / "nope", tmp_path / "o.gguf")
    with pytest.raises(ValueError, match="unknown type 'q3_x'"):
        mamba_gguf.convert(HF_TINY, tmp_path / "o.gguf", "q3_x")
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already exists"):
        mamba_gguf.convert(HF_TINY, out, "q8_0", progress=False)
    with pytest.raises(FileNotFoundError):
        mamba_gguf.quantize(tmp_path / "nope.gguf", tmp_path / "q.gguf", "q8_0")
    with pytest.raises(ValueError, match="unknown type"):
        mamba_gguf.quantize(GGUF_F32, tmp_path / "q.gguf", "bogus")
    with pytest.raises(MambaGgufError, match="already quantized|requantize"):
        mamba_gguf.quantize(GGUF, tmp_path / "q.gguf", "q8_0", progress=False)
    # A folder that is not a checkpoint: the file it lacks is named.
    with pytest.raises(FileNotFoundError, match="config.json"):
        mamba_gguf.convert(tmp_path, tmp_path / "o2.gguf", "q8_0", progress=False)
    # A damaged checkpoint is the file's fault.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(MambaGgufError, match="config.json"):
        mamba_gguf.convert(bad, tmp_path / "o3.gguf", "q8_0", progress=False)
