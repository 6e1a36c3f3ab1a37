"""The generation server (transformers, vLLM's chat API) and the streaming client the web relays it with."""

import json
import threading

import httpx
import pytest

from generation.backends import GenerationFailed, Sampling
from generation.streaming import chat_stream, endpoint_for

SHORT = Sampling(samples=1, temperature=0.7, top_p=0.9, max_new_tokens=6)


def test_an_answer_streams_in_pieces_and_ends_with_its_reason(generation_server, chat_model_dir):
    pieces = list(
        chat_stream(
            url=generation_server,
            model=str(chat_model_dir),
            messages=[{"role": "user", "content": "hello there"}],
            sampling=SHORT,
            stop=threading.Event(),
        )
    )

    *text, last = pieces
    assert text and all(p.text and p.finish_reason is None for p in text)
    assert last.finish_reason in ("stop", "length") and last.tokens is not None and 1 <= last.tokens <= 6
    assert last.finish_reason == "length" or last.tokens < 6
    models = httpx.get(f"{generation_server}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [str(chat_model_dir)]  # started on first use


def _greedy_alone(model_dir, messages, max_new_tokens):
    """The answer transformers' ``generate`` gives greedily to ``messages``, outside any server."""
    import torch

    from generation.backends import ModelSpec
    from generation.backends.transformers import TransformersBackend

    backend = TransformersBackend(ModelSpec(str(model_dir)))
    ids = torch.tensor([backend.render(messages)])
    out = backend.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=backend.eos_ids,
        pad_token_id=backend.tokenizer.pad_token_id,
    )
    return backend.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_a_multi_turn_conversation_is_answered_whole(generation_server, chat_model_dir):
    """The whole history reaches the model: the answer is the one the model gives to the whole
    conversation, not to its last message alone (which the tiny model answers otherwise)."""
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there, what would you like?"},
        {"role": "user", "content": "and now?"},
    ]
    body = {"model": str(chat_model_dir), "messages": conversation, "max_tokens": 8, "temperature": 0}
    answer = httpx.post(f"{generation_server}/v1/chat/completions", json=body, timeout=60).json()

    whole = _greedy_alone(chat_model_dir, conversation, 8)
    last_only = _greedy_alone(chat_model_dir, conversation[-1:], 8)
    assert whole != last_only  # the test can tell them apart
    assert answer["choices"][0]["message"]["content"] == whole
    assert answer["usage"]["completion_tokens"] <= 8


def test_a_stop_mid_answer_ends_the_engine_s_generation(chat_model_dir):
    """The engine itself stops (not the client marking its copy cancelled): the same answer (greedy)
    written once whole and once with a stop set at its first piece; the stopped one ends as cancelled
    with far fewer tokens than the whole one took."""
    from generation.engines import Engines, Served

    budget = Sampling(samples=1, temperature=0.0, max_new_tokens=200)
    story = [{"role": "user", "content": "tell a story"}]

    def answer(stop_at_first: bool) -> list:
        engines = Engines(lambda m: Served(m, m), kind="plain", memory_gb=8)
        engine, served = engines.acquire(str(chat_model_dir))
        engine.ready.wait(60)
        stop, pieces = threading.Event(), []
        for piece in engine.stream(engine.model_for(served), story, budget, stop):
            pieces.append(piece)
            if stop_at_first:
                stop.set()
        engines.release(engine)
        engines.close()
        return pieces

    whole, stopped = answer(False), answer(True)

    assert whole[-1].finish_reason in ("stop", "length") and whole[-1].tokens > 30  # a long answer
    assert stopped[-1].finish_reason == "cancelled"
    assert stopped[-1].tokens < whole[-1].tokens / 2  # cut soon after the stop, not at the end
    assert "".join(p.text for p in whole).startswith("".join(p.text for p in stopped))


def test_an_idle_engine_stops_to_make_room_and_a_busy_one_is_never_stopped(chat_model_dir, tmp_path):
    """A budget for one engine: while the first answers, a second model is refused with the reason
    (never queued, never stopping the busy one); once the first is idle, it is stopped for the second."""
    import shutil

    from generation.engines import EngineRefused, Engines, Served, engine_estimate_gb

    other = tmp_path / "other"
    shutil.copytree(chat_model_dir, other)
    one = engine_estimate_gb(Served("x", str(chat_model_dir)), "plain", gpu=False)
    engines = Engines(lambda m: Served(m, m), kind="plain", memory_gb=one * 1.5)
    first, served = engines.acquire(str(chat_model_dir))
    first.ready.wait(60)
    stream = first.stream(
        first.model_for(served), [{"role": "user", "content": "hi"}], SHORT, threading.Event()
    )
    next(stream)  # answering now

    with pytest.raises(EngineRefused, match="held by engines answering") as refused:
        engines.acquire(str(other))
    assert refused.value.status == 503
    assert [e["engine"] for e in engines.status()] == [str(chat_model_dir)]

    *_, last = stream  # the first answer finishes whole
    assert last.finish_reason in ("stop", "length")
    engines.release(first)
    second, _ = engines.acquire(str(other))
    assert first.stopped and not second.stopped
    assert [e["engine"] for e in engines.status()] == [str(other)]
    engines.release(second)
    engines.close()


