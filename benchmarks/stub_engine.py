"""A stub OpenAI-compatible chat engine for the web-tier benchmarks: every answer streams
``STUB_TOKENS`` pieces at ``STUB_RATE`` pieces a second after ``STUB_TTFT`` seconds, whatever is asked,
so a benchmark measures the web path (runner, database, relay, pages), not a model. An ASGI app:

    STUB_TOKENS=64 STUB_RATE=30 .venv/bin/uvicorn benchmarks.stub_engine:app --port 8811
"""

from __future__ import annotations

import asyncio
import json
import os

TOKENS = int(os.environ.get("STUB_TOKENS", "64"))
RATE = float(os.environ.get("STUB_RATE", "30"))
TTFT = float(os.environ.get("STUB_TTFT", "0.05"))


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/v1/models":
        await _json(send, {"object": "list", "data": []})
        return
    if path != "/v1/chat/completions":
        await _json(send, {"error": {"message": f"no route {path}"}}, status=404)
        return
    request = json.loads(await _body(receive) or b"{}")
    tokens = min(TOKENS, int(request.get("max_tokens") or TOKENS))
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    await asyncio.sleep(TTFT)
    for i in range(tokens):
        event = {"choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
        await send(
            {
                "type": "http.response.body",
                "body": f"data: {json.dumps(event)}\n\n".encode(),
                "more_body": True,
            }
        )
        await asyncio.sleep(1 / RATE)
    end = {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        "usage": {"completion_tokens": tokens},
    }
    tail = f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode()
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _json(send, body: dict, status: int = 200) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
