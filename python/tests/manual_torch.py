"""A manual check, not collected by pytest (CI does not install torch: its
PyPI wheel brings gigabytes of CUDA libraries): generate() takes a torch
tensor and returns one of the same dtype and the shape transformers gives.

    MAMBA_GGUF_BIN=target/debug/mamba-gguf python3 python/tests/manual_torch.py
"""

import json
import sys
from pathlib import Path

import torch

import mamba_gguf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import GGUF  # noqa: E402

RECORDED = json.loads((HERE / "fixtures" / "transformers_shapes.json").read_text())


def main() -> None:
    model = mamba_gguf.from_pretrained(str(GGUF))
    ids = model.tokenize(b"The falcon flies")
    out = model.generate(torch.tensor([ids]), max_new_tokens=4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64, type(out)
    assert out.shape == tuple(RECORDED["generate"]["greedy_shape"]), out.shape
    plain = model.generate([ids], max_new_tokens=4)
    assert out.tolist() == plain, (out.tolist(), plain)
    print("ok: torch in, torch out, the same ids as a list")


if __name__ == "__main__":
    main()
