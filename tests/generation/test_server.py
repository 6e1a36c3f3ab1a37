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
    assert [m["id"] for m in models] == [str(chat_model_dir)]  # loaded on first use


def test_a_multi_turn_conversation_is_answered_whole(generation_server, chat_model_dir):
    body = {
        "model": str(chat_model_dir),
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and now?"},
        ],
        "max_tokens": 4,
    }
    answer = httpx.post(f"{generation_server}/v1/chat/completions", json=body, timeout=60).json()
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert answer["usage"]["completion_tokens"] <= 4


def test_a_stop_ends_the_answer_as_cancelled(generation_server, chat_model_dir):
    stop = threading.Event()
    stop.set()
    pieces = list(
        chat_stream(
            url=generation_server,
            model=str(chat_model_dir),
            messages=[{"role": "user", "content": "hello"}],
            sampling=Sampling(samples=1, max_new_tokens=64),
            stop=stop,
        )
    )
    assert pieces[-1].finish_reason == "cancelled"


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


def test_a_policy_goes_to_the_vllm_deployment_only_where_it_serves_it(generation_server, chat_model_dir):
    # the generation server lists what it has loaded, as vLLM lists what it serves
    httpx.post(
        f"{generation_server}/v1/chat/completions",
        json={"model": str(chat_model_dir), "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
        timeout=60,
    )
    assert endpoint_for(str(chat_model_dir), vllm_url=generation_server, fallback_url="http://fallback") == (
        generation_server,
        str(chat_model_dir),
    )
    assert endpoint_for("/other/model", vllm_url=generation_server, fallback_url="http://fallback") == (
        "http://fallback",
        "/other/model",
    )
    assert endpoint_for("/other/model", vllm_url="", fallback_url="http://fallback")[0] == "http://fallback"


def test_answers_decoded_together_match_each_answer_decoded_alone(chat_model_dir):
    """Continuous batching: rows join at different lengths (left-padded), each with its own position;
    greedy answers come out as they do alone, and a row that ends leaves the others running."""
    from generation.backends import ModelSpec
    from generation.backends.transformers import TransformersBackend
    from generation.batching import LiveBatcher

    batcher = LiveBatcher(TransformersBackend(ModelSpec(str(chat_model_dir))))
    greedy = Sampling(samples=1, temperature=0.0, max_new_tokens=12)
    prompts = [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "a much longer question about many different things at once"}],
        [{"role": "user", "content": "medium length question here"}],
    ]

    def answer(messages, sampling=greedy):
        return "".join(p.text for p in batcher.stream(messages, sampling, threading.Event()))

    alone = [answer(m) for m in prompts]
    together: dict[int, str] = {}
    short = Sampling(samples=1, temperature=0.0, max_new_tokens=3)
    threads = [
        threading.Thread(target=lambda i=i: together.__setitem__(i, answer(prompts[i]))) for i in range(3)
    ]
    threads.append(threading.Thread(target=lambda: together.__setitem__(3, answer(prompts[0], short))))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batcher.close()

    assert batcher.widest >= 3  # they did decode together
    assert [together[i] for i in range(3)] == alone
    assert alone[0].startswith(together[3])  # the short one ended early; the rest went on


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", "nan"), ("temperature", "inf"), ("temperature", -1), ("top_p", 0)]
)
def test_sampling_settings_out_of_range_are_refused_before_they_reach_a_batch(
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
