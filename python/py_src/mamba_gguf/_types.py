"""The shapes of what mamba_gguf returns: llama-cpp-python's OpenAI-style
completion dicts and transformers' pipeline outputs."""

from __future__ import annotations

from typing import Dict, List, Optional, TypedDict, Union


class CompletionLogprobs(TypedDict):
    text_offset: List[int]
    token_logprobs: List[Optional[float]]
    tokens: List[str]
    top_logprobs: List[Optional[Dict[str, float]]]


class CompletionChoice(TypedDict):
    text: str
    index: int
    logprobs: Optional[CompletionLogprobs]
    finish_reason: Optional[str]


class PromptTokensDetails(TypedDict):
    #: Prompt tokens not fed again: the model's state had already seen them
    #: (a follow-up prompt, or one continuing a loaded state).
    cached_tokens: int


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class Completion(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: List[CompletionChoice]
    usage: CompletionUsage


class CompletionChunk(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: List[CompletionChoice]


class ChatMessage(TypedDict):
    role: str
    content: str


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: List[int]


class TokenLogprob(TypedDict):
    token: str
    logprob: float
    bytes: List[int]
    top_logprobs: List[TopLogprob]


class ChatLogprobs(TypedDict):
    content: List[TokenLogprob]


class ChatChoice(TypedDict):
    index: int
    message: ChatMessage
    logprobs: Optional[ChatLogprobs]
    finish_reason: Optional[str]


class ChatCompletion(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: List[ChatChoice]
    usage: CompletionUsage


class ChatDelta(TypedDict, total=False):
    role: str
    content: str


class ChatChunkChoice(TypedDict):
    index: int
    delta: ChatDelta
    logprobs: Optional[ChatLogprobs]
    finish_reason: Optional[str]


class ChatCompletionChunk(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: List[ChatChunkChoice]


class GeneratedText(TypedDict):
    """One pipeline result: text, or with chat input the conversation with
    the assistant's reply appended (a string with return_full_text=False)."""

    generated_text: Union[str, List[ChatMessage]]


class ConversionSummary(TypedDict):
    path: str
    tensors: int
    file_bytes: int
    tensor_bytes: int
    n_params: int
    bits_per_weight: float
    seconds: float
    warnings: List[str]
