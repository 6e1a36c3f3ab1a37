"""The generation process's server: live answers for every registered policy, from the engines it
supervises (``generation.engines``: vLLM where it is built, else transformers' plain ``generate``).

It speaks the part of vLLM's OpenAI-compatible API that the arena uses, so the web relays a vLLM
deployment and this server the same way (``generation.streaming.chat_stream``):

- ``POST /v1/chat/completions``: ``model`` (a registered policy's adapter or location), ``messages``,
  ``temperature``, ``top_p``, ``max_tokens``, ``stream`` (server-sent events ending with ``[DONE]``;
  while the model's engine starts, a comment every few seconds keeps the stream alive; a failure after
  the stream began is an ``error`` event);
- ``POST /v1/warm``: ``model``: start its engine now (the arena warms its pools' policies), 202;
- ``GET /v1/models``: the models that answer at once, and each engine's state; ``GET /health``.

Only ids ``resolve`` knows start an engine, so a client cannot make it read an arbitrary path. A client
that goes away stops its answer at the next piece. It listens on localhost: the web process and the
arena runner are its clients, never a browser. ``manage.py generation_server`` runs it; the worker
supervisor (honcho in ``make serve``, ``make demo``) starts it beside the web server.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from generation.backends import Sampling
from generation.engines import Engine, EngineRefused, Engines, Served

logger = logging.getLogger("prefloop.generation_server")

MAX_BODY_BYTES = 4 * 1024 * 1024  # a request: a conversation within the prompt caps, and its settings
MAX_TOKENS = 4096  # the most one answer may ask for
KEEPALIVE_SECONDS = 5.0  # while an engine starts, a comment this often keeps the client waiting
RequestError = EngineRefused


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


def handler_for(engines: Engines, slots: threading.BoundedSemaphore) -> type[BaseHTTPRequestHandler]:
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
                models = [{"id": m, "object": "model"} for m in engines.ready_models()]
                self._json(200, {"object": "list", "data": models, "engines": engines.status()})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise RequestError(413, f"the request is {length} bytes; the most is {MAX_BODY_BYTES}")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError as exc:
                raise RequestError(400, f"the body is not JSON: {exc}") from exc
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise RequestError(400, "the body must be an object naming its model")
            return body

        def do_POST(self) -> None:
            if self.path not in ("/v1/chat/completions", "/v1/warm"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = self._body()
                if self.path == "/v1/warm":
                    self._json(202, {"model": body["model"], "status": engines.warm(body["model"])})
                    return
                messages, sampling = _messages(body), _sampling(body)
                if not slots.acquire(blocking=False):
                    raise RequestError(503, "every generation slot is busy; try again in a moment")
                try:
                    engine, served = engines.acquire(body["model"])
                    try:
                        if body.get("stream"):
                            self._stream(engine, served, messages, sampling)
                        else:
                            self._whole(engine, served, messages, sampling)
                    finally:
                        engines.release(engine)
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
            self, engine: Engine, served: Served, messages: list[dict[str, str]], sampling: Sampling
        ) -> None:
            stop = threading.Event()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                self.wfile.write(self._chunk(served.id, {"role": "assistant", "content": ""}, None))
                self.wfile.flush()
                waited = 0.0
                while not engine.ready.wait(KEEPALIVE_SECONDS):  # the engine starts: keep the client waiting
                    waited += KEEPALIVE_SECONDS
                    if waited > engines.start_timeout:
                        break
                    self.wfile.write(b": the engine is starting\n\n")
                    self.wfile.flush()
                try:
                    model = self._ready_model(engine, served)
                    for piece in engine.stream(model, messages, sampling, stop):
                        if piece.finish_reason is None:
                            self.wfile.write(self._chunk(served.id, {"content": piece.text}, None))
                        else:
                            usage = {"completion_tokens": piece.tokens}
                            self.wfile.write(self._chunk(served.id, {}, piece.finish_reason, usage=usage))
                            self.wfile.write(b"data: [DONE]\n\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    raise
                except Exception as exc:  # after the stream began, a failure is an event
                    logger.warning("answer for %s failed: %s", served.id, exc)
                    error = {"error": {"message": str(exc)}}
                    self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client left: stop at the next piece
                stop.set()

        def _ready_model(self, engine: Engine, served: Served) -> str:
            if not engine.ready.is_set():
                raise RequestError(
                    503, f"the engine for {served.id} did not start in {engines.start_timeout:.0f} s"
                )
            if engine.error:
                raise RequestError(503, engine.error)
            return engine.model_for(served)

        def _whole(
            self, engine: Engine, served: Served, messages: list[dict[str, str]], sampling: Sampling
        ) -> None:
            engine.ready.wait(engines.start_timeout)
            model = self._ready_model(engine, served)
            text, finish, tokens = [], "stop", 0
            for piece in engine.stream(model, messages, sampling, threading.Event()):
                text.append(piece.text)
                if piece.finish_reason is not None:
                    finish, tokens = piece.finish_reason, piece.tokens or 0
            message = {"role": "assistant", "content": "".join(text)}
            self._json(
                200,
                {
                    "object": "chat.completion",
                    "model": served.id,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"completion_tokens": tokens},
                },
            )

    return Handler


def serve_until_stopped(server: ThreadingHTTPServer) -> None:
    """Serve until Ctrl-C or SIGTERM (honcho, ``make demo``'s exit, a process manager), then stop every
    engine: a vLLM engine is a process group of its own and would otherwise outlive the server,
    holding its memory (GiBs) with nothing to stop it."""
    import signal

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        server.engines.close()  # type: ignore[attr-defined]


def server_make(
    *,
    host: str,
    port: int,
    resolve: Callable[[str], Served | None],
    engine: str = "auto",
    memory_gb: float,
    concurrency: int = 64,
    **options: Any,
) -> ThreadingHTTPServer:
    """The server, bound and ready for ``serve_forever`` (port 0: a free one, in ``server_address``);
    its engines are ``server.engines`` (``close()`` them when done)."""
    engines = Engines(resolve, kind=engine, memory_gb=memory_gb, **options)
    server = ThreadingHTTPServer((host, port), handler_for(engines, threading.BoundedSemaphore(concurrency)))
    server.daemon_threads = True
    server.engines = engines  # type: ignore[attr-defined]
    return server
