"""The shape of a pipeline output: types, dict keys and list lengths, not
the text (tests/record_pipeline_shapes.py records transformers'; the tests
compare mamba_gguf's with them)."""

from __future__ import annotations

from typing import Any, Dict, List

#: The calls recorded: (name, input, keyword arguments). Inputs: "text",
#: "chat" (CHAT below), or lists of them.
CHAT: List[Dict[str, str]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]
CALLS: List[Any] = [
    ("text", "The falcon flies", {"max_new_tokens": 4}),
    ("text_new_only", "The falcon flies", {"max_new_tokens": 4, "return_full_text": False}),
    ("text_n2", "The falcon", {"max_new_tokens": 4, "num_return_sequences": 2}),
    ("text_greedy", "The falcon", {"max_new_tokens": 4, "do_sample": False}),
    ("chat", CHAT, {"max_new_tokens": 4}),
    ("chat_new_only", CHAT, {"max_new_tokens": 4, "return_full_text": False}),
    ("chat_n2", CHAT, {"max_new_tokens": 3, "num_return_sequences": 2}),
    ("text_batch", ["a b", "c d"], {"max_new_tokens": 3}),
    ("chat_batch", [CHAT, CHAT], {"max_new_tokens": 3}),
]


def describe(x: Any) -> Any:
    if isinstance(x, list):
        return ["list", [describe(v) for v in x]]
    if isinstance(x, dict):
        return ["dict", {str(k): describe(v) for k, v in sorted(x.items())}]
    return type(x).__name__
