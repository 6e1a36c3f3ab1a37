"""The transformers backend on tiny random Llamas built from a config, and on the real SmolLM2."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from generation.backends import (
    BackendUnavailable,
    Completion,
    ModelSpec,
    Sampling,
    backend_choose,
    backend_load,
)
from generation.backends.transformers import TransformersBackend
from generation.embedded import embedded_materialise

PROMPTS = [
    [{"role": "user", "content": "name a colour"}],
    [
        {"role": "system", "content": "answer briefly please."},
        {"role": "user", "content": "what is the capital?"},
    ],
]


@pytest.fixture(scope="module")
def tiny_backend(chat_model_dir):
    return TransformersBackend(ModelSpec(str(chat_model_dir)))


def test_k_completions_per_prompt_with_counts_reasons_and_logprobs(tiny_backend):
    results = tiny_backend.generate(PROMPTS, Sampling(samples=3, max_new_tokens=6, seed=1))

    assert [len(r) for r in results] == [3, 3]
    for completion in (c for r in results for c in r):
        assert isinstance(completion, Completion)
        assert 1 <= completion.token_count <= 6
        assert completion.finish_reason in ("stop", "length")
        assert completion.finish_reason == "stop" or completion.token_count == 6
        assert completion.mean_logprob < 0


def test_same_seed_same_samples_other_seed_other_samples(tiny_backend):
    first = tiny_backend.generate(PROMPTS, Sampling(samples=2, max_new_tokens=8, temperature=1.0, seed=7))
    again = tiny_backend.generate(PROMPTS, Sampling(samples=2, max_new_tokens=8, temperature=1.0, seed=7))
    other = tiny_backend.generate(PROMPTS, Sampling(samples=2, max_new_tokens=8, temperature=1.0, seed=8))
    assert first == again
    assert first != other


def test_left_padded_batch_gives_what_each_prompt_gives_alone(chat_model_dir):
    batched = TransformersBackend(ModelSpec(str(chat_model_dir)))
    greedy = Sampling(samples=1, temperature=0, max_new_tokens=6)
    together = batched.generate(PROMPTS, greedy)
    alone = [batched.generate([p], greedy)[0] for p in PROMPTS]
    assert [r[0].text for r in together] == [r[0].text for r in alone]
    assert [r[0].mean_logprob for r in together] == pytest.approx(
        [r[0].mean_logprob for r in alone], abs=1e-4
    )


def test_mean_logprob_is_the_models_own_for_the_generated_tokens(chat_model_dir, tiny_backend):
    completion = tiny_backend.generate(PROMPTS[:1], Sampling(samples=1, temperature=0, max_new_tokens=5))[0][
        0
    ]
    model = AutoModelForCausalLM.from_pretrained(chat_model_dir)
    eos = AutoTokenizer.from_pretrained(chat_model_dir).eos_token_id
    ids = tiny_backend.render(PROMPTS[0])
    logps = []
    with torch.no_grad():  # greedy decoding by hand, the log-prob of each chosen token noted
        for _ in range(5):
            step = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            token = int(step.argmax())
            logps.append(step[token].item())
            ids.append(token)
            if token == eos:
                break
    assert completion.token_count == len(logps)
    assert completion.mean_logprob == pytest.approx(sum(logps) / len(logps), abs=1e-4)


def test_plain_tokenizer_takes_single_user_prompts_and_refuses_conversations(plain_model_dir):
    backend = TransformersBackend(ModelSpec(str(plain_model_dir)))
    assert len(backend.generate(PROMPTS[:1], Sampling(samples=2, max_new_tokens=3))[0]) == 2
    with pytest.raises(ValueError, match="needs a model whose tokenizer has a chat template"):
        backend.generate(PROMPTS[1:], Sampling(samples=2, max_new_tokens=3))


def test_auto_takes_vllm_for_a_named_deployment_or_with_a_gpu_else_transformers(monkeypatch, tmp_path):
    import torch

    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.delenv("PREFLOOP_VLLM_URL", raising=False)
    monkeypatch.setenv("PREFLOOP_VLLM_PYTHON", str(python))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend_choose("auto") == "transformers"  # a CPU: transformers is faster (docs/benchmarks.md)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backend_choose("auto") == "vllm"
    monkeypatch.setenv("PREFLOOP_VLLM_PYTHON", str(tmp_path / "missing"))
    assert backend_choose("auto") == "transformers"  # a GPU but no vLLM environment
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("PREFLOOP_VLLM_URL", "http://vllm.example:8000")
    assert backend_choose("auto") == "vllm"
    with pytest.raises(ValueError, match="backend must be one of"):
        backend_choose("onnx")


def test_asking_for_vllm_without_its_environment_or_a_url_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFLOOP_VLLM_URL", raising=False)
    monkeypatch.setenv("PREFLOOP_VLLM_PYTHON", str(tmp_path / "missing"))
    with pytest.raises(BackendUnavailable, match="`make vllm` builds vLLM's own environment"):
        backend_load("vllm", ModelSpec(str(tmp_path)))


@pytest.mark.slow
def test_embedded_smollm2_answers_with_text_that_stops_at_eos():
    backend = backend_load("transformers", ModelSpec(str(embedded_materialise())))
    prompts = [[{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]]

    completion = backend.generate(prompts, Sampling(samples=1, temperature=0, max_new_tokens=40))[0][0]

    assert completion.finish_reason == "stop"
    assert "Paris" in completion.text
    assert "<|im_end|>" not in completion.text and "<|im_start|>" not in completion.text
    assert 1 < completion.token_count <= 40
    sampled = backend.generate(prompts, Sampling(samples=3, temperature=0.8, max_new_tokens=24, seed=3))[0]
    assert all(c.text.strip() and c.token_count <= 24 for c in sampled)


def test_greedy_decoding_with_k_samples_gives_k_identical_answers(tiny_backend):
    results = tiny_backend.generate(PROMPTS, Sampling(samples=3, temperature=0, max_new_tokens=4))
    assert [len(r) for r in results] == [3, 3]
    assert all(len({c.text for c in r}) == 1 for r in results)


@pytest.mark.parametrize(("top_p", "k"), [(0.9, 256), (0.9, 2), (1.0, 256)])
def test_nucleus_sampler_draws_from_the_temperature_top_p_distribution(top_p, k):
    from generation.backends.sampling import NucleusSampler

    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])
    temperature = 0.7
    probs = torch.softmax(logits / temperature, -1)
    # by hand: keep tokens while the mass before them is below top_p, then renormalise
    keep = (probs.cumsum(0) - probs) < top_p
    expected = torch.where(keep, probs, torch.zeros_like(probs))
    expected = expected / expected.sum()

    torch.manual_seed(0)
    draws = 20_000
    sampler = NucleusSampler(temperature=temperature, top_p=top_p, k=k)
    out = sampler(None, logits.repeat(draws, 1))
    chosen = out.argmax(-1)

    assert torch.isinf(out).sum(-1).eq(len(logits) - 1).all()  # one finite logit per row: greedy picks it
    frequencies = torch.bincount(chosen, minlength=len(logits)).float() / draws
    assert frequencies.tolist() == pytest.approx(expected.tolist(), abs=0.015)


def test_on_tokens_hears_every_generated_token_while_the_batch_decodes(tiny_backend):
    heard = []
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "name a colour please"}]]
    completions = tiny_backend.generate(prompts, Sampling(samples=3, max_new_tokens=12, seed=1), heard.append)
    assert 1 <= len(heard) <= 12  # one report per decoding step (fewer when every row ended early)
    assert sum(heard) == sum(c.token_count for outputs in completions for c in outputs)


def test_score_is_the_mean_logprob_of_the_answer_and_its_end_under_the_model(tiny_backend):
    messages = [{"role": "user", "content": "name a colour please"}]
    prompt = tiny_backend.render(messages)
    answer = tiny_backend.tokenizer.encode("blue and red", add_special_tokens=False)
    end = tiny_backend.tokenizer.eos_token_id
    ids = torch.tensor([prompt + answer + [end]])
    logps = torch.log_softmax(tiny_backend.model(input_ids=ids).logits[0, :-1].float(), -1)
    wanted = logps[torch.arange(len(prompt) - 1, ids.shape[1] - 1), ids[0, len(prompt) :]]

    scored = tiny_backend.score([messages, messages], ["blue and red", "blue and red"], [True, False])

    assert scored[0] == pytest.approx(wanted.mean().item(), abs=1e-5)
    assert scored[1] == pytest.approx(wanted[:-1].mean().item(), abs=1e-5)  # not ended: no end token


def test_a_prompt_prefilled_once_samples_what_k_full_prefills_sample(chat_model_dir, monkeypatch):
    """The K samples of a prompt decode from copies of one prefilled cache; left padding included,
    they are the samples that prefilling every copy gives (same seed, same draws)."""
    sampling = Sampling(samples=3, max_new_tokens=8, temperature=1.0, seed=11)
    once = TransformersBackend(ModelSpec(str(chat_model_dir)))
    every = TransformersBackend(ModelSpec(str(chat_model_dir)), prefill_once=False)
    calls = []
    original = TransformersBackend._prefill

    def counted(self, input_ids, attention_mask, repeats):
        calls.append((input_ids.shape[0], repeats))
        return original(self, input_ids, attention_mask, repeats)

    monkeypatch.setattr(TransformersBackend, "_prefill", counted)
    shared = once.generate(PROMPTS, sampling)
    assert calls == [(2, 3)]  # the 2 prompts prefilled once each, not 6 copies
    separate = every.generate(PROMPTS, sampling)
    assert calls == [(2, 3)]

    assert [[c.text for c in r] for r in shared] == [[c.text for c in r] for r in separate]
    assert [c.mean_logprob for r in shared for c in r] == pytest.approx(
        [c.mean_logprob for r in separate for c in r], abs=1e-4
    )
