"""Generation backends: one interface, K completions per prompt.

A backend is built for one model (``ModelSpec``: location, optional LoRA adapter) and turns chat
prompts into completions with the model's own chat template. Pure Python, no Django: the service
layer maps Policies and Responses onto these types.

- ``transformers``: batched ``generate`` on CPU or GPU, always available.
- ``vllm``: a vLLM OpenAI-compatible server, a deployment named by ``PREFLOOP_VLLM_URL`` or one started
  from vLLM's own environment (``make vllm``) for the model and stopped afterwards.
- ``auto``: vllm where a deployment is named, or where vLLM is built and a GPU is present; else
  transformers (on a CPU the transformers backend samples a batch faster and starts in a second, where
  a vLLM server takes ~40 s: docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

BACKENDS = ("auto", "transformers", "vllm")
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
            raise ValueError(f"samples must be between 1 and 16 (got {self.samples})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")

    def as_dict(self) -> dict[str, float | int]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Completion:
    text: str
    token_count: int  # generated tokens, the final EOS included
    finish_reason: str  # "stop" (the model ended it) or "length" (max_new_tokens reached)
    mean_logprob: float | None  # mean log-probability of the generated tokens under the model


class Backend(Protocol):
    name: str

    def generate(
        self, prompts: list[Messages], sampling: Sampling, on_tokens: TokenCallback | None = None
    ) -> list[list[Completion]]:
        """``sampling.samples`` completions for each prompt, in prompt order; ``on_tokens(n)`` hears
        of tokens as they are decoded (a backend that cannot tell may stay silent)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (a server it started); it cannot generate afterwards."""
        ...


def backend_choose(name: str) -> str:
    """The concrete backend for ``name`` (auto: see the module's docstring)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {name!r})")
    if name != "auto":
        return name
    from generation.backends.vllm import vllm_python, vllm_url

    if vllm_url():
        return "vllm"
    import torch

    return "vllm" if vllm_python() is not None and torch.cuda.is_available() else "transformers"


def backend_load(name: str, spec: ModelSpec, **options: object) -> Backend:
    """Load the model behind ``spec`` into the chosen backend (slow: seconds to minutes)."""
    chosen = backend_choose(name)
    if chosen == "vllm":
        from generation.backends.vllm import VLLMBackend

        options.pop("batch_size", None)  # the server batches continuously
        return VLLMBackend(spec, **options)  # type: ignore[arg-type]
    from generation.backends.transformers import TransformersBackend

    return TransformersBackend(spec, **options)  # type: ignore[arg-type]
