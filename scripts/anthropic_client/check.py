#!/usr/bin/env python3
"""Checks a running `mamba-gguf serve` with the official `anthropic` Python client.

Usage: check.py --base-url http://127.0.0.1:8080

Exercises messages.create (system as a string and as blocks, multi-turn,
stop_sequences, stop_reason end_turn/max_tokens/stop_sequence), streaming
(messages.stream's text and final message, and the raw event types in
order), usage with cache_read_input_tokens on a follow-up turn,
messages.count_tokens, temperature/top_p/top_k sent through extra_body
(the client takes them as arguments no longer) and taking effect, tool use
(tool_choice any, tool, none; input valid under the input_schema; streamed,
its input as input_json_delta events token by token;
a round trip with tool_result blocks), and refusals surfacing as
anthropic.BadRequestError naming the field. Exits
non-zero on any failed check. Run by tests/solo/server_anthropic.rs when
`anthropic` can be imported.
"""

import argparse
import sys

import anthropic


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    client = anthropic.Anthropic(base_url=args.base_url, api_key="none", max_retries=0, timeout=60)
    model = "falcon-mamba"
    user = [{"role": "user", "content": "Tell me about the falcon."}]
    greedy = {"temperature": 0}

    # Plain, greedy: deterministic, with its usage and stop reason.
    m1 = client.messages.create(model=model, max_tokens=12, system="Be brief.", messages=user, extra_body=greedy)
    assert m1.type == "message" and m1.role == "assistant", m1
    assert m1.model == model, m1
    assert len(m1.content) == 1 and m1.content[0].type == "text", m1
    reply = m1.content[0].text
    out = m1.usage.output_tokens
    assert 0 < out <= 12, m1.usage
    assert m1.stop_reason == ("max_tokens" if out == 12 else "end_turn"), m1
    assert m1.stop_sequence is None, m1
    again = client.messages.create(model=model, max_tokens=12, system="Be brief.", messages=user, extra_body=greedy)
    assert again.content[0].text == reply, (again.content[0].text, reply)

    # count_tokens: the whole prompt, as the first (uncached) reply read it.
    counted = client.messages.count_tokens(model=model, system="Be brief.", messages=user)
    total1 = m1.usage.input_tokens + (m1.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == total1, (counted, m1.usage)

    # System as text blocks, cache_control taken.
    blocks = [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief.", "cache_control": {"type": "ephemeral"}}]
    mb = client.messages.create(model=model, max_tokens=12, system=blocks, messages=user, extra_body=greedy)
    ms = client.messages.create(model=model, max_tokens=12, system="Be\n\nbrief.", messages=user, extra_body=greedy)
    assert mb.content[0].text == ms.content[0].text, (mb, ms)

    # Multi-turn: the next turn reads the first exchange from the cache.
    turn2 = user + [
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And the sea?"},
    ]
    m2 = client.messages.create(model=model, max_tokens=8, system="Be brief.", messages=turn2, extra_body=greedy)
    cached = m2.usage.cache_read_input_tokens
    assert cached == total1 + out, (m2.usage, total1, out)
    assert m2.usage.input_tokens > 0, m2.usage

    # A stop sequence from inside the greedy reply stops it there.
    assert len(reply) >= 6, reply
    stop = reply[len(reply) // 2 : len(reply) // 2 + 2]
    ms = client.messages.create(
        model=model, max_tokens=12, system="Be brief.", messages=user, stop_sequences=[stop], extra_body=greedy
    )
    assert ms.stop_reason == "stop_sequence" and ms.stop_sequence == stop, ms
    assert ms.content[0].text == reply[: reply.find(stop)], (ms.content[0].text, reply, stop)

    # temperature, top_k, top_p (extra_body) take effect: top_k 1 or a tiny
    # top_p at temperature 1 is the greedy reply; temperature 1 alone varies.
    def text(**extra: object) -> str:
        m = client.messages.create(model=model, max_tokens=10, messages=user, extra_body=extra)
        return m.content[0].text

    g = text(temperature=0)
    assert text(temperature=1, top_k=1) == g
    assert text(temperature=1, top_p=0.000001) == g
    hot = {text(temperature=1) for _ in range(6)}
    assert len(hot) > 1, hot

    # Streaming: the helper's text and final message equal the plain reply.
    with client.messages.stream(model=model, max_tokens=12, system="Be brief.", messages=user, extra_body=greedy) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == reply, (streamed, reply)
    assert final.content[0].text == reply and final.stop_reason == m1.stop_reason, final
    assert final.usage.output_tokens == out, final.usage
    # Raw events, in Anthropic's order (the client drops the ping that
    # follows content_block_start; tests/it/server_anthropic.rs sees it).
    kinds = [
        ev.type
        for ev in client.messages.create(
            model=model, max_tokens=6, messages=user, stream=True, stop_sequences=["\n\n"], extra_body=greedy
        )
    ]
    assert kinds[:2] == ["message_start", "content_block_start"], kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert set(kinds[3:-3]) <= {"content_block_delta"}, kinds

    # Tool use: tool_use blocks whose input follows the input_schema, with
    # tool_choice any / tool / none; the stream's final message equal to
    # the plain one; a round trip (tool_result back, a final answer) that
    # reads the first exchange from the prompt cache.
    tools = [{
        "name": "add",
        "description": "Adds two integers.",
        "input_schema": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": -99, "maximum": 99},
                           "b": {"type": "integer", "minimum": -99, "maximum": 99}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    }]
    ask = [{"role": "user", "content": "What is 2 + 3?"}]

    def check_use(b) -> None:
        assert b.type == "tool_use" and b.name == "add" and b.id, b
        assert set(b.input) == {"a", "b"}, b
        assert all(isinstance(b.input[k], int) and -99 <= b.input[k] <= 99 for k in "ab"), b

    t1 = client.messages.create(model=model, max_tokens=100, messages=ask, tools=tools,
                                tool_choice={"type": "any"}, extra_body=greedy)
    assert t1.stop_reason == "tool_use" and t1.content, t1
    for b in t1.content:
        check_use(b)
    named = client.messages.create(model=model, max_tokens=100, messages=ask, tools=tools,
                                   tool_choice={"type": "tool", "name": "add", "disable_parallel_tool_use": True},
                                   extra_body=greedy)
    assert len(named.content) == 1, named
    check_use(named.content[0])
    json_deltas = 0
    with client.messages.stream(model=model, max_tokens=100, messages=ask, tools=tools,
                                tool_choice={"type": "any"}, extra_body=greedy) as s:
        for ev in s:
            if ev.type == "input_json":
                json_deltas += 1
                assert ev.partial_json, ev
        final = s.get_final_message()
    assert final.stop_reason == "tool_use", final
    # The input arrives token by token: several input_json_delta events for
    # each tool_use block (`{"a":N,"b":M}` is at least 7 tokens).
    assert json_deltas >= 3 * len(final.content), (json_deltas, final)
    assert [(b.name, b.input) for b in final.content] == [(b.name, b.input) for b in t1.content], (final, t1)
    plain = client.messages.create(model=model, max_tokens=8, messages=ask, tools=tools,
                                   tool_choice={"type": "none"}, extra_body=greedy)
    assert [b.type for b in plain.content] == ["text"], plain
    results = [{"type": "tool_result", "tool_use_id": b.id, "content": str(b.input["a"] + b.input["b"])}
               for b in t1.content]
    turn = ask + [{"role": "assistant", "content": t1.content}, {"role": "user", "content": results}]
    t2 = client.messages.create(model=model, max_tokens=8, messages=turn, tools=tools, extra_body=greedy)
    assert t2.stop_reason in ("end_turn", "max_tokens", "tool_use"), t2
    assert (t2.usage.cache_read_input_tokens or 0) >= t1.usage.input_tokens + (t1.usage.cache_read_input_tokens or 0), (t1.usage, t2.usage)

    # Refusals: anthropic.BadRequestError naming what is not implemented.
    refusals = [
        ("server tools", dict(tools=[{"type": "web_search_20250305", "name": "web_search"}])),
        ("thinking", dict(thinking={"type": "enabled", "budget_tokens": 1024})),
        ("temperature", dict(extra_body={"temperature": 1.5})),
    ]
    for name, kw in refusals:
        try:
            client.messages.create(model=model, max_tokens=4, messages=user, **kw)
        except anthropic.BadRequestError as e:
            assert e.status_code == 400, e
            assert e.body["type"] == "error", e.body
            assert e.body["error"]["type"] == "invalid_request_error", e.body
            assert name in e.body["error"]["message"], e.body
        else:
            raise AssertionError(f"{name} accepted")
    try:
        client.messages.create(
            model=model,
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}],
        )
    except anthropic.BadRequestError as e:
        assert "image" in e.body["error"]["message"], e.body
    else:
        raise AssertionError("image accepted")

    print(f"anthropic {anthropic.__version__}: all checks passed (turn 2 read {cached} tokens from the cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
