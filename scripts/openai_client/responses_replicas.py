#!/usr/bin/env python3
"""The stateful Responses API across two replicas of `mamba-gguf serve` that
share one state store, with the official `openai` Python client.

A response made on replica A is continued on replica B by its id alone
(`previous_response_id`): B finds the stored response in the store and
restores the state after A's reply, so the new turn reads only its input
(`cached_tokens` covers all of turn 1) and answers exactly as A does (greedy).
Also: retrieve on the other replica, streaming events, delete (then a 404
on both), a refused parameter as BadRequestError naming it, and a response
of one API key invisible to another. Exits non-zero on any failed check.
Run by tests/solo/server_state_store.rs.
"""

import argparse
import sys
import time
import urllib.request

import openai


def pending(base: str, key: str) -> int:
    """The replica's state-store commits not yet written."""
    req = urllib.request.Request(
        base.rsplit("/v1", 1)[0] + "/metrics", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mamba_gguf_state_store_pending "):
                return int(float(line.split()[1]))
    raise AssertionError("no mamba_gguf_state_store_pending in /metrics")


def settle(base: str, key: str) -> None:
    for _ in range(200):
        if pending(base, key) == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{base}: the state store's queue did not drain")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="replica A's base URL (…/v1)")
    p.add_argument("--b", required=True, help="replica B's base URL (…/v1)")
    p.add_argument("--key", required=True)
    p.add_argument("--other-key", required=True)
    args = p.parse_args()

    def client(base: str, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)

    a, b = client(args.a, args.key), client(args.b, args.key)
    common = dict(model="m", max_output_tokens=12, temperature=0)

    # A conversation no earlier run has stored.
    nonce = f"{time.time_ns():x}"
    r1 = a.responses.create(
        input=f"Tell me about the sea ({nonce}).", instructions="Answer briefly.", **common
    )
    assert r1.status in ("completed", "incomplete"), r1.status
    assert r1.id.startswith("resp_"), r1.id
    assert r1.output_text, "turn 1 produced no text"
    turn1 = r1.usage.input_tokens + r1.usage.output_tokens
    settle(args.a, args.key)

    # B continues A's response by its id alone: the state after turn 1
    # comes from the store.
    r2b = b.responses.create(
        previous_response_id=r1.id, input="And the sky?", instructions="Answer briefly.", **common
    )
    cached = r2b.usage.input_tokens_details.cached_tokens
    assert cached == turn1, f"B restored {cached} tokens, turn 1 had {turn1}"
    assert r2b.previous_response_id == r1.id
    # What A answers from its own state (store=False: no read from the store,
    # so nothing B committed is used): the same, greedy.
    r2a = a.responses.create(
        previous_response_id=r1.id,
        input="And the sky?",
        instructions="Answer briefly.",
        store=False,
        **common,
    )
    assert r2a.output_text == r2b.output_text, (r2a.output_text, r2b.output_text)

    # Retrieve on the other replica.
    got = b.responses.retrieve(r1.id)
    assert got.id == r1.id and got.output_text == r1.output_text

    # Streaming, continuing B's response on A (raw events: a reply cut by
    # max_output_tokens ends with response.incomplete, as OpenAI's do, which
    # the SDK's stream() helper does not accept as an end).
    events, deltas, final = [], [], None
    for ev in a.responses.create(
        previous_response_id=r2b.id,
        input="More.",
        instructions="Answer briefly.",
        stream=True,
        **common,
    ):
        events.append(ev.type)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        if ev.type in ("response.completed", "response.incomplete"):
            final = ev.response
    for t in (
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert t in events, f"no {t} event: {events}"
    assert events[0] == "response.created", events
    assert events[-1] in ("response.completed", "response.incomplete"), events[-1]
    assert final is not None and final.output_text == "".join(deltas)
    assert final.usage.input_tokens_details.cached_tokens > 0
    assert b.responses.retrieve(final.id).output_text == final.output_text

    # Another key sees none of it.
    other = client(args.b, args.other_key)
    try:
        other.responses.retrieve(r1.id)
        raise AssertionError("another key retrieved the response")
    except openai.NotFoundError:
        pass
    try:
        other.responses.create(previous_response_id=r1.id, input="x", **common)
        raise AssertionError("another key continued the response")
    except openai.NotFoundError:
        pass

    # A parameter this server does not implement: a 400 naming it.
    try:
        a.responses.create(input="x", reasoning={"effort": "low"}, **common)
        raise AssertionError("reasoning was accepted")
    except openai.BadRequestError as e:
        assert e.body and e.body.get("param") == "reasoning", e.body

    # Delete on B: gone on A too.
    b.responses.delete(r1.id)
    for c in (a, b):
        try:
            c.responses.retrieve(r1.id)
            raise AssertionError("a deleted response was retrieved")
        except openai.NotFoundError:
            pass

    # store=false: answered, not kept.
    r3 = a.responses.create(input="Hi", store=False, **common)
    try:
        b.responses.retrieve(r3.id)
        raise AssertionError("a store=false response was kept")
    except openai.NotFoundError:
        pass

    print(f"openai {openai.__version__}: responses across replicas passed (B restored {cached} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
