"""Live answers, streamed, from an OpenAI-compatible chat server: a vLLM deployment
(``PREFLOOP_VLLM_URL``) for a policy it serves, else the generation server (``generation.server``,
``PREFLOOP_ARENA_URL``). Plain HTTP with httpx: the web process relays answers without loading a
model (no torch here)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from generation.backends import GenerationFailed, Messages, Sampling, StreamDelta

MODELS_TTL = 30.0  # seconds a server's list of models is trusted
_served: dict[str, tuple[float, dict[str, str]]] = {}


def _lines(response: httpx.Response) -> Iterator[str]:
    """The stream's lines, split at line feeds only: text decoded whole would also break at the
    separators Python counts as line ends (U+2028, U+0085, ...), which a model may write inside a
    JSON string sent unescaped."""
    pending = b""
    for chunk in response.iter_bytes():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream, up to ``[DONE]``."""
    for line in _lines(response):
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def _models(url: str) -> dict[str, str]:
    """What ``url`` serves: each served id and root (and its resolved path) → the id to ask for."""
    now = time.monotonic()
    cached = _served.get(url)
    if cached and now - cached[0] < MODELS_TTL:
        return cached[1]
    try:
        data = httpx.get(f"{url}/v1/models", timeout=5.0).raise_for_status().json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        data = []
    names: dict[str, str] = {}
    for model in data:
        for name in (model.get("id"), model.get("root")):
            if name:
                names[name] = names[str(Path(name).resolve())] = str(model["id"])
    _served[url] = (now, names)
    return names


def endpoint_for(location: str, *, vllm_url: str, fallback_url: str) -> tuple[str, str]:
    """(server URL, model name) that answers for ``location``: the vLLM deployment where it serves
    it, else the generation server (which loads registered policies by location)."""
    if vllm_url:
        names = _models(vllm_url)
        for key in (location, str(Path(location).resolve())):
            if key in names:
                return vllm_url, names[key]
    return fallback_url, location


def chat_stream(
    *,
    url: str,
    model: str,
    messages: Messages,
    sampling: Sampling,
    stop: threading.Event,
    timeout: float = 60.0,
) -> Iterator[StreamDelta]:
    """One answer to ``messages``, piece by piece; the last piece carries the finish reason (``stop``,
    ``length``, or ``cancelled`` when ``stop`` was set: the connection is closed, which ends the
    generation on the server). A server that is down, refuses or goes silent for ``timeout`` seconds
    raises GenerationFailed naming it."""
    request = {
        "model": model,
        "messages": messages,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    finish, tokens = None, None
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=request, timeout=httpx.Timeout(timeout, connect=5.0)
        ) as response:
            if response.status_code != 200:
                detail = response.read().decode("utf-8", "replace")[:300]
                raise GenerationFailed(
                    f"the server at {url} refused ({response.status_code}): {detail}",
                    public=f"the generation service refused the request ({response.status_code})",
                )
            for event in sse_events(response):
                if stop.is_set():
                    yield StreamDelta("", "cancelled", tokens)
                    return
                if event.get("usage"):
                    tokens = event["usage"].get("completion_tokens", tokens)
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        yield StreamDelta(text)
                    finish = choice.get("finish_reason") or finish
    except httpx.HTTPError as exc:
        public = (
            "the generation service did not answer in time"
            if isinstance(exc, httpx.TimeoutException)
            else "the generation service could not be reached"
        )
        raise GenerationFailed(
            f"no answer from the server at {url}: {type(exc).__name__}: {exc}", public=public
        ) from exc
    yield StreamDelta("", "cancelled" if stop.is_set() else finish or "stop", tokens)
