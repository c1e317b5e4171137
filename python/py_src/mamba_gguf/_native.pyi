"""The native module (Rust, PyO3). Use the classes of ``mamba_gguf``; this
stub describes what they are built on."""

from os import PathLike
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from ._types import ConversionSummary

__version__: str
FILE_TYPES: List[str]

class MambaGgufError(Exception): ...

_Path = Union[str, PathLike[str]]
#: (visible text, token id or None for text held back to the end,
#: log-probability, top (id, log-probability) pairs)
Event = Tuple[str, Optional[int], Optional[float], List[Tuple[int, float]]]

class Stream(Iterator[Event]):
    def __iter__(self) -> Stream: ...
    def __next__(self) -> Event: ...
    def close(self) -> None: ...
    @property
    def finish_reason(self) -> Optional[str]: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def reused_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def tokens(self) -> List[int]: ...
    @property
    def stop_id(self) -> Optional[int]: ...
    @property
    def text(self) -> str: ...

class Model:
    def __init__(
        self,
        path: _Path,
        n_threads: Optional[int] = None,
        device: str = "auto",
        prefill_chunk: Optional[int] = None,
        use_mmap: bool = True,
        verbose: bool = False,
    ) -> None: ...
    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> List[int]: ...
    def detokenize(self, ids: Iterable[int], special: bool = False) -> bytes: ...
    def token_piece(self, id: int) -> str: ...
    def token_bytes(self, id: int) -> bytes: ...
    def n_vocab(self) -> int: ...
    def n_ctx(self) -> int: ...
    def metadata(self) -> Dict[str, str]: ...
    @property
    def eos_ids(self) -> List[int]: ...
    @property
    def bos_id(self) -> Optional[int]: ...
    @property
    def add_bos(self) -> bool: ...
    @property
    def chat_template(self) -> Optional[str]: ...
    @property
    def path(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def name(self) -> str: ...
    def n_past(self) -> int: ...
    def render_chat(
        self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str: ...
    def start(
        self,
        prompt: List[int],
        max_tokens: Optional[int],
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        repeat_last_n: int = 64,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: List[Tuple[int, float]] = ...,
        seed: Optional[int] = None,
        stop: List[str] = ...,
        logprobs: Optional[int] = None,
        eos_ids: Optional[List[int]] = None,
        constraint: Optional[Tuple[str, str]] = None,
    ) -> Stream: ...
    def save_state(self) -> bytes: ...
    def load_state(self, state: bytes) -> None: ...
    def save_state_file(self, path: _Path) -> None: ...
    def load_state_file(self, path: _Path) -> None: ...
    def reset(self) -> None: ...

def convert(
    hf_dir: _Path,
    out: _Path,
    type: str = "q4_k_m",
    progress: bool = True,
    force: bool = False,
    pure: bool = False,
    threads: Optional[int] = None,
    imatrix: Optional[str] = None,
) -> ConversionSummary: ...
def quantize(
    src: _Path,
    dst: _Path,
    type: str,
    progress: bool = True,
    force: bool = False,
    pure: bool = False,
    allow_requantize: bool = False,
    threads: Optional[int] = None,
    imatrix: Optional[str] = None,
) -> ConversionSummary: ...
def cached_gguf(
    path: _Path,
    quant: str = "q4_k_m",
    cache_dir: Optional[_Path] = None,
    progress: bool = True,
) -> Tuple[str, bool]: ...
