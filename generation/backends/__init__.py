"""Generation backends: one interface, K completions per prompt.

A backend is built for one model (``ModelSpec``: location, optional LoRA adapter) and turns chat
prompts into completions with the model's own chat template. Pure Python, no Django: the service
layer maps Policies and Responses onto these types.

- ``transformers``: batched ``generate`` on CPU or GPU, always available.
- ``vllm``: a vLLM OpenAI-compatible server, a deployment named by ``PREFLOOP_VLLM_URL`` or one started
  from vLLM's own environment (``make vllm``) for the model and stopped afterwards.
- ``auto``: the model's vLLM engine where the generation process has one up for it (the arena's: it
  is not loaded a second time); else vllm where a deployment is named, or where vLLM is built and a GPU
  is present; else transformers (on a CPU the transformers backend samples a batch faster and starts
  in a second, where a vLLM server takes ~40 s: docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Protocol

from config.invalid_input import InvalidInput
from generation.types import (  # noqa: F401  (re-exported: the backends' interface)
    BackendUnavailable,
    Completion,
    GenerationFailed,
    Messages,
    ModelSpec,
    Sampling,
    StreamDelta,
    TokenCallback,
)

BACKENDS = ("auto", "transformers", "vllm")


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
        raise InvalidInput(f"backend must be one of {', '.join(BACKENDS)} (got {name!r})")
    if name != "auto":
        return name
    from generation.backends.vllm import vllm_python, vllm_url

    if vllm_url():
        return "vllm"
    import torch

    return "vllm" if vllm_python() is not None and torch.cuda.is_available() else "transformers"


def backend_load(name: str, spec: ModelSpec, **options: object) -> Backend:
    """Load the model behind ``spec`` into the chosen backend (slow: seconds to minutes)."""
    if name == "auto" and "url" not in options:
        from generation.backends.vllm import VLLMBackend, engine_up_for

        if url := engine_up_for(spec):
            options.pop("batch_size", None)
            return VLLMBackend(spec, url=url, **options)  # type: ignore[arg-type]
    chosen = backend_choose(name)
    if chosen == "vllm":
        from generation.backends.vllm import VLLMBackend

        options.pop("batch_size", None)  # the server batches continuously
        return VLLMBackend(spec, **options)  # type: ignore[arg-type]
    from generation.backends.transformers import TransformersBackend

    return TransformersBackend(spec, **options)  # type: ignore[arg-type]
