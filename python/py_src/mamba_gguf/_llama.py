"""llama-cpp-python's face: ``Model`` (alias ``Llama``) with the same keyword
names and return shapes as ``llama_cpp.Llama``, so code written for it runs
after changing the import.

Everything is computed by the native module (tokenizing, the chat template,
sampling, stop strings, log-probabilities, states); this module shapes its
events into OpenAI-style dicts. Parameters are accepted only where they take
effect: llama-cpp-python parameters that mamba-gguf does not implement raise
``NotImplementedError`` naming them unless given their neutral value.
"""

from __future__ import annotations

import os
import json
import time
import uuid
from typing import (
    Any,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Literal,
    Union,
    overload,
)

from . import _native
from ._native import MambaGgufError
from ._types import (
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    Completion,
    CompletionChunk,
    CompletionLogprobs,
    CompletionUsage,
    TokenLogprob,
)

__all__ = ["Model", "Llama", "ModelState", "LlamaState", "MambaGgufError"]

PathLike = Union[str, "os.PathLike[str]"]

# llama-cpp-python parameters mamba-gguf does not implement, with the value
# at which they have no effect (accepted); any other value is refused.
_NEUTRAL_INIT: Dict[str, Any] = {
    "n_gpu_layers": 0,
    "split_mode": None,
    "main_gpu": 0,
    "tensor_split": None,
    "vocab_only": False,
    "use_mlock": False,
    "kv_overrides": None,
    "n_ubatch": None,
    "n_threads_batch": None,
    "rope_scaling_type": None,
    "pooling_type": None,
    "rope_freq_base": 0.0,
    "rope_freq_scale": 0.0,
    "yarn_ext_factor": -1.0,
    "yarn_attn_factor": 1.0,
    "yarn_beta_fast": 32.0,
    "yarn_beta_slow": 1.0,
    "yarn_orig_ctx": 0,
    "logits_all": False,
    "embedding": False,
    "offload_kqv": True,
    "flash_attn": False,
    "last_n_tokens_size": 64,
    "lora_base": None,
    "lora_scale": 1.0,
    "lora_path": None,
    "numa": False,
    "chat_format": None,
    "chat_handler": None,
    "draft_model": None,
    "tokenizer": None,
    "type_k": None,
    "type_v": None,
    "spm_infill": False,
}
_NEUTRAL_COMPLETION: Dict[str, Any] = {
    "suffix": None,
    "typical_p": 1.0,
    "tfs_z": 1.0,
    "mirostat_mode": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
    "stopping_criteria": None,
    "logits_processor": None,
    "grammar": None,
}
_NEUTRAL_CHAT: Dict[str, Any] = {
    **_NEUTRAL_COMPLETION,
    "functions": None,
    "function_call": None,
    "tools": None,
    "tool_choice": None,
}
del _NEUTRAL_CHAT["suffix"]


_HINTS = {
    "n_gpu_layers": "; choose the backend with device='cpu' or device='cuda'",
    "chat_format": "; the GGUF's own chat template is used",
    "n_threads_batch": "; n_threads is used for prompt and generation",
}


def _response_format(rf: Any) -> Optional[Tuple[str, str]]:
    """A chat request's ``response_format`` as the native constraint:
    None or ``{"type": "text"}`` for none."""
    if rf is None:
        return None
    if not isinstance(rf, Mapping) or not isinstance(rf.get("type"), str):
        raise ValueError("response_format must be a dict with a string 'type'")
    kind = rf["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        schema = rf.get("schema")
        if schema is None:
            return ("json_object", "")
        return ("json_schema", json.dumps(schema))
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, Mapping) or not isinstance(js.get("schema"), Mapping):
            raise ValueError("response_format json_schema needs {'json_schema': {'schema': {...}}}")
        return ("json_schema", json.dumps(js["schema"]))
    raise ValueError(f"response_format type {kind!r} is not one of text, json_object, json_schema")


def _refuse(where: str, given: Mapping[str, Any], neutral: Mapping[str, Any]) -> None:
    """Refuses parameters that would not take effect."""
    for name, value in given.items():
        if name not in neutral:
            raise TypeError(f"{where}() got an unexpected keyword argument '{name}'")
        if value is not neutral[name] and value != neutral[name]:
            raise NotImplementedError(
                f"{where}: '{name}' is not supported by mamba-gguf "
                f"(only its neutral value {neutral[name]!r} is accepted){_HINTS.get(name, '')}"
            )


