"""mamba_gguf: run and convert 4-bit Falcon Mamba (Mamba-1) GGUF models from
Python, with the Rust runtime doing the work.

Two faces over one native model:

* llama-cpp-python's: ``Model`` (alias ``Llama``): ``model(prompt, ...)`` /
  ``create_completion``, ``create_chat_completion``, ``tokenize``,
  ``detokenize``, ``save_state`` / ``load_state`` ...
* transformers': ``from_pretrained`` / ``AutoModelForCausalLM`` (a GGUF file,
  or a Hugging Face checkpoint folder converted once), ``generate``, and
  ``pipeline("text-generation", model=...)``.

Plus ``convert`` and ``quantize``. Errors are ``FileNotFoundError``,
``ValueError`` (bad input), ``NotImplementedError`` (a parameter mamba-gguf
does not implement) or ``MambaGgufError``.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from . import _native
from ._hf import AutoModelForCausalLM, CausalLM, TextGenerationPipeline, from_pretrained, pipeline
from ._llama import Llama, LlamaState, Model, ModelState
from ._native import MambaGgufError
from ._types import ConversionSummary

__version__ = _native.__version__
#: The output types of ``convert`` and ``quantize``.
FILE_TYPES = list(_native.FILE_TYPES)

__all__ = [
    "Model",
    "Llama",
    "ModelState",
    "LlamaState",
    "MambaGgufError",
    "CausalLM",
    "AutoModelForCausalLM",
    "from_pretrained",
    "pipeline",
    "TextGenerationPipeline",
    "convert",
    "quantize",
    "FILE_TYPES",
    "__version__",
]

_Path = Union[str, "os.PathLike[str]"]


def convert(
    hf_dir: _Path,
    out: _Path,
    type: str = "q4_k_m",
    progress: bool = True,
    *,
    force: bool = False,
    pure: bool = False,
    threads: Optional[int] = None,
    imatrix: Optional[_Path] = None,
) -> ConversionSummary:
    """Converts a Hugging Face Falcon Mamba / Mamba checkpoint folder to a
    GGUF file of ``type`` (see ``FILE_TYPES``) in one streaming pass, as
    ``mamba-gguf convert`` does. ``force`` overwrites ``out``; ``pure`` gives
    every matrix the one type; ``imatrix`` is an importance matrix file
    (``mamba-gguf imatrix`` or llama-imatrix) to quantize with, as
    ``llama-quantize --imatrix``. Ctrl-C stops it (no file is left)."""
    return _native.convert(
        os.fspath(hf_dir), os.fspath(out), type, progress, force, pure, threads,
        None if imatrix is None else os.fspath(imatrix),
    )


def quantize(
    src: _Path,
    dst: _Path,
    type: str,
    progress: bool = True,
    *,
    force: bool = False,
    pure: bool = False,
    allow_requantize: bool = False,
    threads: Optional[int] = None,
    imatrix: Optional[_Path] = None,
) -> ConversionSummary:
    """Requantizes an F32/F16/BF16 GGUF to ``type``, as ``mamba-gguf
    quantize`` does (``imatrix``: as in :func:`convert`)."""
    return _native.quantize(
        os.fspath(src), os.fspath(dst), type, progress, force, pure, allow_requantize, threads,
        None if imatrix is None else os.fspath(imatrix),
    )
