"""llama-cpp-python's interface: ``from mamba_gguf import Llama`` instead of
``from llama_cpp import Llama``.

    python python/examples/llama_cpp_style.py MODEL.gguf
"""

from __future__ import annotations

import pickle
import sys

from mamba_gguf import Llama, LlamaState


def main(path: str) -> None:
    llm = Llama(model_path=path, n_threads=2)
    out = llm("The falcon flies", max_tokens=16, temperature=0, stop=["\n"])
    print(out["choices"][0]["text"], out["usage"]["completion_tokens"])

    for chunk in llm("The falcon flies", max_tokens=16, stream=True):
        print(chunk["choices"][0]["text"], end="", flush=True)
    print()

    chat = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name a bird of prey."},
        ],
        max_tokens=16,
    )
    print(chat["choices"][0]["message"]["content"])
    for part in llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=8, stream=True):
        print(part["choices"][0]["delta"].get("content", ""), end="")
    print()

    ids = llm.tokenize(b"The falcon")
    print(ids, llm.detokenize(ids), llm.n_vocab(), llm.metadata.get("general.name"))
    state: LlamaState = llm.save_state()
    llm.load_state(pickle.loads(pickle.dumps(state)))


if __name__ == "__main__":
    # llama.cpp's file, made by `cargo run --example llamacpp_fixtures` (not committed).
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/llamacpp/falcon-mamba-tiny-q4_k_m.gguf")
