"""The vLLM backend on the real engine: vLLM's CPU build in its own environment (``make vllm``) serving
the embedded SmolLM2 at fp32. Each server takes ~40 s to start on 2 cores, so one is shared where the
tests only read from it. ``make test`` builds the environment first; where it is missing these fail
rather than skip, so a clean clone cannot pass without having run them."""

import os
import signal
import threading

import pytest
from django.core.management import call_command

from annotate.models import Comparison
from annotate.services.campaigns import campaign_get_or_create
from generation.backends import BackendUnavailable, GenerationFailed, ModelSpec, Sampling, backend_load
from generation.backends import vllm as vllm_backend
from generation.backends.transformers import TransformersBackend, completion_logps
from generation.backends.vllm import VLLMBackend, VLLMServer
from generation.embedded import embedded_materialise
from generation.models import Prompt, Response
from generation.services import policy_register_embedded
from tests.factories import PromptFactory
from tests.training.dpo.conftest import write_jsonl
from training.answering import comparisons_generate
from training.dpo import DPOConfig, train

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

COLOUR = [{"role": "user", "content": "Name a primary colour."}]
CONVERSATION = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3 + 3?"},
]
LOGPROB_TOLERANCE = 1e-3  # nats per token, mean over an answer: fp32 kernels differ (seen: ~2e-4)


@pytest.fixture(scope="module")
def embedded():
    return ModelSpec(str(embedded_materialise()))


@pytest.fixture(scope="module")
def server(embedded):
    assert vllm_backend.vllm_python() is not None, "vLLM's environment is missing: run `make vllm`"
    started = VLLMServer(embedded)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def deployment(embedded, server):
    """The shared server reached by URL, as a team's deployment is."""
    backend = VLLMBackend(embedded, url=server.url)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(embedded):
    return TransformersBackend(embedded)


def test_k_answers_per_prompt_with_finish_reasons_log_probs_and_streamed_progress(deployment):
    heard = []

    answers = deployment.generate(
        [COLOUR, CONVERSATION], Sampling(samples=3, max_new_tokens=24), heard.append
    )

    assert [len(a) for a in answers] == [3, 3]
    completions = [c for a in answers for c in a]
    assert all(1 <= c.token_count <= 24 for c in completions)
    assert all(c.finish_reason == ("length" if c.token_count == 24 else "stop") for c in completions)
    assert all(c.mean_logprob is not None and c.mean_logprob < 0 for c in completions)
    assert sum(heard) == sum(c.token_count for c in completions)  # every token heard, as it streamed
    assert len(heard) > 6  # in pieces, not once at the end


def test_prompt_tokens_are_the_transformers_backends_exactly(deployment, reference):
    for messages in (COLOUR, CONVERSATION):
        assert deployment.tokenize(messages) == reference.render(messages)


def test_engine_log_probs_of_its_own_samples_agree_with_our_scorer(deployment, reference):
    body = {
        "model": deployment.model,
        "messages": COLOUR,
        "n": 4,
        "max_tokens": 32,
        "temperature": 1.0,
        "seed": 7,
        "logprobs": True,
        "return_token_ids": True,
    }
    choices = deployment.client.post("/v1/chat/completions", json=body).raise_for_status().json()["choices"]
    prompt_ids = reference.render(COLOUR)
    rows = [(prompt_ids, c["token_ids"]) for c in choices]
    ours = completion_logps(reference.model, rows, pad_id=reference.tokenizer.pad_token_id, device="cpu")

    for choice, mean in zip(choices, ours.tolist(), strict=True):
        theirs = [t["logprob"] for t in choice["logprobs"]["content"]]
        assert len(theirs) == len(choice["token_ids"])
        assert sum(theirs) / len(theirs) == pytest.approx(mean, abs=LOGPROB_TOLERANCE)


def test_a_seeded_run_reproduces_its_answers_on_the_cpu_and_another_seed_does_not(deployment):
    # Many seeded requests at once: with chunked prefill on, the CPU engine died on these
    # ("CPU Generator does not use offset"); the server runs without it on a CPU.
    many = [[{"role": "user", "content": f"Tell me a fact about the number {i}. " * 8}] for i in range(24)]
    sampling = Sampling(samples=3, max_new_tokens=16, seed=3)

    first = deployment.generate([COLOUR, CONVERSATION, *many], sampling)
    again = deployment.generate([*reversed(many), CONVERSATION, COLOUR], sampling)  # another order
    other = deployment.generate([COLOUR], Sampling(samples=3, max_new_tokens=16, seed=4))

    assert [c.text for c in first[0]] == [c.text for c in again[-1]]
    assert [c.text for c in first[1]] == [c.text for c in again[-2]]
    assert [[c.text for c in a] for a in first[2:]] == [[c.text for c in a] for a in reversed(again[:-2])]
    assert [c.text for c in other[0]] != [c.text for c in first[0]]


