#!/usr/bin/env python3
"""Checks a running `mamba-gguf serve` with the official `openai` Python client.

Usage: check.py --base-url http://127.0.0.1:8080/v1

Exercises models.list, completions and chat completions (plain and streamed),
the usage with prompt_tokens_details.cached_tokens on a follow-up chat turn,
n=3 choices against the default slots (n=5 refused, naming n),
and a 400 error surfacing as openai.BadRequestError. Exits non-zero on any
failed check. Run by tests/solo/server_openai.rs when `openai` can be imported.
"""

import argparse
import sys

import openai


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="none", max_retries=0, timeout=60)

    models = client.models.list()
    assert len(models.data) == 1, models
    model = models.data[0].id

    c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0)
    text = c.choices[0].text
    assert isinstance(text, str), c
    assert c.usage.completion_tokens <= 8, c.usage

    streamed = "".join(
        ch.choices[0].text
        for ch in client.completions.create(
            model=model, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
        )
        if ch.choices
    )
    assert streamed == text, (streamed, text)

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    r1 = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0)
    reply = r1.choices[0].message.content
    assert r1.choices[0].message.role == "assistant"

    parts = []
    for ch in client.chat.completions.create(
        model=model, messages=msgs, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ):
        if ch.choices and ch.choices[0].delta.content:
            parts.append(ch.choices[0].delta.content)
    assert "".join(parts) == reply, (parts, reply)

    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Again?"}]
    r2 = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    want = r1.usage.prompt_tokens + r1.usage.completion_tokens
    assert cached == want, (cached, want)

    # n > 1 against the defaults (4 slots, as llama.cpp's server): greedy,
    # so the three choices are the one greedy reply; more than the slots is
    # a 400 naming n.
    three = client.chat.completions.create(model=model, messages=msgs[:2], max_tokens=8, temperature=0, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2], three
    assert all(c.message.content == reply for c in three.choices), three
    assert three.usage.completion_tokens == 3 * r1.usage.completion_tokens, three.usage
    try:
        client.chat.completions.create(model=model, messages=msgs[:2], max_tokens=4, n=5)
    except openai.BadRequestError as e:
        assert e.body["param"] == "n", e.body
    else:
        raise AssertionError("n=5 accepted by a 4-slot server")

    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=4)
    except openai.BadRequestError as e:
        assert "messages" in str(e), e
    else:
        raise AssertionError("empty messages accepted")

    print(f"openai {openai.__version__}: all checks passed (turn 2 cached {cached} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
