"""The generation process's engines on the real vLLM (its CPU build in ``.venv-vllm``): LoRA policies
share their base's engine, loaded at runtime, and answer as their merged models do; a full-weight
policy's engine is started on demand and an idle engine is stopped to make room, never a busy one.

The adapters are trained by our own trainer, as a LoRA round trains them (``lora_lineage``: SFT on one
answer each, merged copy beside). One supervisor is shared by the module (each vLLM start is ~40 s on 2 cores)."""

import math
import threading

import httpx
import pytest

from generation.backends import ModelSpec, Sampling, backend_load
from generation.backends.transformers import TransformersBackend
from generation.engines import Served, engine_estimate_gb
from generation.server import server_make
from generation.streaming import chat_stream
from tests.lora import COLOUR  # what the lora_lineage rounds were taught on

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

GREEDY = Sampling(samples=1, temperature=0.0, top_p=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def supervisor(lora_lineage):
    """The generation server with vLLM engines, a memory budget for one engine at a time."""
    base, rounds = lora_lineage
    served = {base: Served(base, base)}
    for adapter, merged in rounds.values():
        served[adapter] = Served(adapter, base, adapter, whole=merged)
        served[merged] = Served(merged, merged)  # the merged copy, registered as a full-weight policy
    one = engine_estimate_gb(Served(base, base), "vllm", gpu=False)
    server = server_make(host="127.0.0.1", port=0, resolve=served.get, engine="vllm", memory_gb=one * 1.5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.engines
    server.shutdown()
    server.server_close()
    server.engines.close()


def _answer(url: str, model: str, sampling: Sampling = GREEDY) -> tuple[str, str]:
    pieces = list(
        chat_stream(
            url=url, model=model, messages=COLOUR, sampling=sampling, stop=threading.Event(), timeout=300
        )
    )
    return "".join(p.text for p in pieces), pieces[-1].finish_reason


def _greedy_transformers(location: str) -> str:
    backend = TransformersBackend(ModelSpec(location))
    [[completion]] = backend.generate([COLOUR], GREEDY)
    return completion.text


def test_a_base_and_two_lora_policies_answer_from_one_engine_as_their_merged_models_do(
    lora_lineage, supervisor
):
    base, rounds = lora_lineage
    url, engines = supervisor
    models = [base, rounds["zebra"][0], rounds["ocean"][0]]
    answers: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda m=m: answers.__setitem__(m, _answer(url, m)[0])) for m in models
    ]
    for thread in threads:  # together: vLLM batches the base and both adapters
        thread.start()
    for thread in threads:
        thread.join(timeout=600)

    [engine] = engines.status()
    assert engine["kind"] == "vllm" and engine["engine"] == base
    assert engine["adapters"] == sorted([rounds["zebra"][0], rounds["ocean"][0]])
    assert answers[base] == _greedy_transformers(base)
    for name, (adapter, merged) in rounds.items():
        assert answers[adapter] == _greedy_transformers(merged), name
        assert answers[adapter] != answers[base]
    assert "Zebra" in answers[rounds["zebra"][0]] and "Ocean" in answers[rounds["ocean"][0]]


def test_batch_work_samples_from_a_policys_engine_when_it_is_up(lora_lineage, supervisor, monkeypatch):
    """``auto`` takes the engine the generation process has up for the policy (no second copy of the
    model, no server of its own), and closing the backend leaves the engine up; with no generation
    process it keeps its measured choice (transformers on this CPU)."""
    base, _ = lora_lineage
    url, engines = supervisor
    _answer(url, base)  # the base's engine is up (the arena asked for it)
    [engine] = [e for e in engines.status() if e["engine"] == base]
    monkeypatch.setenv("PREFLOOP_ARENA_URL", url)

    backend = backend_load("auto", ModelSpec(base))
    try:
        assert backend.name == "vllm" and backend.server is None and backend.url == engine["url"]
        [[completion]] = backend.generate([COLOUR], GREEDY)
    finally:
        backend.close()

    assert completion.text == _greedy_transformers(base)
    assert [e["status"] for e in engines.status() if e["engine"] == base] == ["ready"]
    monkeypatch.setenv("PREFLOOP_ARENA_URL", "http://127.0.0.1:9")  # nothing listens there
    alone = backend_load("auto", ModelSpec(base))
    alone.close()
    assert alone.name == "transformers"


def test_a_full_weight_engine_waits_for_a_busy_one_then_stops_it_to_make_room(lora_lineage, supervisor):
    base, rounds = lora_lineage
    url, engines = supervisor
    merged = rounds["zebra"][1]
    long = Sampling(samples=1, temperature=0.7, top_p=0.9, max_new_tokens=64)
    stream = chat_stream(
        url=url, model=base, messages=COLOUR, sampling=long, stop=threading.Event(), timeout=300
    )
    first = next(stream)  # the base's engine answers now

    refused = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": merged, "messages": COLOUR, "max_tokens": 4, "stream": True},
        timeout=30,
    )
    assert refused.status_code == 503 and "held by engines answering" in refused.json()["error"]["message"]

    *rest, last = stream  # the busy answer was not cut: it finishes whole
    assert last.finish_reason in ("stop", "length") and (first.text + "".join(p.text for p in rest)).strip()
    [old] = list(engines.engines.values())

    text, finish = _answer(url, merged)  # now the idle base engine stops to make room

    assert old.stopped and old.server.process.poll() is not None
    assert [e["engine"] for e in engines.status()] == [merged]
    assert finish in ("stop", "length") and text == _greedy_transformers(merged)


@pytest.mark.django_db
def test_the_embedded_model_judges_pairs_through_its_engine_with_log_probs(
    lora_lineage, supervisor, settings
):
    """An AI judge on a policy the project serves: its engine warmed and asked directly, each pair
    read in both orders, the verdict's probability from the verdict tokens' log-probabilities (not a
    hard 0 or 1 read off the text), stored as the judge's and never as a person's judgment."""
    from annotate.models import AIVerdict, Judgment
    from annotate.services.ai_judges import judge_campaign, judge_register
    from tests.factories import (
        CampaignFactory,
        ComparisonFactory,
        PolicyFactory,
        PromptFactory,
        ResponseFactory,
    )

    base, _ = lora_lineage
    url, _ = supervisor
    settings.PREFLOOP_ARENA_URL = url
    campaign = CampaignFactory(name="judged")
    for question, good, bad in [
        ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
        ("Name the capital of France.", "Paris.", "Berlin."),
    ]:
        prompt = PromptFactory(text=question)
        ComparisonFactory(
            campaign=campaign,
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, text=good),
            response_b=ResponseFactory(prompt=prompt, text=bad),
        )
    judge = judge_register(name="smollm2", policy=PolicyFactory(name="smol", location=base))

    assert judge_campaign(judge=judge, campaign=campaign) == 2

    verdicts = list(AIVerdict.objects.all())
    readings = [r for v in verdicts for r in v.readings]
    assert len(readings) == 4 and all(r["top_logprobs"] for r in readings)  # read from log-probs
    for r in readings:  # p(A) / (p(A) + p(B)) of what the engine gave (B may be beyond its top 5)
        top = {t.strip().upper(): math.exp(lp) for t, lp in r["top_logprobs"].items()}
        assert r["probability_shown_first"] == pytest.approx(
            top.get("A", 0) / (top.get("A", 0) + top.get("B", 0))
        )
    assert all(v.choice in ("first", "second") for v in verdicts) and not Judgment.objects.exists()
