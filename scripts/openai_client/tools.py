#!/usr/bin/env python3
"""Tool calls through a running `mamba-gguf serve` with the official `openai` client.

Usage: tools.py --base-url http://127.0.0.1:8080/v1

Each tool_choice mode (required, a named function, none, auto), with the
calls' arguments checked against each function's JSON schema; streamed
tool-call deltas equal the non-streamed calls, the arguments arriving token
by token (chat.completions.stream's tool_calls.function.arguments.delta
events, strict tools parsed by the client); parallel_tool_calls=False
gives one call; a full round trip (call, the tool's result sent back as a
`tool` message, a final answer) whose second request reads the first
exchange from the prompt cache; refusals as openai.BadRequestError.
The same on the Responses API: function tools, function_call output
items, responses.stream's response.function_call_arguments.delta events
token by token, a round trip by previous_response_id with
function_call_output items (reading the first exchange from the cache)
and the same without it (the calls sent back as input items). The
model behind the server may be the tiny one with random weights: every
check holds whatever it says. Exits non-zero on any failed check. Run by
tests/solo/server_openai.rs when `openai` can be imported.
"""

import argparse
import json
import sys

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Adds two integers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                    "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
                },
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    },
]


def check_args(call) -> dict:
    """The call's arguments, checked against its function's schema."""
    assert call.type == "function", call
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(args) == {"city", "unit"}, args
        assert isinstance(args["city"], str) and len(args["city"]) <= 12, args
        assert args["unit"] in ("celsius", "fahrenheit"), args
    elif call.function.name == "add":
        assert set(args) == {"a", "b"}, args
        for k in "ab":
            assert isinstance(args[k], int) and not isinstance(args[k], bool), args
            assert -1000 <= args[k] <= 1000, args
    else:
        raise AssertionError(f"a call to an unknown function: {call}")
    assert call.id, call
    return args


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="none", max_retries=0, timeout=60)
    model = client.models.list().data[0].id
    user = [{"role": "user", "content": "What is the weather in Paris, and what is 2 + 3?"}]
    common = dict(model=model, tools=TOOLS, temperature=0, max_tokens=120)

    # required: calls, each valid under its function's schema.
    r = client.chat.completions.create(messages=user, tool_choice="required", **common)
    m = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls", r
    assert m.content is None and m.tool_calls, m
    for c in m.tool_calls:
        check_args(c)
    required = r

    # Streamed: the same calls, as deltas.
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(messages=user, tool_choice="required", stream=True, **common):
        for ch in chunk.choices:
            for d in ch.delta.tool_calls or []:
                e = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                e["id"] = d.id or e["id"]
                if d.function and d.function.name:
                    e["name"] += d.function.name
                if d.function and d.function.arguments:
                    e["arguments"] += d.function.arguments
            finish = ch.finish_reason or finish
    streamed = [calls[i] for i in sorted(calls)]
    want = [{"name": c.function.name, "arguments": c.function.arguments} for c in m.tool_calls]
    assert [{"name": c["name"], "arguments": c["arguments"]} for c in streamed] == want, (streamed, want)
    assert all(c["id"] for c in streamed) and finish == "tool_calls", (streamed, finish)

    # The streaming helper: the arguments arrive token by token, and the
    # final message's calls (strict tools: parsed by the client) are the
    # same.
    strict = [{"type": "function", "function": dict(t["function"], strict=True)} for t in TOOLS]
    arg_deltas = 0
    with client.chat.completions.stream(
        messages=user, tool_choice="required", **dict(common, tools=strict)
    ) as s:
        for ev in s:
            if ev.type == "tool_calls.function.arguments.delta" and ev.arguments_delta:
                arg_deltas += 1
        final = s.get_final_completion()
    fc = final.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in fc] == [
        (c.function.name, c.function.arguments) for c in m.tool_calls
    ], (fc, m.tool_calls)
    assert all(c.function.parsed_arguments == json.loads(c.function.arguments) for c in fc), fc
    assert arg_deltas >= 3 * len(fc), (arg_deltas, fc)

    # A named function: only it.
    r = client.chat.completions.create(
        messages=user, tool_choice={"type": "function", "function": {"name": "add"}}, **common
    )
    assert r.choices[0].finish_reason == "tool_calls", r
    for c in r.choices[0].message.tool_calls:
        assert c.function.name == "add", c
        check_args(c)

    # parallel_tool_calls=False: exactly one call.
    r = client.chat.completions.create(messages=user, tool_choice="required", parallel_tool_calls=False, **common)
    assert len(r.choices[0].message.tool_calls) == 1, r
    check_args(r.choices[0].message.tool_calls[0])

    # none: text, no calls.
    r = client.chat.completions.create(messages=user, tool_choice="none", **dict(common, max_tokens=16))
    m = r.choices[0].message
    assert not m.tool_calls and isinstance(m.content, str), m
    assert not m.content.startswith("<tool_call>"), m
    assert r.choices[0].finish_reason in ("stop", "length"), r

    # auto: text or calls, never a broken call.
    r = client.chat.completions.create(messages=user, tool_choice="auto", **common)
    m = r.choices[0].message
    if m.tool_calls:
        assert m.content is None and r.choices[0].finish_reason == "tool_calls", r
        for c in m.tool_calls:
            check_args(c)
    else:
        assert isinstance(m.content, str) and not m.content.startswith("<tool_call>"), m

    # Round trip: the calls, their results as tool messages, a final answer.
    # The second request repeats the first exchange, which the prompt cache
    # holds: the calls go back into the prompt exactly as generated.
    first = required.choices[0].message
    results = []
    for c in first.tool_calls:
        a = json.loads(c.function.arguments)
        out = {"temperature": 21, "unit": a["unit"]} if c.function.name == "get_weather" else {"sum": a["a"] + a["b"]}
        results.append({"role": "tool", "tool_call_id": c.id, "content": json.dumps(out)})
    turn2 = user + [first.model_dump(exclude_none=True)] + results
    r2 = client.chat.completions.create(messages=turn2, tool_choice="none", **dict(common, max_tokens=16))
    m2 = r2.choices[0].message
    assert isinstance(m2.content, str) and not m2.tool_calls, m2
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= required.usage.prompt_tokens + required.usage.completion_tokens, (r2.usage, required.usage)

    # Refusals name the field.
    for kw, param in [
        (dict(tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(response_format={"type": "json_object"}), "response_format"),
        (dict(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0]"),
    ]:
        try:
            client.chat.completions.create(messages=user, **dict(common, **kw))
        except openai.BadRequestError as e:
            assert e.body and e.body.get("param") == param, (kw, e.body)
        else:
            raise AssertionError(f"accepted {kw}")

    print(
        "tools: required", [c.function.name for c in required.choices[0].message.tool_calls],
        "| round trip cached", cached, "of", r2.usage.prompt_tokens, "| final", repr(m2.content),
    )
    responses(client, model, user)
    return 0


def check_item(item) -> dict:
    """A Responses function_call item, its arguments checked as above."""
    assert item.type == "function_call" and item.call_id and item.id, item
    assert item.status == "completed", item

    class Call:  # check_args reads a chat tool call's shape
        type = "function"
        id = item.call_id
        function = item

    return check_args(Call)


def responses(client, model, user) -> None:
    """Function tools on the Responses API."""
    rtools = [dict(t["function"], type="function") for t in TOOLS]
    common = dict(model=model, tools=rtools, temperature=0, max_output_tokens=120)
    text = user[0]["content"]

    # required: function_call items, each valid.
    r = client.responses.create(input=text, tool_choice="required", **common)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and len(calls) == len(r.output), r.output
    for c in calls:
        check_item(c)
    assert r.tool_choice == "required" and [t.name for t in r.tools] == ["get_weather", "add"], r

    # Streamed with responses.stream: the same calls, their arguments in
    # several response.function_call_arguments.delta events each.
    deltas: dict[str, str] = {}
    n_deltas = 0
    with client.responses.stream(input=text, tool_choice="required", **common) as s:
        for ev in s:
            if ev.type == "response.function_call_arguments.delta":
                n_deltas += 1
                deltas[ev.item_id] = deltas.get(ev.item_id, "") + ev.delta
                assert ev.snapshot == deltas[ev.item_id], ev
        final = s.get_final_response()
    got = [(o.name, o.arguments) for o in final.output if o.type == "function_call"]
    assert got == [(c.name, c.arguments) for c in calls], (got, calls)
    assert [deltas[o.id] for o in final.output] == [a for _, a in got], (deltas, got)
    assert n_deltas >= 3 * len(got), (n_deltas, got)

    # A named function, one call.
    r1 = client.responses.create(
        input=text, tool_choice={"type": "function", "name": "add"}, parallel_tool_calls=False, **common
    )
    assert [o.type for o in r1.output] == ["function_call"] and r1.output[0].name == "add", r1.output
    check_item(r1.output[0])

    # none: a message.
    r0 = client.responses.create(input=text, tool_choice="none", **dict(common, max_output_tokens=12))
    assert [o.type for o in r0.output] == ["message"], r0.output
    assert not r0.output_text.startswith("<tool_call>"), r0.output_text

    # Round trip by previous_response_id: only the results are sent; the
    # first exchange is read from the state after it.
    def result(c) -> str:
        a = json.loads(c.arguments)
        return json.dumps({"temperature": 21, "unit": a["unit"]} if c.name == "get_weather" else {"sum": a["a"] + a["b"]})

    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": result(c)} for c in calls]
    r2 = client.responses.create(previous_response_id=r.id, input=outputs, tool_choice="none",
                                 **dict(common, max_output_tokens=12))
    assert [o.type for o in r2.output] == ["message"], r2.output
    cached = r2.usage.input_tokens_details.cached_tokens
    assert cached >= r.usage.input_tokens + r.usage.output_tokens, (r.usage, r2.usage)

    # The same conversation sent whole (the calls as input items, not
    # stored): the same prompt, so the same answer.
    whole = [{"role": "user", "content": text}] + [c.model_dump(exclude_none=True) for c in calls] + outputs
    r3 = client.responses.create(input=whole, tool_choice="none", store=False, **dict(common, max_output_tokens=12))
    assert r3.usage.input_tokens == r2.usage.input_tokens, (r3.usage, r2.usage)
    assert r3.output_text == r2.output_text, (r3.output_text, r2.output_text)

    # Refusals name the field.
    for kw, param in [
        (dict(tools=[{"type": "web_search"}]), "tools[0]"),
        (dict(tool_choice={"type": "function", "name": "nope"}), "tool_choice"),
        (dict(input=[{"type": "reasoning", "summary": []}]), "input[0].type"),
    ]:
        try:
            client.responses.create(**{**common, "input": text, **kw})
        except openai.BadRequestError as e:
            assert e.body and e.body.get("param") == param, (kw, e.body)
        else:
            raise AssertionError(f"accepted {kw}")
    print("responses: required", got, "| stream deltas", n_deltas, "| round trip cached", cached,
          "of", r2.usage.input_tokens, "| final", repr(r2.output_text))


if __name__ == "__main__":
    sys.exit(main())
