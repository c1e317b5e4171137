"""llama-cpp-python's face: completions equal the CLI's greedy output token for
token, streaming concatenates to the whole answer, chat applies the GGUF's
template and stops on every end-of-turn id, logprobs are the model's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import mamba_gguf
from conftest import GGUF, HF_TINY, skip_or_fail

PROMPTS = [
    "The falcon flies",
    "Once upon a time, in a land far away, there lived",
    "Grüße aus Köln 🦅: ",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our conversion of the tiny checkpoint: its GGUF stops on ids 11 and 10
    (generation_config.json) and has the ChatML template."""
    out = tmp_path_factory.mktemp("conv") / "tiny-q8_0.gguf"
    mamba_gguf.convert(HF_TINY, out, "q8_0", progress=False)
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_equals_cli_token_for_token(
    model: Any, cli_run: Callable[..., Dict[str, Any]], prompt: str
) -> None:
    ref = cli_run(prompt, 24)
    assert model.tokenize(prompt.encode(), special=True) == ref["prompt_ids"]
    out = model(prompt, max_tokens=24, temperature=0, logprobs=0)
    choice = out["choices"][0]
    assert choice["text"] == ref["text"]
    # Token for token: the pieces of the tokens we generated are the CLI's.
    assert choice["logprobs"]["tokens"] == [model._native.token_piece(i) for i in ref["ids"]]
    assert out["usage"]["completion_tokens"] == len(ref["ids"])
    assert out["usage"]["prompt_tokens"] == len(ref["prompt_ids"])
    assert choice["finish_reason"] == ("stop" if ref["stats"]["stop"] == "eos" else "length")
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert set(out) == {"id", "object", "created", "model", "choices", "usage"}
    assert set(choice) == {"text", "index", "logprobs", "finish_reason"}


def test_token_list_prompt_and_create_completion(model: Any, cli_run: Callable[..., Dict[str, Any]]) -> None:
    ref = cli_run(PROMPTS[0], 12)
    a = model.create_completion(ref["prompt_ids"], max_tokens=12, temperature=0)
    assert a["choices"][0]["text"] == ref["text"]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("stop", [None, "STOP-NEVER"])