def test_greedy_decoding_gives_the_one_answer_k_times(deployment):
    [answers] = deployment.generate([COLOUR], Sampling(samples=2, temperature=0.0, max_new_tokens=12))

    assert len(answers) == 2 and answers[0] == answers[1]


def test_a_deployment_serving_another_model_is_refused(server, tmp_path):
    with pytest.raises(BackendUnavailable, match=rf"serves .* not {tmp_path}"):
        VLLMBackend(ModelSpec(str(tmp_path)), url=server.url)


def test_a_url_where_no_server_answers_is_a_clear_error(embedded):
    with pytest.raises(BackendUnavailable, match=r"no vLLM server answers at http://127\.0\.0\.1:9"):
        VLLMBackend(embedded, url="http://127.0.0.1:9")


def test_a_server_that_is_not_ready_in_time_is_stopped_with_a_clear_error(embedded, monkeypatch):
    stopped = []
    real_stop = vllm_backend._stop_group
    monkeypatch.setattr(vllm_backend, "_stop_group", lambda p, grace=20.0: (stopped.append(p), real_stop(p)))

    with pytest.raises(BackendUnavailable, match=r"not ready after 2 s \(PREFLOOP_VLLM_START_TIMEOUT\)"):
        VLLMServer(embedded, start_timeout=2)

    assert len(stopped) == 1 and stopped[0].poll() is not None


def test_a_trained_checkpoint_is_served_and_answers_unlike_its_parent(deployment, embedded, tmp_path):
    rows = [
        {
            "prompt": COLOUR,
            "completion": [{"role": "assistant", "content": "Zebra stripes are my favourite colour."}],
        }
    ]
    result = train(
        DPOConfig(
            policy_path=embedded.location,
            data_path=str(write_jsonl(tmp_path / "sft.jsonl", rows)),
            output_dir=str(tmp_path / "round"),
            loss="sft",
            lr=2e-4,
            batch_size=1,
            epochs=4,
            max_length=64,
            save_steps=10**9,
            dtype="fp32",
        )
    )
    greedy = Sampling(samples=1, temperature=0.0, max_new_tokens=12)

    child = backend_load("vllm", ModelSpec(str(result.final_dir)))  # a server started for it
    try:
        [[trained]] = child.generate([COLOUR], greedy)
    finally:
        child.close()
    [[parent]] = deployment.generate([COLOUR], greedy)

    assert child.server is not None and child.server.process.poll() is not None  # stopped by close
    assert trained.text != parent.text
    assert "Zebra" in trained.text


@pytest.mark.django_db(transaction=True)
def test_a_server_killed_mid_generation_is_a_clear_error_and_a_rerun_finishes(embedded):
    policy = policy_register_embedded()
    for i in range(20):
        PromptFactory(text=f"Give me one fact about the number {i}.")
    campaign = campaign_get_or_create(name="vllm")
    backend = VLLMBackend(embedded)
    first_batch_stored = threading.Event()
    killed = threading.Event()

    def kill_in_the_second_batch(n):
        if first_batch_stored.is_set() and not killed.is_set():
            killed.set()
            os.killpg(backend.server.process.pid, signal.SIGKILL)

    with pytest.raises(GenerationFailed, match="stopped answering mid-generation"):
        comparisons_generate(
            policy=policy,
            prompts=list(Prompt.objects.order_by("id")),
            sampling=Sampling(samples=2, max_new_tokens=48),
            backend=backend,
            campaign=campaign,
            on_progress=lambda prompts, tokens: first_batch_stored.set(),  # 16 prompts a batch
            on_tokens=kill_in_the_second_batch,
        )
    backend.close()
    assert Response.objects.values("prompt").distinct().count() == 16

    call_command("generate", "--policy", policy.name, "--campaign", "vllm", "--backend", "vllm",
                 "--samples", "2", "--max-new-tokens", "48")  # fmt: skip

    assert Response.objects.values("prompt").distinct().count() == 20
    assert Comparison.objects.filter(campaign=campaign).count() >= 16
