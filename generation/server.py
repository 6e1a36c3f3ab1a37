"""A long-running generation server for live answers (the arena) on the transformers backend.

It speaks the part of vLLM's OpenAI-compatible API that the arena uses, so the web relays a vLLM
deployment and this server the same way (``generation.streaming.chat_stream``):

- ``POST /v1/chat/completions``: ``model`` (a registered policy's location), ``messages``,
  ``temperature``, ``top_p``, ``max_tokens``, ``stream`` (server-sent events ending with ``[DONE]``);
- ``GET /v1/models``: the models loaded now; ``GET /health``.

Models load on first use and stay (at most ``capacity``, the least recently used dropped). Only
locations ``allowed`` accepts load, so a client cannot make it read an arbitrary path. A client that
goes away stops its generation at the next token. It listens on localhost: the web process is its
client, never a browser. ``manage.py generation_server`` runs it; the worker supervisor (honcho in
``make serve``, ``make demo``) starts it beside the web server.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from generation.backends import ModelSpec, Sampling

logger = logging.getLogger("prefloop.generation_server")

MAX_BODY_BYTES = 4 * 1024 * 1024  # a request: a conversation within the prompt caps, and its settings
MAX_TOKENS = 4096  # the most one answer may ask for


class RequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Models:
    """Loaded models by location, each behind its ``LiveBatcher`` (every live answer of a model decodes
    in one batch), at most ``capacity``; loading is serialised (one at a time)."""

    def __init__(self, allowed: Callable[[str], bool], capacity: int = 4) -> None:
        self.allowed, self.capacity = allowed, capacity
        self.loaded: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, location: str) -> Any:
        from generation.backends.transformers import TransformersBackend
        from generation.batching import LiveBatcher

        with self.lock:
            if location in self.loaded:
                self.loaded.move_to_end(location)
                return self.loaded[location]
            if not self.allowed(location):
                raise RequestError(404, f"model {location!r} is not a registered policy's location")
            batcher = LiveBatcher(TransformersBackend(ModelSpec(location)))
            self.loaded[location] = batcher
            while len(self.loaded) > self.capacity:
                self.loaded.popitem(last=False)[1].close()
            return batcher


def _sampling(body: dict[str, Any]) -> Sampling:
    try:
        max_tokens = int(body.get("max_tokens") or 256)
        sampling = Sampling(
            samples=1,
            temperature=float(body.get("temperature", 0.7)),
            top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=max_tokens,
        )
    except (TypeError, ValueError) as exc:
        raise RequestError(400, f"bad sampling settings: {exc}") from exc
    if max_tokens > MAX_TOKENS:
        raise RequestError(400, f"max_tokens is {max_tokens}; the most is {MAX_TOKENS}")
    # One request's NaN or infinity would poison the batch it decodes in (every answer of it ends).
    if not (math.isfinite(sampling.temperature) and 0 <= sampling.temperature <= 2):
        raise RequestError(400, f"temperature is {sampling.temperature}; it must be within [0, 2]")
    if not (math.isfinite(sampling.top_p) and 0 < sampling.top_p <= 1):
        raise RequestError(400, f"top_p is {sampling.top_p}; it must be within (0, 1]")
    return sampling


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def handler_for(models: Models, slots: threading.BoundedSemaphore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "prefloop-generation"

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(
                    200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models.loaded]}
                )
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    raise RequestError(413, f"the request is {length} bytes; the most is {MAX_BODY_BYTES}")
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError as exc:
                    raise RequestError(400, f"the body is not JSON: {exc}") from exc
                if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                    raise RequestError(400, "the body must be an object naming its model")
                messages, sampling = _messages(body), _sampling(body)
                if not slots.acquire(blocking=False):
                    raise RequestError(503, "every generation slot is busy; try again in a moment")
                try:
                    backend = models.get(body["model"])
                    if body.get("stream"):
                        self._stream(backend, body["model"], messages, sampling)
                    else:
                        self._whole(backend, body["model"], messages, sampling)
                finally:
                    slots.release()
            except RequestError as exc:
                self._json(exc.status, {"error": {"message": str(exc)}})

        def _chunk(self, model: str, delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            event = {
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()

        def _stream(
            self, backend: Any, model: str, messages: list[dict[str, str]], sampling: Sampling
        ) -> None:
            stop = threading.Event()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                self.wfile.write(self._chunk(model, {"role": "assistant", "content": ""}, None))
                self.wfile.flush()
                for piece in backend.stream(messages, sampling, stop):
                    if piece.finish_reason is None:
                        self.wfile.write(self._chunk(model, {"content": piece.text}, None))
                    else:
                        usage = {"completion_tokens": piece.tokens}
                        self.wfile.write(self._chunk(model, {}, piece.finish_reason, usage=usage))
                        self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client left: stop at the next token
                stop.set()

        def _whole(
            self, backend: Any, model: str, messages: list[dict[str, str]], sampling: Sampling
        ) -> None:
            text, finish, tokens = [], "stop", 0
            for piece in backend.stream(messages, sampling, threading.Event()):
                text.append(piece.text)
                if piece.finish_reason is not None:
                    finish, tokens = piece.finish_reason, piece.tokens or 0
            message = {"role": "assistant", "content": "".join(text)}
            self._json(
                200,
                {
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"completion_tokens": tokens},
                },
            )

    return Handler


def server_make(
    *, host: str, port: int, allowed: Callable[[str], bool], capacity: int = 4, concurrency: int = 8
) -> ThreadingHTTPServer:
    """The server, bound and ready for ``serve_forever`` (port 0: a free one, in ``server_address``)."""
    handler = handler_for(Models(allowed, capacity), threading.BoundedSemaphore(concurrency))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
