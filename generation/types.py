"""The types every generation path shares: chat messages, sampling settings, a model's spec, a
completion, a piece of a streamed answer, and the two errors. They sit below the backends, the
streaming client and the engines, which all import them (no import runs back up)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.invalid_input import InvalidInput

Messages = list[dict[str, str]]
TokenCallback = Callable[[int], None]  # n more tokens decoded (across the batch)


@dataclass(frozen=True)
class StreamDelta:
    """A piece of an answer as it streams: text, and on the last piece why it ended (``stop``,
    ``length``, ``cancelled``) and how many tokens it took."""

    text: str
    finish_reason: str | None = None
    tokens: int | None = None


class BackendUnavailable(RuntimeError):
    """The asked-for backend cannot run here; the message says how to get it."""


class GenerationFailed(RuntimeError):
    """Generation stopped part-way (a server died or refused); the message says where and why (for
    logs and staff), ``public`` says what happened without naming internal addresses (for pages)."""

    def __init__(self, message: str, *, public: str = "the generation service failed") -> None:
        super().__init__(message)
        self.public = public


@dataclass(frozen=True)
class ModelSpec:
    location: str  # a Hugging Face directory, a hub id in the local cache, or a .gguf file
    adapter: str = ""  # a LoRA adapter directory, or ""


@dataclass(frozen=True)
class Sampling:
    samples: int = 4  # K completions per prompt
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.samples <= 16:
            raise InvalidInput(f"samples must be between 1 and 16 (got {self.samples})")
        if self.temperature < 0:
            raise InvalidInput(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise InvalidInput(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")

    def as_dict(self) -> dict[str, float | int]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Completion:
    text: str
    token_count: int  # generated tokens, the final EOS included
    finish_reason: str  # "stop" (the model ended it) or "length" (max_new_tokens reached)
    mean_logprob: float | None  # mean log-probability of the generated tokens under the model
