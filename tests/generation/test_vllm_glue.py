"""The vLLM backend's glue, tested with vLLM absent: selection, errors, and the mapping of our settings
onto vLLM's arguments through a stand-in module. Nothing here pretends the engine ran."""

import importlib.util
import json
from types import SimpleNamespace

import pytest

from generation.backends import BackendUnavailable, ModelSpec, Sampling, backend_load
from generation.backends.vllm import (
    VLLMBackend,
    vllm_completion,
    vllm_engine_kwargs,
    vllm_lora_request_args,
    vllm_sampling_kwargs,
)


def test_vllm_is_absent_here_and_asking_for_it_says_how_to_get_it():
    assert importlib.util.find_spec("vllm") is None
    with pytest.raises(BackendUnavailable, match=r"pip install 'prefloop\[vllm\]'"):
        backend_load("vllm", ModelSpec("/models/x"))


def test_sampling_maps_onto_sampling_params():
    kwargs = vllm_sampling_kwargs(
        Sampling(samples=6, temperature=0.7, top_p=0.9, max_new_tokens=300, seed=11)
    )
    assert kwargs == {"n": 6, "temperature": 0.7, "top_p": 0.9, "max_tokens": 300, "seed": 11, "logprobs": 0}


def test_engine_kwargs_turn_on_prefix_caching_tensor_parallelism_and_lora(tmp_path):
    plain = vllm_engine_kwargs(ModelSpec("/models/base"), tensor_parallel_size=4, gpu_memory_utilization=0.8)
    assert plain["model"] == "/models/base"
    assert plain["enable_prefix_caching"] is True
    assert plain["tensor_parallel_size"] == 4
    assert plain["gpu_memory_utilization"] == 0.8
    assert "enable_lora" not in plain

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    lora = vllm_engine_kwargs(
        ModelSpec("/models/base", str(tmp_path)), tensor_parallel_size=1, gpu_memory_utilization=0.9
    )
    assert (lora["enable_lora"], lora["max_lora_rank"]) == (True, 32)
    assert vllm_lora_request_args(ModelSpec("/models/base", str(tmp_path))) == (
        "prefloop-adapter",
        1,
        str(tmp_path),
    )
    assert vllm_lora_request_args(ModelSpec("/models/base")) is None


def test_gguf_policies_are_refused_by_vllm_with_a_reason():
    with pytest.raises(BackendUnavailable, match="not a GGUF file"):
        vllm_engine_kwargs(ModelSpec("/models/x.gguf"), tensor_parallel_size=1, gpu_memory_utilization=0.9)


class StandIn:
    """Records what the backend asks of vLLM and answers like vLLM's LLM.chat."""

    def __init__(self):
        self.calls = {}
        standin = self

        class LLM:
            def __init__(self, **kwargs):
                standin.calls["LLM"] = kwargs

            def chat(self, prompts, **kwargs):
                standin.calls["chat"] = (prompts, kwargs)
                return [
                    SimpleNamespace(
                        outputs=[
                            SimpleNamespace(
                                text=f"answer {i}",
                                token_ids=[1, 2, 3, 4],
                                cumulative_logprob=-2.0,
                                finish_reason="stop",
                            ),
                            SimpleNamespace(
                                text="cut", token_ids=[5, 6], cumulative_logprob=None, finish_reason="length"
                            ),
                        ]
                    )
                    for i, _ in enumerate(prompts)
                ]

        def sampling_params(**kwargs):
            standin.calls["SamplingParams"] = kwargs
            return ("params", kwargs)

        def lora_request(*args):
            standin.calls["LoRARequest"] = args
            return ("lora", args)

        self.LLM, self.SamplingParams, self.LoRARequest = LLM, sampling_params, lora_request


def test_backend_drives_llm_chat_with_all_prompts_in_one_call(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    vllm = StandIn()
    backend = VLLMBackend(ModelSpec("/models/base", str(tmp_path)), tensor_parallel_size=2, vllm_module=vllm)
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]

    results = backend.generate(prompts, Sampling(samples=2, max_new_tokens=64, seed=3))

    assert vllm.calls["LLM"]["tensor_parallel_size"] == 2 and vllm.calls["LLM"]["enable_lora"] is True
    assert vllm.calls["LoRARequest"] == ("prefloop-adapter", 1, str(tmp_path))
    sent, kwargs = vllm.calls["chat"]
    assert sent == prompts
    assert kwargs["sampling_params"] == (
        "params",
        vllm_sampling_kwargs(Sampling(samples=2, max_new_tokens=64, seed=3)),
    )
    assert kwargs["lora_request"] == ("lora", ("prefloop-adapter", 1, str(tmp_path)))
    assert kwargs["add_generation_prompt"] is True
    first = results[0][0]
    assert (first.text, first.token_count, first.finish_reason, first.mean_logprob) == (
        "answer 0",
        4,
        "stop",
        -0.5,
    )
    assert results[1][1].finish_reason == "length" and results[1][1].mean_logprob is None


def test_completion_mapping_handles_missing_logprobs():
    output = SimpleNamespace(text="x", token_ids=[], cumulative_logprob=None, finish_reason="abort")
    assert vllm_completion(output).finish_reason == "stop"
    assert vllm_completion(output).mean_logprob is None