def test_an_engine_too_big_for_the_budget_is_refused_with_both_sizes(chat_model_dir):
    from generation.engines import EngineRefused, Engines, Served

    engines = Engines(lambda m: Served(m, m), kind="plain", memory_gb=0.01)
    with pytest.raises(EngineRefused, match=r"needs about .* GiB; the engines' memory budget is 0\.0 GiB"):
        engines.acquire(str(chat_model_dir))


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"model": "/etc", "messages": [{"role": "user", "content": "x"}]}, 404, "not a registered policy"),
        ({"model": "m", "messages": "hello"}, 400, "messages must be a non-empty list"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
            400,
            "max_tokens",
        ),
        ({"messages": []}, 400, "naming its model"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(generation_server, body, status, says):
    answer = httpx.post(f"{generation_server}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == status and says in answer.json()["error"]["message"]


def test_a_server_that_is_down_is_named_in_the_error():
    with pytest.raises(GenerationFailed, match=r"127\.0\.0\.1:9"):
        list(
            chat_stream(
                url="http://127.0.0.1:9",
                model="m",
                messages=[{"role": "user", "content": "x"}],
                sampling=SHORT,
                stop=threading.Event(),
            )
        )


def test_a_policy_goes_to_the_first_vllm_deployment_that_serves_it(generation_server, chat_model_dir):
    # the generation server lists the models it answers at once, as vLLM lists what it serves
    httpx.post(
        f"{generation_server}/v1/chat/completions",
        json={"model": str(chat_model_dir), "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
        timeout=60,
    )
    down = "http://127.0.0.1:9"
    deployments = [down, generation_server]
    assert endpoint_for(str(chat_model_dir), vllm_urls=deployments, fallback_url="http://fallback") == (
        generation_server,
        str(chat_model_dir),
    )
    assert endpoint_for("/other/model", vllm_urls=deployments, fallback_url="http://fallback") == (
        "http://fallback",
        "/other/model",
    )
    assert endpoint_for("/other/model", vllm_urls=[], fallback_url="http://fallback")[0] == "http://fallback"


def test_several_deployments_are_read_from_one_setting(monkeypatch):
    from generation.backends.vllm import vllm_urls

    monkeypatch.setenv("PREFLOOP_VLLM_URL", "http://gpu-a:8000/, http://gpu-b:8000 http://gpu-c:8000")
    assert vllm_urls() == ["http://gpu-a:8000", "http://gpu-b:8000", "http://gpu-c:8000"]


def test_warming_starts_an_engine_without_a_request_waiting_on_it(generation_server, chat_model_dir):
    import time

    answer = httpx.post(f"{generation_server}/v1/warm", json={"model": str(chat_model_dir)}, timeout=10)
    assert answer.status_code == 202 and answer.json()["status"] in ("starting", "ready")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = httpx.get(f"{generation_server}/v1/models").json()
        if [m["id"] for m in listed["data"]] == [str(chat_model_dir)] and listed["engines"][0]["busy"] == 0:
            break  # up, and the warm-up no longer holds it
        time.sleep(0.2)
    assert listed["engines"][0]["status"] == "ready" and listed["engines"][0]["busy"] == 0
    refused = httpx.post(f"{generation_server}/v1/warm", json={"model": "/etc"}, timeout=10)
    assert refused.status_code == 404


def test_a_failure_after_the_stream_began_is_an_error_not_an_ending(monkeypatch):
    """An ``error`` event mid-stream (an engine that died) raises, naming the server, rather than
    passing for an answer that ended."""
    body = b'data: {"choices": [{"delta": {"content": "half"}}]}\n\ndata: {"error": {"message": "engine died"}}\n\n'
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    monkeypatch.setattr("generation.streaming.httpx.stream", client.stream)

    pieces = chat_stream(
        url="http://engine",
        model="m",
        messages=[{"role": "user", "content": "x"}],
        sampling=SHORT,
        stop=threading.Event(),
    )

    assert next(pieces).text == "half"
    with pytest.raises(GenerationFailed, match="engine died"):
        next(pieces)


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", "nan"), ("temperature", "inf"), ("temperature", -1), ("top_p", 0)]
)
def test_sampling_settings_out_of_range_are_refused_before_they_reach_an_engine(
    generation_server, chat_model_dir, field, value
):
    body = {"model": str(chat_model_dir), "messages": [{"role": "user", "content": "hi"}], field: value}

    answer = httpx.post(f"{generation_server}/v1/chat/completions", json=body, timeout=60)

    assert answer.status_code == 400 and field in answer.json()["error"]["message"]


def test_an_answer_holding_unicode_line_separators_streams_whole():
    from generation.streaming import sse_events

    text = "a\u2028b\x85c\u2029d\x1ce"
    event = json.dumps({"choices": [{"delta": {"content": text}}]}, ensure_ascii=False)
    body = f"data: {event}\r\n\r\ndata: [DONE]\n\n".encode()
    response = httpx.Response(200, stream=httpx.ByteStream(body))

    assert [e["choices"][0]["delta"]["content"] for e in sse_events(response)] == [text]


SERVE_THEN_REPORT = """
import sys, threading
from generation.engines import Served
from generation.server import serve_until_stopped, server_make

model = sys.argv[1]
server = server_make(host="127.0.0.1", port=0, resolve=lambda m: Served(m, m), engine="plain", memory_gb=8)
server.engines.warm(model)
[engine] = server.engines.engines.values()
engine.ready.wait(60)
print("serving", flush=True)
try:
    serve_until_stopped(server)  # SIGTERM: SystemExit, once the engines are stopped
finally:
    print("engines stopped:", engine.stopped, "left:", len(server.engines.engines), flush=True)
"""


@pytest.mark.slow
def test_a_terminated_generation_server_stops_its_engines_first(chat_model_dir):
    """SIGTERM (honcho, make demo's exit) stops the engines before the process goes: a vLLM engine is
    a process group of its own and was left running, holding its GiBs, when the server just died."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_THEN_REPORT, str(chat_model_dir)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout.readline().strip() == "serving"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)

    assert process.returncode == 0
    assert "engines stopped: True left: 0" in out
