"""One web process's watch over the arena turns its streams relay (the asynchronous path, ASGI).

However many streams a process holds, it reads their turns in one query every ``RELAY_SECONDS`` and
hands each stream its turn's row: 200 open streams cost one query a quarter second, not 800, and no
thread waits between reads (the query itself runs in a worker thread, as every database call from
async code does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

from annotate.models import ArenaTurn

T = TypeVar("T")

RELAY_SECONDS = 0.25  # how often the turns are read
READ_LATE = 5.0  # a stream that has had no read for this long restarts the reader if it ended

logger = logging.getLogger("prefloop.arena")
FIELDS = ("id", "status", "attempt", "text_a", "text_b", "claimed_at", "requested_at", "heartbeat_at")


def turn_row(pk: int) -> dict[str, Any] | None:
    """What a stream needs of one turn (the synchronous path reads it so, once per step)."""
    return ArenaTurn.objects.filter(pk=pk).values(*FIELDS).first()


def closing(work: Callable[..., T]) -> Callable[..., T]:
    """``work`` for a worker thread that is no request's (``sync_to_async``): the database connection
    it took goes back (to the pool, under ASGI) when it is done, not when the thread ends."""

    def run(*args: Any) -> T:
        try:
            return work(*args)
        finally:
            connection.close()

    return run


@closing
def _rows(ids: list[int]) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in ArenaTurn.objects.filter(pk__in=ids).values(*FIELDS)}


class TurnWatch:
    """The streams of one event loop, by turn: each gets every read of its turn (None once gone)."""

    def __init__(self) -> None:
        self.waiting: dict[int, set[asyncio.Queue]] = {}
        self.reader: asyncio.Task | None = None

    async def rows(self, pk: int) -> AsyncIterator[dict[str, Any] | None]:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        self.waiting.setdefault(pk, set()).add(queue)
        try:
            while True:
                if self.reader is None or self.reader.done():
                    self.reader = asyncio.create_task(self._read())
                try:
                    row = await asyncio.wait_for(queue.get(), timeout=READ_LATE)
                except TimeoutError:  # no read for a while: the reader is started again if it ended
                    continue
                yield row
        finally:
            streams = self.waiting.get(pk, set())
            streams.discard(queue)
            if not streams:
                self.waiting.pop(pk, None)

    async def _read(self) -> None:
        read = sync_to_async(_rows, thread_sensitive=False)
        while self.waiting:
            asked = list(self.waiting)
            try:
                rows = await read(asked)
            except Exception:  # the database away or locked a moment: every stream waits for the next read
                logger.warning("reading arena turns %s for their streams failed", asked, exc_info=True)
                await asyncio.sleep(RELAY_SECONDS)
                continue
            for pk in asked:  # a stream that joined during the read waits for the next one
                for queue in list(self.waiting.get(pk, ())):
                    if queue.full():  # a slow stream sees the latest row, not a backlog
                        queue.get_nowait()
                    queue.put_nowait(rows.get(pk))
            await asyncio.sleep(RELAY_SECONDS)


_watches: dict[asyncio.AbstractEventLoop, TurnWatch] = {}


def turn_watch() -> TurnWatch:
    """This event loop's watch (one per process under uvicorn's workers)."""
    loop = asyncio.get_running_loop()
    if loop not in _watches:
        _watches[loop] = TurnWatch()
    return _watches[loop]
