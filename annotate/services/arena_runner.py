"""The arena runner: the process that writes the arena's live answers (``manage.py arena_runner``).

The web process only records what an annotator asked for (a turn, or a new attempt of one) and relays
what is stored; this loop takes waiting turns, oldest first, up to ``slots`` at a time; each turn's
two answers stream from their engines in threads of their own (HTTP only), and the loop stores all
of them every 0.2 s in one transaction (``arena.turns_tick``): one database connection, however
many turns. So a turn outlives the page that asked for it: a reload or a second tab re-attaches to the
same answers, a closed tab loses nothing, and no web thread waits on an engine. Turns a dead runner
left half-written, or that waited too long for a slot, are marked failed (``turns_abandon_dead``).
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections, connection

from annotate.services import arena

logger = logging.getLogger("prefloop.arena")

POLL_SECONDS = 0.1  # how often an idle runner looks for a waiting turn
SWEEP_SECONDS = 5.0  # how often it gives up turns nobody is writing
WARM_SECONDS = 30.0  # how often it asks the generation process to start the pools' engines


def arena_runner_run(*, slots: int, stop: threading.Event, poll: float = POLL_SECONDS) -> None:
    """Take and generate waiting turns until ``stop`` is set; at most ``slots`` at once (each is two
    streams on the engines, which batch them)."""
    try:
        _loop(slots=slots, stop=stop, poll=poll)
    finally:
        connection.close()  # this thread's own connection


def _warm_in_background() -> None:
    """The pools' engines warm from a thread of its own: a slow generation process never delays a
    turn."""

    def warm() -> None:
        try:
            arena.pools_warm()
        except Exception:
            logger.exception("arena runner: warming the pools' engines failed")
        finally:
            connection.close()

    threading.Thread(target=warm, name="arena warm", daemon=True).start()


def _loop(*, slots: int, stop: threading.Event, poll: float) -> None:
    runs: list[arena.TurnRun] = []
    swept = warmed = -WARM_SECONDS
    while not stop.is_set():
        close_old_connections()
        if time.monotonic() - warmed > WARM_SECONDS:
            warmed = time.monotonic()
            _warm_in_background()
        if time.monotonic() - swept > SWEEP_SECONDS:
            swept = time.monotonic()
            if given_up := arena.turns_abandon_dead():
                logger.warning("arena runner: %d turn(s) nobody was writing marked failed", given_up)
        while len(runs) < slots and (taken := arena.turn_next_claim()) is not None:
            runs.append(arena.TurnRun(taken))
        try:
            runs = arena.turns_tick(runs)
        except Exception:  # a database hiccup: logged, the turns go on at the next tick
            logger.exception("arena runner: a tick failed")
        stop.wait(arena.UPDATE_SECONDS if runs else poll)
    for run in runs:
        run.stop.set()
