#!/usr/bin/env python3
"""Checks a running `mamba-gguf serve` with the official `ollama` Python client.

Usage: check.py --base-url http://127.0.0.1:8080

Exercises list (the model under its `<name>:latest` name, with its
details), show (details, model_info, template), generate and chat, each
non-streamed and streamed (the stream's pieces add up to the plain reply,
its last part carries done, done_reason and the counts), Ollama's options
taking effect (num_predict caps the reply, temperature 0 is deterministic,
a seed repeats a sampled reply, stop cuts it, top_k 1 is greedy), system on
generate, raw, format "json" and a JSON schema (the reply parses and
follows it), a multi-turn chat, and refusals (an unknown option, images)
surfacing as ollama.ResponseError with status 400 naming the field. Exits
non-zero on any failed check. Run by tests/solo/server_openai.rs when
`ollama` can be imported.
"""

import argparse
import importlib.metadata
import json
import sys

import ollama


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    client = ollama.Client(host=args.base_url, timeout=60)

    # list and show: the one model, parsed by the client's own types.
    models = client.list().models
    assert len(models) == 1, models
    name = models[0].model
    assert name and name.endswith(":latest"), models[0]
    assert models[0].size and models[0].size > 0, models[0]
    assert models[0].details.format == "gguf", models[0].details
    assert models[0].details.family in ("mamba", "falcon-mamba"), models[0].details
    shown = client.show(name)
    assert shown.details.family == models[0].details.family, shown.details
    assert shown.modelinfo and shown.modelinfo.get("general.architecture") == "mamba", shown.modelinfo
    assert "completion" in (shown.capabilities or []), shown.capabilities

    greedy = {"temperature": 0, "num_predict": 10}
    prompt = "The falcon is"

    # generate: greedy is deterministic, capped by num_predict, with counts.
    g1 = client.generate(model=name, prompt=prompt, raw=True, options=greedy)
    assert g1.done and g1.done_reason in ("length", "stop"), g1
    assert 0 < g1.eval_count <= 10, g1
    assert (g1.done_reason == "length") == (g1.eval_count == 10), g1
    assert g1.prompt_eval_count and g1.prompt_eval_count > 0, g1
    assert g1.response, g1
    g2 = client.generate(model=name, prompt=prompt, raw=True, options=greedy)
    assert g2.response == g1.response, (g2.response, g1.response)
    # Streamed: the pieces add up to the same reply; only the last is done.
    parts = list(client.generate(model=name, prompt=prompt, raw=True, options=greedy, stream=True))
    assert len(parts) >= 2, parts
    assert all(not p.done for p in parts[:-1]) and parts[-1].done, parts
    assert "".join(p.response for p in parts) == g1.response, (parts, g1.response)
    assert parts[-1].eval_count == g1.eval_count, parts[-1]
    # top_k 1 at temperature 1 is greedy too.
    gk = client.generate(model=name, prompt=prompt, raw=True, options={"temperature": 1, "top_k": 1, "num_predict": 10})
    assert gk.response == g1.response, (gk.response, g1.response)
    # A seed repeats a sampled reply; sampled replies vary across seeds.
    sampled = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "num_predict": 12}
    s1 = client.generate(model=name, prompt=prompt, raw=True, options={**sampled, "seed": 7})
    s2 = client.generate(model=name, prompt=prompt, raw=True, options={**sampled, "seed": 7})
    assert s1.response == s2.response, (s1.response, s2.response)
    seen = {client.generate(model=name, prompt=prompt, raw=True, options={**sampled, "seed": s}).response for s in range(8)}
    assert len(seen) > 1, seen
    # stop: the reply ends before the stop string taken from the greedy one.
    assert len(g1.response) >= 6, g1.response
    stop = g1.response[len(g1.response) // 2 : len(g1.response) // 2 + 2]
    gs = client.generate(model=name, prompt=prompt, raw=True, options={**greedy, "stop": [stop]})
    assert gs.done_reason == "stop", gs
    assert gs.response == g1.response[: g1.response.find(stop)], (gs.response, g1.response, stop)
    # The template applied (not raw) reads another prompt than raw; a system
    # prompt changes it again.
    gt = client.generate(model=name, prompt=prompt, options=greedy)
    gsys = client.generate(model=name, prompt=prompt, system="Answer in French.", options=greedy)
    assert gt.prompt_eval_count != g1.prompt_eval_count, (gt.prompt_eval_count, g1.prompt_eval_count)
    assert gsys.prompt_eval_count > gt.prompt_eval_count, (gsys.prompt_eval_count, gt.prompt_eval_count)

    # format: "json" and a schema constrain the reply.
    gj = client.generate(model=name, prompt="Give a JSON object:", raw=True, format="json", options={"temperature": 0, "num_predict": 40})
    if gj.done_reason == "stop":
        assert isinstance(json.loads(gj.response), dict), gj.response
    else:
        assert gj.response.lstrip().startswith("{"), gj.response
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    gsc = client.generate(model=name, prompt="Answer:", raw=True, format=schema, options={"temperature": 0, "num_predict": 40})
    assert gsc.done_reason == "stop", gsc
    obj = json.loads(gsc.response)
    assert set(obj) == {"ok"} and isinstance(obj["ok"], bool), obj

    # chat: plain, streamed (equal), and multi-turn.
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the falcon."}]
    c1 = client.chat(model=name, messages=msgs, options=greedy)
    assert c1.message.role == "assistant" and c1.message.content, c1
    assert c1.done and 0 < c1.eval_count <= 10, c1
    cparts = list(client.chat(model=name, messages=msgs, options=greedy, stream=True))
    assert "".join(p.message.content for p in cparts) == c1.message.content, (cparts, c1)
    assert cparts[-1].done and cparts[-1].eval_count == c1.eval_count, cparts[-1]
    turn2 = msgs + [{"role": "assistant", "content": c1.message.content}, {"role": "user", "content": "And the sea?"}]
    c2 = client.chat(model=name, messages=turn2, options=greedy)
    assert c2.prompt_eval_count > c1.prompt_eval_count, (c2.prompt_eval_count, c1.prompt_eval_count)
    assert c2.message.content, c2

    # Refusals: 400 with the field named, never silently ignored.
    for call, field in [
        (lambda: client.generate(model=name, prompt=prompt, options={"mirostat": 2}), "mirostat"),
        (lambda: client.chat(model=name, messages=[{"role": "user", "content": "hi", "images": ["aGk="]}]), "images"),
        (lambda: client.generate(model=name, prompt=prompt, options={"temperature": -1}), "temperature"),
    ]:
        try:
            call()
        except ollama.ResponseError as e:
            assert e.status_code == 400 and field in e.error, (e.status_code, e.error)
        else:
            raise AssertionError(f"{field} was not refused")

    print(f"ollama {importlib.metadata.version('ollama')}: list, show, generate, chat, streaming, options, format, refusals OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
