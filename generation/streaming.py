"""Live answers, streamed, from an OpenAI-compatible chat server: a vLLM deployment
(``PREFLOOP_VLLM_URL``, one or several) that serves the policy, else the generation process
(``generation.server``, ``PREFLOOP_ARENA_URL``), whose engines answer for every registered policy.
Plain HTTP with httpx: the arena relays answers without loading a model (no torch here)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from generation.types import GenerationFailed, Messages, Sampling, StreamDelta

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


def models_listed(url: str, *, ttl: float = MODELS_TTL) -> dict[str, str]:
    """What ``url`` serves (read at most every ``ttl`` seconds): each served id and root (and its
    resolved path) → the id to ask for; empty where nothing answers."""
    now = time.monotonic()
    cached = _served.get(url)
    if cached and now - cached[0] < ttl:
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


def served_id(location: str, adapter: str = "") -> str:
    """The model id a policy is asked for by: its adapter where it has one, else its location (the
    generation server resolves either; a deployment serves it under that id or root)."""
    return adapter or location


def endpoint_for(model: str, *, vllm_urls: list[str], fallback_url: str) -> tuple[str, str]:
    """(server URL, model name) that answers for ``model`` (``served_id``): the first vLLM deployment
    that serves it, else the generation server (which answers for every registered policy)."""
    for url in vllm_urls:
        names = models_listed(url)
        for key in (model, str(Path(model).resolve())):
            if key in names:
                return url, names[key]
    return fallback_url, model


def chat_stream(
    *,
    url: str,
    model: str,
    messages: Messages,
    sampling: Sampling,
    stop: threading.Event,
    timeout: float = 60.0,
    extra: dict[str, Any] | None = None,
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
        **(extra or {}),
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
                if "error" in event:
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else error
                    raise GenerationFailed(
                        f"the server at {url} failed mid-answer: {message}",
                        public="the generation service failed mid-answer",
                    )
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
