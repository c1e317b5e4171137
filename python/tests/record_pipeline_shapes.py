"""Records what transformers returns for the text-generation pipeline and
generate() on the tiny Falcon Mamba checkpoint, into
fixtures/transformers_shapes.json, which test_transformers.py compares
mamba_gguf's results with (transformers and torch are too heavy to install
in CI). Run from the repository root after changing shapes.CALLS:

    python3 python/tests/record_pipeline_shapes.py
"""

from __future__ import annotations

import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

sys.path.insert(0, os.path.dirname(__file__))
from shapes import CALLS, describe  # noqa: E402

HF = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "hf", "falcon-mamba-tiny")


def main() -> None:
    torch.manual_seed(0)
    pipe = pipeline("text-generation", model=HF, device="cpu")
    out = {"transformers": transformers.__version__, "pipeline": {}, "generate": {}}
    for name, inp, kwargs in CALLS:
        res = pipe(inp, **kwargs)
        facts = {"shape": describe(res)}
        flat = res if isinstance(inp, str) or isinstance(inp[0], dict) else [r for rs in res for r in rs]
        prompts = [inp] * len(flat) if isinstance(inp, str) or isinstance(inp[0], dict) else [
            p for p in inp for _ in range(len(flat) // len(inp))
        ]
        if kwargs.get("return_full_text", True):
            if isinstance(flat[0]["generated_text"], str):
                facts["starts_with_prompt"] = all(r["generated_text"].startswith(p) for r, p in zip(flat, prompts))
            else:
                facts["starts_with_messages"] = all(r["generated_text"][: len(p)] == p for r, p in zip(flat, prompts))
                facts["last_role"] = flat[0]["generated_text"][-1]["role"]
        out["pipeline"][name] = facts

    tok = AutoTokenizer.from_pretrained(HF)
    model = AutoModelForCausalLM.from_pretrained(HF)
    ids = tok("The falcon flies", return_tensors="pt").input_ids
    n = ids.shape[1]
    greedy = model.generate(ids, max_new_tokens=4, do_sample=False)
    first = int(greedy[0, n])
    stopped = model.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=first)
    batch = model.generate(torch.cat([ids, ids]), max_new_tokens=3, do_sample=False)
    out["generate"] = {
        "prompt_len": n,
        "greedy_shape": list(greedy.shape),
        "greedy_keeps_prompt": bool((greedy[0, :n] == ids[0]).all()),
        "eos_first_shape": list(stopped.shape),
        "eos_first_last_is_eos": int(stopped[0, -1]) == first,
        "batch_shape": list(batch.shape),
        "dtype": str(greedy.dtype),
    }
    path = os.path.join(os.path.dirname(__file__), "fixtures", "transformers_shapes.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
