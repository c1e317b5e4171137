"""transformers' face: ``from_pretrained`` (a GGUF file, or a Hugging Face
checkpoint folder converted once into a cache beside it), ``generate`` on
token ids, and ``pipeline("text-generation")``, with transformers' keyword
names and return shapes.

As in the llama-cpp-python face, the native module does the work (the
conversion, tokenizing, the chat template, sampling, end-of-sequence
handling); this module maps transformers' arguments onto it and shapes the
results. Sampling uses mamba-gguf's sampler: top-k, then top-p, then min-p,
then temperature (llama.cpp's order; transformers applies the temperature
before top-k/top-p, which differs only when top_p < 1). The repetition
penalty looks at the whole sequence, as transformers' does.
"""

from __future__ import annotations

import os
import importlib
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union, cast, overload

from . import _native
from ._llama import Model, PathLike, _refuse
from ._types import ChatMessage, GeneratedText

__all__ = [
    "CausalLM",
    "AutoModelForCausalLM",
    "from_pretrained",
    "pipeline",
    "TextGenerationPipeline",
]

# transformers' generate() parameters mamba-gguf does not implement, at the
# value where they have no effect.
_NEUTRAL_GENERATE: Dict[str, Any] = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "use_cache": True,
    "streamer": None,
    "logits_processor": None,
    "stopping_criteria": None,
    "generation_config": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "diversity_penalty": 0.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_new_tokens": None,
    "min_length": 0,
    "length_penalty": 1.0,
    "early_stopping": False,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict_in_generate": False,
    "renormalize_logits": False,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "tokenizer": None,
    "assistant_model": None,
}
_NEUTRAL_PIPELINE_CALL: Dict[str, Any] = {
    **_NEUTRAL_GENERATE,
    "return_tensors": False,
    "return_text": True,
    "clean_up_tokenization_spaces": None,
    "prefix": None,
    "handle_long_generation": None,
    "continue_final_message": None,
    "add_special_tokens": None,
    "truncation": None,
    "padding": None,
    "max_length": None,
}

Ids = List[int]


def _eos_list(eos_token_id: Union[int, Sequence[int], None]) -> Optional[List[int]]:
    if eos_token_id is None:
        return None
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    return [int(i) for i in eos_token_id]


def _sampling(
    do_sample: bool, temperature: float, top_k: Optional[int], top_p: float,
    min_p: Optional[float], repetition_penalty: float, n: int,
) -> Tuple[float, int, float, float, float]:
    """transformers' sampling arguments as the native sampler's (temperature,
    top_k, top_p, min_p, repeat_penalty); greedy is temperature 0."""
    if not do_sample:
        if n > 1:
            raise ValueError(
                "Greedy methods without beam search do not support `num_return_sequences` different than 1 "
                f"(got {n}); pass do_sample=True"
            )
        return (0.0, 0, 1.0, 0.0, repetition_penalty)
    if temperature <= 0:
        raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float when sampling")
    return (temperature, top_k or 0, top_p, min_p or 0.0, repetition_penalty)