class ModelState:
    """A saved model state: the bytes of a mamba-gguf state file (versioned,
    checksummed, tied to the model that made it). Pickles as those bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelState) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        return (ModelState, (self.data,))

    def __repr__(self) -> str:
        return f"ModelState({len(self.data)} bytes)"


LlamaState = ModelState

_Event = Tuple[str, Optional[int], Optional[float], List[Tuple[int, float]]]
_Stop = Union[str, List[str], None]


def _usage(gen: _native.Stream) -> CompletionUsage:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": gen.reused_tokens},
    }


def _stops(stop: _Stop) -> List[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    return list(stop)


class Model:
    """A GGUF Falcon Mamba / Mamba model (llama-cpp-python's ``Llama``).

    ``n_threads``: CPU threads (default: all cores). ``device``: ``auto`` (a
    CUDA GPU if usable, else the CPU), ``cpu``, ``cuda``, ``cuda:N``.
    ``prefill_chunk`` (llama-cpp-python's ``n_batch``): prompt tokens per
    forward. ``n_ctx``: the most tokens of prompt and completion together
    (0: the model's ``context_length``; a Mamba's memory does not grow with
    it). ``seed``: the default sampling seed (else a fresh one per call).
    ``use_mmap``: map the file (False reads it into memory, a little faster
    on the CPU).
    """

    def __init__(
        self,
        model_path: PathLike,
        n_threads: Optional[int] = None,
        device: str = "auto",
        prefill_chunk: Optional[int] = None,
        verbose: bool = False,
        *,
        n_ctx: int = 0,
        n_batch: Optional[int] = None,
        seed: Optional[int] = None,
        use_mmap: bool = True,
        **unsupported: Any,
    ) -> None:
        _refuse("Model", unsupported, _NEUTRAL_INIT)
        if n_batch is not None and prefill_chunk is not None and n_batch != prefill_chunk:
            raise ValueError("give prefill_chunk or n_batch (the same setting), not both")
        if n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0, not {n_ctx}")
        self.model_path = os.fspath(model_path)
        self.verbose = verbose
        self._native = _native.Model(
            self.model_path,
            n_threads,
            device,
            prefill_chunk if prefill_chunk is not None else n_batch,
            use_mmap,
            verbose,
        )
        self._n_ctx = n_ctx if n_ctx > 0 else self._native.n_ctx()
        self._seed = seed
        #: The GGUF metadata (arrays left out), values as strings.
        self.metadata: Dict[str, str] = self._native.metadata()

    # -- tokens -----------------------------------------------------------

    def tokenize(self, text: Union[bytes, str], add_bos: bool = True, special: bool = False) -> List[int]:
        """Token ids of ``text`` (UTF-8 bytes or str). ``add_bos`` adds the BOS
        token when the model asks for one; ``special`` reads special tokens'
        text (``<|endoftext|>``) as those tokens."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8")
        return self._native.tokenize(text, add_bos, special)

    def detokenize(
        self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None, special: bool = False
    ) -> bytes:
        """The bytes of ``tokens`` (special tokens only with ``special``)."""
        if prev_tokens is not None:
            raise NotImplementedError("detokenize: 'prev_tokens' is not supported by mamba-gguf")
        return self._native.detokenize(list(tokens), special)

    def n_vocab(self) -> int:
        return self._native.n_vocab()

    def n_ctx(self) -> int:
        """The most tokens of prompt and completion together."""
        return self._n_ctx

    def token_eos(self) -> int:
        ids = self._native.eos_ids
        return ids[0] if ids else -1

    def token_bos(self) -> int:
        bos = self._native.bos_id
        return -1 if bos is None else bos

    @property
    def device(self) -> str:
        return self._native.device

    # -- state ------------------------------------------------------------

    def reset(self) -> None:
        """Back to an empty context."""
        self._native.reset()

    def save_state(self) -> ModelState:
        """The context (every token so far) as a picklable ``ModelState``."""
        return ModelState(self._native.save_state())

    def load_state(self, state: Union[ModelState, bytes]) -> None:
        """Restores a ``save_state`` of this model; a prompt that extends the
        saved context then continues it instead of starting over."""
        data = state.data if isinstance(state, ModelState) else state
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"load_state takes a ModelState or bytes, not {type(state).__name__}")
        self._native.load_state(bytes(data))

    def save_state_file(self, path: PathLike) -> None:
        """Saves the context to a state file (``mamba-gguf run --load-state``
        reads it)."""
        self._native.save_state_file(os.fspath(path))

    def load_state_file(self, path: PathLike) -> None:
        self._native.load_state_file(os.fspath(path))

    # -- completions ------------------------------------------------------

    def _prompt_ids(self, prompt: Union[str, Sequence[int]]) -> List[int]:
        if isinstance(prompt, str):
            return self._native.tokenize(prompt, True, True)
        return [int(t) for t in prompt]

    def _start(
        self,
        ids: List[int],
        max_tokens: Optional[int],
        temperature: float,
        top_p: float,
        min_p: float,
        top_k: int,
        repeat_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        logit_bias: Optional[Mapping[Any, float]],
        stop: _Stop,
        seed: Optional[int],
        logprobs: Optional[int],
        constraint: Optional[Tuple[str, str]] = None,
    ) -> _native.Stream:
        if len(ids) >= self._n_ctx:
            raise ValueError(f"Requested tokens ({len(ids)}) exceed context window of {self._n_ctx}")
        room = self._n_ctx - len(ids)
        limit = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
        bias = [(int(k), float(v)) for k, v in (logit_bias or {}).items()]
        return self._native.start(
            ids,
            limit,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            64,
            frequency_penalty,
            presence_penalty,
            bias,
            seed if seed is not None else self._seed,
            _stops(stop),
            logprobs,
            constraint=constraint,
        )

    def _completion_logprobs(self, events: Sequence[_Event], offset: int) -> CompletionLogprobs:
        lp: CompletionLogprobs = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
        for text, tid, logprob, top in events:
            if tid is None:
                continue
            piece = self._native.token_piece(tid)
            lp["tokens"].append(piece)
            lp["text_offset"].append(offset)
            lp["token_logprobs"].append(logprob)
            tops = {self._native.token_piece(i): v for i, v in top}
            if logprob is not None:
                tops[piece] = logprob
            lp["top_logprobs"].append(tops)
            offset += len(text)
        return lp

    @overload
    def create_completion(
        self,
        prompt: Union[str, List[int]],
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        logprobs: Optional[int] = None,
        echo: bool = False,
        stop: _Stop = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: Literal[False] = False,
        seed: Optional[int] = None,
        model: Optional[str] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        **unsupported: Any,
    ) -> Completion: ...

    @overload
    def create_completion(
        self,
        prompt: Union[str, List[int]],
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        logprobs: Optional[int] = None,
        echo: bool = False,
        stop: _Stop = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        *,
        stream: Literal[True],
        seed: Optional[int] = None,
        model: Optional[str] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        **unsupported: Any,
    ) -> Iterator[CompletionChunk]: ...

    def create_completion(
        self,
        prompt: Union[str, List[int]],
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        logprobs: Optional[int] = None,
        echo: bool = False,
        stop: _Stop = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: Optional[int] = None,
        model: Optional[str] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        **unsupported: Any,
    ) -> Union[Completion, Iterator[CompletionChunk]]:
        """An OpenAI text completion of ``prompt`` (text or token ids), or an
        iterator of completion chunks with ``stream=True``. ``max_tokens``
        None or <= 0: until end of sequence or ``n_ctx()``. ``logprobs=k``:
        each token's log-probability and the k most likely tokens'."""
        return self._create_completion(
            prompt, max_tokens, temperature, top_p, min_p, logprobs, echo, stop,
            frequency_penalty, presence_penalty, repeat_penalty, top_k, stream,
            seed, model, logit_bias, unsupported,
        )

    def _create_completion(
        self,
        prompt: Union[str, List[int]],
        max_tokens: Optional[int],
        temperature: float,
        top_p: float,
        min_p: float,
        logprobs: Optional[int],
        echo: bool,
        stop: _Stop,
        frequency_penalty: float,
        presence_penalty: float,
        repeat_penalty: float,
        top_k: int,
        stream: bool,
        seed: Optional[int],
        model: Optional[str],
        logit_bias: Optional[Mapping[Any, float]],
        unsupported: Mapping[str, Any],
    ) -> Union[Completion, Iterator[CompletionChunk]]:
        _refuse("create_completion", unsupported, _NEUTRAL_COMPLETION)
        if echo and logprobs is not None:
            raise NotImplementedError("create_completion: 'logprobs' with echo=True is not supported")
        ids = self._prompt_ids(prompt)
        prompt_text = prompt if isinstance(prompt, str) else self.detokenize(ids, special=True).decode("utf-8", "replace")
        gen = self._start(
            ids, max_tokens, temperature, top_p, min_p, top_k, repeat_penalty,
            frequency_penalty, presence_penalty, logit_bias, stop, seed, logprobs,
        )
        meta = (f"cmpl-{uuid.uuid4()}", int(time.time()), model or self.model_path)
        if stream:
            return self._completion_chunks(gen, meta, prompt_text if echo else None, logprobs is not None)
        try:
            events = list(gen)
        finally:
            gen.close()
        text = "".join(e[0] for e in events)
        return {
            "id": meta[0],
            "object": "text_completion",
            "created": meta[1],
            "model": meta[2],
            "choices": [
                {
                    "text": prompt_text + text if echo else text,
                    "index": 0,
                    "logprobs": self._completion_logprobs(events, len(prompt_text)) if logprobs is not None else None,
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": _usage(gen),
        }

    def _completion_chunks(
        self, gen: _native.Stream, meta: Tuple[str, int, str], echo: Optional[str], want_logprobs: bool
    ) -> Iterator[CompletionChunk]:
        def chunk(text: str, lp: Optional[CompletionLogprobs], finish: Optional[str]) -> CompletionChunk:
            return {
                "id": meta[0],
                "object": "text_completion",
                "created": meta[1],
                "model": meta[2],
                "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}],
            }

        try:
            offset = 0
            if echo:
                offset = len(echo)
                yield chunk(echo, None, None)
            for ev in gen:
                if not ev[0] and not (want_logprobs and ev[1] is not None):
                    continue
                lp = self._completion_logprobs([ev], offset) if want_logprobs and ev[1] is not None else None
                offset += len(ev[0])
                yield chunk(ev[0], lp, None)
            yield chunk("", None, gen.finish_reason)
        finally:
            gen.close()

    # llama-cpp-python's `llm(prompt, ...)`: the same method, overloads included.
    __call__ = create_completion

    # -- chat -------------------------------------------------------------

    def _chat_logprobs(self, events: Sequence[_Event]) -> ChatLogprobs:
        content: List[TokenLogprob] = []
        for _text, tid, logprob, top in events:
            if tid is None or logprob is None:
                continue
            content.append(
                {
                    "token": self._native.token_piece(tid),
                    "logprob": logprob,
                    "bytes": list(self._native.token_bytes(tid)),
                    "top_logprobs": [
                        {
                            "token": self._native.token_piece(i),
                            "logprob": v,
                            "bytes": list(self._native.token_bytes(i)),
                        }
                        for i, v in top
                    ],
                }
            )
        return {"content": content}

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt ``create_chat_completion`` feeds for ``messages``: the
        GGUF's chat template (ChatML when it has none), rendered with the
        generation prompt."""
        return self._native.render_chat(messages, True)

    @overload
    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        stream: Literal[False] = False,
        stop: _Stop = None,
        seed: Optional[int] = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        model: Optional[str] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        **unsupported: Any,
    ) -> ChatCompletion: ...

    @overload
    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        *,
        stream: Literal[True],
        stop: _Stop = None,
        seed: Optional[int] = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        model: Optional[str] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        **unsupported: Any,
    ) -> Iterator[ChatCompletionChunk]: ...

    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        stream: bool = False,
        stop: _Stop = None,
        seed: Optional[int] = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        model: Optional[str] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        **unsupported: Any,
    ) -> Union[ChatCompletion, Iterator[ChatCompletionChunk]]:
        """An OpenAI chat completion of ``messages`` (dicts with ``role`` and
        ``content``) with the model's chat template; generation ends at every
        end-of-sequence and end-of-turn id of the model.
        ``response_format`` (structured output through llguidance, as
        llama-cpp-python and OpenAI take it): ``{"type": "json_object"}``
        (optionally with ``"schema"``), or ``{"type": "json_schema",
        "json_schema": {"schema": ...}}``; the reply cannot leave it."""
        constraint = _response_format(unsupported.pop("response_format", None))
        _refuse("create_chat_completion", unsupported, _NEUTRAL_CHAT)
        if top_logprobs is not None and not logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        k = (top_logprobs or 0) if logprobs else None
        ids = self._native.tokenize(self.chat_prompt(messages), True, True)
        gen = self._start(
            ids, max_tokens, temperature, top_p, min_p, top_k, repeat_penalty,
            frequency_penalty, presence_penalty, logit_bias, stop, seed, k, constraint,
        )
        meta = (f"chatcmpl-{uuid.uuid4()}", int(time.time()), model or self.model_path)
        if stream:
            return self._chat_chunks(gen, meta, k is not None)
        try:
            events = list(gen)
        finally:
            gen.close()
        return {
            "id": meta[0],
            "object": "chat.completion",
            "created": meta[1],
            "model": meta[2],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(e[0] for e in events)},
                    "logprobs": self._chat_logprobs(events) if k is not None else None,
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": _usage(gen),
        }

    def _chat_chunks(
        self, gen: _native.Stream, meta: Tuple[str, int, str], want_logprobs: bool
    ) -> Iterator[ChatCompletionChunk]:
        def chunk(choice: ChatChunkChoice) -> ChatCompletionChunk:
            return {
                "id": meta[0],
                "object": "chat.completion.chunk",
                "created": meta[1],
                "model": meta[2],
                "choices": [choice],
            }

        try:
            yield chunk({"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None})
            for ev in gen:
                if not ev[0] and not (want_logprobs and ev[1] is not None):
                    continue
                lp = self._chat_logprobs([ev]) if want_logprobs and ev[1] is not None else None
                yield chunk({"index": 0, "delta": {"content": ev[0]}, "logprobs": lp, "finish_reason": None})
            yield chunk({"index": 0, "delta": {}, "logprobs": None, "finish_reason": gen.finish_reason})
        finally:
            gen.close()


Llama = Model