def test_stream_concatenates_to_the_whole_text(model: Any, prompt: str, stop: Any) -> None:
    whole = model(prompt, max_tokens=40, temperature=0, stop=stop)
    chunks = list(model(prompt, max_tokens=40, temperature=0, stop=stop, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_stop_strings_cut_the_text(model: Any) -> None:
    full = model(PROMPTS[1], max_tokens=40, temperature=0)["choices"][0]["text"]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = full[: full.index(stop)]
    out = model(PROMPTS[1], max_tokens=40, temperature=0, stop=[stop, "never-there"])
    assert out["choices"][0]["text"] == cut
    assert out["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(c["choices"][0]["text"] for c in model(PROMPTS[1], max_tokens=40, temperature=0, stop=stop, stream=True))
    assert streamed == cut


def test_echo(model: Any) -> None:
    a = model(PROMPTS[0], max_tokens=5, temperature=0)["choices"][0]["text"]
    b = model(PROMPTS[0], max_tokens=5, temperature=0, echo=True)["choices"][0]["text"]
    assert b == PROMPTS[0] + a


def test_logprobs_are_the_models(model: Any) -> None:
    out = model(PROMPTS[0], max_tokens=8, temperature=0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 8
    text = out["choices"][0]["text"]
    for tok, chosen, top, off in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], lp["text_offset"]):
        assert chosen is not None and top is not None
        # Greedy picks the most likely token: its logprob is the top one.
        assert math.isclose(chosen, max(top.values()), abs_tol=1e-6)
        assert chosen <= 0 and 3 <= len(top) <= 4
        assert off >= len(PROMPTS[0])
    assert lp["text_offset"][0] == len(PROMPTS[0])
    assert "".join(lp["tokens"]) == text
    # Sampling: the chosen token's logprob is still the model's (not the
    # filtered distribution's), and below the best one.
    s = model(PROMPTS[0], max_tokens=8, temperature=1.5, seed=7, logprobs=1)
    for chosen, top in zip(s["choices"][0]["logprobs"]["token_logprobs"], s["choices"][0]["logprobs"]["top_logprobs"]):
        assert chosen is not None and top is not None and chosen <= max(top.values()) + 1e-6


def test_seed_reproduces_sampling(model: Any) -> None:
    a = model(PROMPTS[0], max_tokens=16, temperature=1.0, seed=42)["choices"][0]["text"]
    b = model(PROMPTS[0], max_tokens=16, temperature=1.0, seed=42)["choices"][0]["text"]
    c = model(PROMPTS[0], max_tokens=16, temperature=1.0, seed=43)["choices"][0]["text"]
    assert a == b
    assert a != c


def _jinja_render(path: Path, messages: List[Dict[str, str]]) -> str:
    """The template rendered independently: read from the GGUF with the
    `gguf` package, rendered by jinja2 as transformers does."""
    try:
        import gguf
        import jinja2
    except ImportError as e:
        skip_or_fail(f"needs the gguf and jinja2 packages: {e}")
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode("utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")


@pytest.mark.parametrize("which", ["llamacpp", "ours"])
def test_chat_applies_the_template(
    which: str, converted: Path, cli_run: Callable[..., Dict[str, Any]]
) -> None:
    path = GGUF if which == "llamacpp" else converted
    m = mamba_gguf.Model(path)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    rendered = _jinja_render(path, msgs)
    assert m.chat_prompt(msgs) == rendered
    out = m.create_chat_completion(msgs, max_tokens=12, temperature=0)
    ids = m.tokenize(rendered.encode(), special=True)
    assert out["usage"]["prompt_tokens"] == len(ids)
    ref = cli_run(rendered, 12, path)
    assert ref["prompt_ids"] == ids
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ref["text"]}
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    chunks = list(m.create_chat_completion(msgs, max_tokens=12, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == ref["text"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_chat_stops_on_every_end_of_turn_id(converted: Path) -> None:
    m = mamba_gguf.Model(converted)
    eos = m._native.eos_ids
    assert sorted(eos) == [10, 11]
    msgs = [{"role": "user", "content": "Hi"}]
    for i in eos:
        out = m.create_chat_completion(msgs, max_tokens=5, temperature=0, logit_bias={i: 100.0})
        assert out["choices"][0]["finish_reason"] == "stop"
        assert out["choices"][0]["message"]["content"] == ""
        assert out["usage"]["completion_tokens"] == 0
    # Another id pushed up is generated, not a stop.
    out = m.create_chat_completion(msgs, max_tokens=3, temperature=0, logit_bias={487: 100.0})
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 3


def test_chat_logprobs(model: Any) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    out = model.create_chat_completion(msgs, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for t in content:
        assert set(t) == {"token", "logprob", "bytes", "top_logprobs"}
        assert len(t["top_logprobs"]) == 2 and math.isclose(t["logprob"], t["top_logprobs"][0]["logprob"], abs_tol=1e-6)
    plain = model.create_chat_completion(msgs, max_tokens=4, temperature=0, logprobs=True)
    assert all(t["top_logprobs"] == [] for t in plain["choices"][0]["logprobs"]["content"])
    assert model.create_chat_completion(msgs, max_tokens=2)["choices"][0]["logprobs"] is None


def test_tokenize_detokenize_and_metadata(model: Any) -> None:
    ids = model.tokenize(b"Hello<|endoftext|>", special=True)
    assert ids[-1] == 11
    plain = model.tokenize("Hello<|endoftext|>")
    assert 11 not in plain and len(plain) > len(ids)
    assert model.detokenize(plain) == b"Hello<|endoftext|>"
    # Special tokens are left out unless asked for (llama-cpp-python).
    assert model.detokenize(ids) == b"Hello"
    assert model.detokenize(ids, special=True) == b"Hello<|endoftext|>"
    # Bytes can end inside a character.
    e = model.tokenize("é🦅")
    assert b"".join(model.detokenize([i]) for i in e) == "é🦅".encode()
    assert model.n_vocab() == 65024
    assert model.n_ctx() == 1048576
    assert model.metadata["general.architecture"] == "mamba"
    assert model.metadata["tokenizer.ggml.eos_token_id"] == "11"
    assert model.metadata["mamba.ssm.dt_b_c_rms"] == "true"
    assert "tokenizer.ggml.tokens" not in model.metadata
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in model.metadata.items())
    assert model.token_eos() == 11


def test_llama_alias_and_n_ctx_limit() -> None:
    llm = mamba_gguf.Llama(model_path=str(GGUF), n_ctx=8, n_threads=1, seed=5, n_batch=2)
    assert llm.n_ctx() == 8
    out = llm("The falcon flies", max_tokens=100, temperature=0)
    # Prompt and completion fit in n_ctx.
    assert out["usage"]["total_tokens"] == 8 and out["choices"][0]["finish_reason"] == "length"
    with pytest.raises(ValueError, match="exceed context window"):
        llm("one two three four five six seven eight nine", max_tokens=1)
    # The constructor's seed is the default seed.
    a = llm("The falcon", max_tokens=3, temperature=1.0)["choices"][0]["text"]
    b = llm("The falcon", max_tokens=3, temperature=1.0)["choices"][0]["text"]
    assert a == b


def test_follow_up_prompt_reuses_the_state(model: Any) -> None:
    """A prompt that extends the last one and its completion continues from
    the model's state (its tokens are reported cached) and gives what a
    fresh run gives."""
    model.reset()
    prompt = model.tokenize(PROMPTS[0].encode(), special=True)
    ids = model.generate(prompt, max_new_tokens=6)
    follow = ids + model.tokenize(b" and")
    cont = model(follow, max_tokens=8, temperature=0)
    # The last generated token was left unfed (as the CLI leaves it).
    assert cont["usage"]["prompt_tokens_details"]["cached_tokens"] == len(ids) - 1
    model.reset()
    fresh = model(follow, max_tokens=8, temperature=0)
    assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert cont["choices"][0]["text"] == fresh["choices"][0]["text"]
    # A prompt that does not extend the context starts over.
    other = model(PROMPTS[1], max_tokens=2, temperature=0)
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["answer", "n"],
    "additionalProperties": False,
}


def test_response_format_cannot_leave_the_schema(model: Any) -> None:
    import json

    msgs = [{"role": "user", "content": "Answer in JSON."}]
    for seed in range(3):
        for rf in (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
            {"type": "json_object", "schema": SCHEMA},  # llama-cpp-python's form
        ):
            r = model.create_chat_completion(msgs, response_format=rf, max_tokens=48, temperature=0.9, seed=seed)
            text = r["choices"][0]["message"]["content"]
            parsed = json.loads(text)
            assert parsed["answer"] in ("yes", "no") and 0 <= parsed["n"] <= 9, text
            assert set(parsed) == {"answer", "n"}, text
            assert r["choices"][0]["finish_reason"] == "stop", r
    # Any JSON object: an object so far, whatever the random weights prefer.
    r = model.create_chat_completion(msgs, response_format={"type": "json_object"}, max_tokens=64, seed=1)
    text = r["choices"][0]["message"]["content"]
    assert text.lstrip().startswith("{"), text
    if r["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(text), dict), text
    # The same request unconstrained is not JSON (so the constraint did it).
    plain = model.create_chat_completion(msgs, max_tokens=48, temperature=0.9, seed=0)
    with pytest.raises(ValueError):
        json.loads(plain["choices"][0]["message"]["content"])
    # Streaming gives the same constrained text.
    rf = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    whole = model.create_chat_completion(msgs, response_format=rf, max_tokens=48, temperature=0.9, seed=2)
    chunks = model.create_chat_completion(msgs, response_format=rf, max_tokens=48, temperature=0.9, seed=2, stream=True)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    # Bad formats are ValueErrors naming the problem; text is no constraint.
    for bad in ({"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}, "json"):
        with pytest.raises(ValueError):
            model.create_chat_completion(msgs, response_format=bad, max_tokens=4)
    r = model.create_chat_completion(msgs, response_format={"type": "text"}, max_tokens=8, temperature=0.9, seed=0)
    assert r["choices"][0]["message"]["content"] == model.create_chat_completion(
        msgs, max_tokens=8, temperature=0.9, seed=0
    )["choices"][0]["message"]["content"]