class CausalLM(Model):
    """A ``Model`` with transformers' ``generate`` (what ``from_pretrained``
    returns). All of ``Model`` (completions, chat, states) works on it too."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: PathLike,
        quant: str = "q4_k_m",
        *,
        cache_dir: Optional[PathLike] = None,
        progress: bool = True,
        **model_kwargs: Any,
    ) -> "CausalLM":
        """Loads a GGUF file, or a Hugging Face checkpoint folder converted to
        ``quant`` once: into ``<folder>/.mamba-gguf/<name>-<quant>.gguf`` (or
        ``cache_dir``), with a progress bar on stderr, reused by later calls
        while it is newer than the folder's files. ``model_kwargs`` go to
        ``Model`` (``n_threads``, ``device``, ...)."""
        path, _ = _native.cached_gguf(
            os.fspath(pretrained_model_name_or_path),
            quant,
            None if cache_dir is None else os.fspath(cache_dir),
            progress,
        )
        return cls(path, **model_kwargs)

    def _pad_id(self, pad_token_id: Optional[int]) -> int:
        if pad_token_id is not None:
            return pad_token_id
        pad = self.metadata.get("tokenizer.ggml.padding_token_id")
        if pad is not None:
            return int(pad)
        eos = self._native.eos_ids
        return eos[0] if eos else 0

    def _generate_one(
        self,
        row: Ids,
        max_new: int,
        sampling: Tuple[float, int, float, float, float],
        eos: Optional[List[int]],
        seed: Optional[int],
        stop: List[str],
    ) -> Tuple[Ids, _native.Stream]:
        """The row followed by its generated ids (the end-of-sequence id that
        ended it included, as transformers returns it)."""
        temperature, top_k, top_p, min_p, penalty = sampling
        gen = self._native.start(
            row, max_new, temperature, top_k, top_p, min_p, penalty, -1,
            0.0, 0.0, [], seed, stop, None, eos,
        )
        try:
            for _ in gen:
                pass
        finally:
            gen.close()
        out = row + gen.tokens
        if gen.stop_id is not None:
            out.append(gen.stop_id)
        return out, gen

    @overload
    def generate(self, input_ids: List[int], **kwargs: Any) -> List[int]: ...

    @overload
    def generate(self, input_ids: List[List[int]], **kwargs: Any) -> List[List[int]]: ...

    @overload
    def generate(self, input_ids: Any, **kwargs: Any) -> Any: ...

    def generate(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        max_new_tokens: Optional[int] = None,
        max_length: Optional[int] = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: Optional[int] = 50,
        top_p: float = 1.0,
        min_p: Optional[float] = None,
        repetition_penalty: float = 1.0,
        eos_token_id: Union[int, Sequence[int], None] = None,
        pad_token_id: Optional[int] = None,
        num_return_sequences: int = 1,
        stop_strings: Union[str, List[str], None] = None,
        seed: Optional[int] = None,
        **unsupported: Any,
    ) -> Any:
        """transformers' ``generate``: the input ids followed by the generated
        ones, for every row (a list for a list, a list of lists for a 2-D
        list, an array of the input's type and dtype for numpy or torch
        input; rows that end early are padded with ``pad_token_id``).
        ``max_new_tokens`` defaults to 20 (or ``max_length`` minus the
        prompt). Greedy unless ``do_sample``; ``seed`` makes sampling
        reproducible (row i uses seed + i)."""
        _refuse("generate", unsupported, _NEUTRAL_GENERATE)
        kind, rows = _as_rows(input_ids)
        if attention_mask is not None:
            _, mask = _as_rows(attention_mask)
            if any(v != 1 for r in mask for v in r):
                raise NotImplementedError(
                    "generate: an attention_mask with padding (0s) is not supported; pass unpadded rows"
                )
        if num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, not {num_return_sequences}")
        sampling = _sampling(do_sample, temperature, top_k, top_p, min_p, repetition_penalty, num_return_sequences)
        eos = _eos_list(eos_token_id)
        stops = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        out: List[Ids] = []
        for row in rows:
            if max_new_tokens is not None:
                max_new = max_new_tokens
            elif max_length is not None:
                max_new = max_length - len(row)
            else:
                max_new = 20
            if max_new < 0:
                raise ValueError(f"max_new_tokens must be >= 0, not {max_new}")
            for _ in range(num_return_sequences):
                s = None if seed is None else seed + len(out)
                out.append(list(row) if max_new == 0 else self._generate_one(list(row), max_new, sampling, eos, s, stops)[0])
        width = max(len(r) for r in out)
        pad = self._pad_id(pad_token_id)
        padded = [r + [pad] * (width - len(r)) for r in out]
        return _from_rows(kind, input_ids, padded)


def _as_rows(x: Any) -> Tuple[str, List[Ids]]:
    """The rows of 1-D or 2-D ids and how they were given: "1d"/"2d" lists,
    "numpy" or "torch" (by their tolist())."""
    kind = "list"
    if hasattr(x, "tolist") and not isinstance(x, (list, tuple)):
        kind = "torch" if type(x).__module__.startswith("torch") else "numpy"
        x = x.tolist()
    if isinstance(x, (list, tuple)) and all(isinstance(v, int) for v in x):
        if not x:
            raise ValueError("input_ids is empty")
        return kind + "1", [[int(v) for v in x]]
    if isinstance(x, (list, tuple)) and x and all(isinstance(r, (list, tuple)) for r in x):
        rows = [[int(v) for v in r] for r in x]
        if any(not r for r in rows):
            raise ValueError("input_ids has an empty row")
        return kind + "2", rows
    raise ValueError("input_ids must be token ids: a list, a list of lists, or a 1-D/2-D numpy or torch array")


def _from_rows(kind: str, like: Any, rows: List[Ids]) -> Any:
    data: Any = rows[0] if kind.endswith("1") and len(rows) == 1 else rows
    if kind.startswith("numpy"):
        return importlib.import_module("numpy").asarray(data, dtype=like.dtype)
    if kind.startswith("torch"):
        return importlib.import_module("torch").tensor(data, dtype=like.dtype)
    return data


def from_pretrained(
    pretrained_model_name_or_path: PathLike,
    quant: str = "q4_k_m",
    *,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
    **model_kwargs: Any,
) -> CausalLM:
    """``CausalLM.from_pretrained``."""
    return CausalLM.from_pretrained(
        pretrained_model_name_or_path, quant, cache_dir=cache_dir, progress=progress, **model_kwargs
    )


class AutoModelForCausalLM:
    """``AutoModelForCausalLM.from_pretrained(path)``, as in transformers."""

    from_pretrained = staticmethod(from_pretrained)


Chat = Sequence[Mapping[str, Any]]
PipelineResult = List[GeneratedText]


class _Opts(NamedTuple):
    max_new: int
    sampling: Tuple[float, int, float, float, float]
    eos: Optional[List[int]]
    stop: List[str]


class TextGenerationPipeline:
    """transformers' text-generation pipeline over a ``Model``: a string, a
    chat (a list of messages) or a list of either in; ``[{"generated_text":
    ...}]`` out (one list per input for a list of inputs). Like
    transformers' pipeline it samples by default (``do_sample=True``) and
    generates up to 256 new tokens."""

    task = "text-generation"

    def __init__(self, model: Model) -> None:
        self.model = model

    def _one(self, prompt: Union[str, Chat], opts: "_Opts", n: int, seed: Optional[int],
             return_full_text: bool) -> PipelineResult:
        native = self.model._native
        if isinstance(prompt, str):
            text, chat = prompt, None
        else:
            chat = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in prompt]
            text = native.render_chat(chat, True)
        ids = native.tokenize(text, True, True)
        if not ids:
            raise ValueError("the prompt is empty (no tokens)")
        temperature, top_k, top_p, min_p, penalty = opts.sampling
        results: PipelineResult = []
        for i in range(n):
            gen = native.start(
                ids, opts.max_new, temperature, top_k, top_p, min_p, penalty, -1, 0.0, 0.0, [],
                None if seed is None else seed + i, opts.stop, None, opts.eos,
            )
            try:
                for _ in gen:
                    pass
            finally:
                gen.close()
            reply = native.detokenize(gen.tokens, False).decode("utf-8", "replace")
            if chat is None:
                results.append({"generated_text": text + reply if return_full_text else reply})
            elif return_full_text:
                msgs: List[ChatMessage] = [{"role": m["role"], "content": m["content"]} for m in chat]
                msgs.append({"role": "assistant", "content": reply})
                results.append({"generated_text": msgs})
            else:
                results.append({"generated_text": reply})
        return results

    @overload
    def __call__(self, text_inputs: Union[str, Chat], **kwargs: Any) -> PipelineResult: ...

    @overload
    def __call__(self, text_inputs: Union[List[str], List[Chat]], **kwargs: Any) -> List[PipelineResult]: ...

    def __call__(
        self,
        text_inputs: Union[str, Chat, List[str], List[Chat]],
        *,
        return_full_text: bool = True,
        max_new_tokens: Optional[int] = None,
        num_return_sequences: int = 1,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: Optional[int] = 50,
        top_p: float = 1.0,
        min_p: Optional[float] = None,
        repetition_penalty: float = 1.0,
        eos_token_id: Union[int, Sequence[int], None] = None,
        stop_strings: Union[str, List[str], None] = None,
        seed: Optional[int] = None,
        **unsupported: Any,
    ) -> Union[PipelineResult, List[PipelineResult]]:
        _refuse("TextGenerationPipeline.__call__", unsupported, _NEUTRAL_PIPELINE_CALL)
        if num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, not {num_return_sequences}")
        max_new = 256 if max_new_tokens is None else max_new_tokens
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {max_new}")
        sampling = _sampling(
            do_sample, temperature, top_k, top_p, min_p, repetition_penalty, num_return_sequences
        )
        opts = _Opts(
            max_new,
            sampling,
            _eos_list(eos_token_id),
            [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or []),
        )
        if isinstance(text_inputs, str) or _is_chat(text_inputs):
            return self._one(cast("Union[str, Chat]", text_inputs), opts, num_return_sequences, seed, return_full_text)
        if isinstance(text_inputs, (list, tuple)) and all(isinstance(x, str) or _is_chat(x) for x in text_inputs):
            return [self._one(x, opts, num_return_sequences, seed, return_full_text) for x in text_inputs]
        raise ValueError("text_inputs must be a string, a chat (a list of messages) or a list of these")


def _is_chat(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(m, Mapping) for m in x)


def pipeline(
    task: str = "text-generation",
    model: Union[PathLike, Model, None] = None,
    *,
    quant: str = "q4_k_m",
    device: Union[str, int, None] = None,
    **model_kwargs: Any,
) -> TextGenerationPipeline:
    """``pipeline("text-generation", model=...)``: ``model`` is a GGUF file, a
    Hugging Face checkpoint folder (converted once, see ``from_pretrained``)
    or a loaded ``Model``. ``device``: "cpu", "cuda", "cuda:N", or
    transformers' -1 (CPU) / N (GPU N)."""
    if task != "text-generation":
        raise ValueError(f"unsupported task '{task}': mamba_gguf.pipeline does 'text-generation' only")
    if model is None:
        raise ValueError("pipeline needs model=: a GGUF file, a Hugging Face checkpoint folder or a Model")
    if isinstance(model, Model):
        if device is not None or model_kwargs:
            raise ValueError("device and model options apply when pipeline loads the model, not to a Model")
        return TextGenerationPipeline(model)
    if isinstance(device, int):
        device = "cpu" if device < 0 else f"cuda:{device}"
    if device is not None:
        model_kwargs["device"] = device
    return TextGenerationPipeline(from_pretrained(model, quant, **model_kwargs))
