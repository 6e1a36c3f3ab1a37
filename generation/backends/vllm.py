"""The vLLM backend: in-process ``vllm.LLM`` on a GPU (optional extra: ``pip install 'prefloop[vllm]'``).

All prompts go in one ``LLM.chat`` call (vLLM batches and schedules them itself, applying the model's
chat template), with ``SamplingParams(n=K, seed=...)``, prefix caching on (the K samples of a prompt
share its KV cache), LoRA adapters through ``LoRARequest``, and tensor parallelism from
``PREFLOOP_VLLM_TENSOR_PARALLEL`` (default 1). vLLM is imported only when this backend is built, so
its absence breaks nothing else. The mapping of our settings onto vLLM's arguments lives in plain
functions, tested without vLLM; the engine itself has not been run in this project's CI.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from generation.backends import BackendUnavailable, Completion, Messages, ModelSpec, Sampling, TokenCallback

INSTALL_HINT = "the vllm backend needs vLLM: pip install 'prefloop[vllm]' (Linux with a CUDA GPU)"
ADAPTER_NAME = "prefloop-adapter"


def vllm_import() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise BackendUnavailable(INSTALL_HINT) from exc


def vllm_engine_kwargs(
    spec: ModelSpec, *, tensor_parallel_size: int, gpu_memory_utilization: float, seed: int = 0
) -> dict[str, Any]:
    """``vllm.LLM(**kwargs)`` for a model spec."""
    if spec.location.endswith(".gguf"):
        raise BackendUnavailable(
            f"{spec.location}: serve a Hugging Face directory with vLLM (register the materialised model), "
            "not a GGUF file"
        )
    kwargs: dict[str, Any] = {
        "model": spec.location,
        "enable_prefix_caching": True,
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": gpu_memory_utilization,
        "seed": seed,
        "dtype": "auto",
    }
    if spec.adapter:
        kwargs["enable_lora"] = True
        kwargs["max_lora_rank"] = _adapter_rank(spec.adapter)
    return kwargs


def _adapter_rank(adapter: str) -> int:
    """The LoRA rank vLLM must reserve for, read from the adapter's config (vLLM's default is 16)."""
    config = Path(adapter) / "adapter_config.json"
    rank = json.loads(config.read_text(encoding="utf-8")).get("r", 16) if config.is_file() else 16
    return max(rank, 8)


def vllm_sampling_kwargs(sampling: Sampling) -> dict[str, Any]:
    """``vllm.SamplingParams(**kwargs)``: K samples per prompt; logprobs=0 returns the sampled tokens'
    log-probs, so each output carries its cumulative log-prob."""
    return {
        "n": sampling.samples,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "logprobs": 0,
    }


def vllm_lora_request_args(spec: ModelSpec) -> tuple[str, int, str] | None:
    """``LoRARequest(*args)`` for an adapter policy, or None."""
    return (ADAPTER_NAME, 1, spec.adapter) if spec.adapter else None


def vllm_completion(output: Any) -> Completion:
    """One of vLLM's ``CompletionOutput`` as ours."""
    tokens = len(output.token_ids)
    cumulative = getattr(output, "cumulative_logprob", None)
    return Completion(
        text=output.text,
        token_count=tokens,
        finish_reason="length" if output.finish_reason == "length" else "stop",
        mean_logprob=cumulative / tokens if cumulative is not None and tokens else None,
    )


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        tensor_parallel_size: int | None = None,
        gpu_memory_utilization: float = 0.9,
        vllm_module: Any = None,
    ) -> None:
        self._vllm = vllm_module or vllm_import()
        tensor_parallel_size = tensor_parallel_size or int(
            os.environ.get("PREFLOOP_VLLM_TENSOR_PARALLEL", "1")
        )
        self.llm = self._vllm.LLM(
            **vllm_engine_kwargs(
                spec, tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization
            )
        )
        lora_args = vllm_lora_request_args(spec)
        self.lora_request = self._lora_request_class()(*lora_args) if lora_args else None

    def _lora_request_class(self) -> Any:
        lora = getattr(self._vllm, "LoRARequest", None)
        return lora or importlib.import_module("vllm.lora.request").LoRARequest

    def generate(
        self, prompts: list[Messages], sampling: Sampling, on_tokens: TokenCallback | None = None
    ) -> list[list[Completion]]:
        """One batch; vLLM reports nothing per token here (its own progress bar is off), so
        ``on_tokens`` hears the total once the batch is done."""
        params = self._vllm.SamplingParams(**vllm_sampling_kwargs(sampling))
        outputs = self.llm.chat(
            prompts,
            sampling_params=params,
            lora_request=self.lora_request,
            use_tqdm=False,
            add_generation_prompt=True,
        )
        results = [[vllm_completion(o) for o in request.outputs] for request in outputs]
        if on_tokens is not None:
            on_tokens(sum(c.token_count for completions in results for c in completions))
        return results
