"""The arena runner: the process that writes the arena's live answers (``manage.py arena_runner``).

The web process only records what an annotator asked for (a turn, or a new attempt of one) and relays
what is stored; this loop takes waiting turns, oldest first, up to ``slots`` at a time, and runs each
in a thread of its own (``arena.turn_generate``: both answers from their engines, stored piece by
piece). So a turn outlives the page that asked for it: a reload or a second tab re-attaches to the
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


def _turn_run(turn_id: int) -> None:
    try:
        turn = arena.ArenaTurn.objects.select_related("conversation__policy_a", "conversation__policy_b").get(
            pk=turn_id
        )
        arena.turn_generate(turn=turn)
    except Exception:  # a thread's failure is logged, never lost; the sweep fails the turn later
        logger.exception("arena runner: turn %s", turn_id)
    finally:
        connection.close()  # each thread has its own connection: give it back


def arena_runner_run(*, slots: int, stop: threading.Event, poll: float = POLL_SECONDS) -> None:
    """Take and generate waiting turns until ``stop`` is set; at most ``slots`` at once (each is two
    streams on the engines, which batch them)."""
    try:
        _loop(slots=slots, stop=stop, poll=poll)
    finally:
        connection.close()  # this thread's own connection


def _loop(*, slots: int, stop: threading.Event, poll: float) -> None:
    running: dict[int, threading.Thread] = {}
    swept = 0.0
    while not stop.is_set():
        close_old_connections()
        for turn_id in [pk for pk, thread in running.items() if not thread.is_alive()]:
            del running[turn_id]
        if time.monotonic() - swept > SWEEP_SECONDS:
            swept = time.monotonic()
            if given_up := arena.turns_abandon_dead():
                logger.warning("arena runner: %d turn(s) nobody was writing marked failed", given_up)
        taken = arena.turn_next_claim() if len(running) < slots else None
        if taken is None:
            stop.wait(poll)
            continue
        thread = threading.Thread(target=_turn_run, args=(taken.pk,), daemon=True, name=f"turn-{taken.pk}")
        running[taken.pk] = thread
        thread.start()
    for thread in running.values():
        thread.join(timeout=10)
