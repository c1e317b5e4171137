"""transformers' interface: ``from_pretrained`` on a Hugging Face checkpoint
folder (converted to a 4-bit GGUF once, then reused) or a GGUF file,
``generate`` on token ids, and the text-generation ``pipeline``.

    python python/examples/transformers_style.py CHECKPOINT_FOLDER_OR_GGUF
"""

from __future__ import annotations

import sys
from typing import List

from mamba_gguf import AutoModelForCausalLM, pipeline


def main(path: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(path, quant="q4_k_m")
    ids: List[int] = model.tokenize(b"The falcon flies")
    out: List[List[int]] = model.generate([ids], max_new_tokens=16, do_sample=False)
    print(model.detokenize(out[0]).decode("utf-8", "replace"))

    generator = pipeline("text-generation", model=model)
    print(generator("The falcon flies", max_new_tokens=16)[0]["generated_text"])
    chat = [{"role": "user", "content": "Name a bird of prey."}]
    print(generator(chat, max_new_tokens=16)[0]["generated_text"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hf/falcon-mamba-tiny")
