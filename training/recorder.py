"""What a round's worker tells the round as it goes: log lines (the tail is kept on the round), each
step's metrics, the heartbeat that shows it is alive, and whether staff asked it to stop. Training
(``round_training``) and the follow-up (``round_follow_up``) both report through one ``Recorder``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from generation.services import TokenMeter
from training.errors import RoundCancelled
from training.models import RoundMetric, TrainingRound

logger = logging.getLogger("prefloop.rounds")

LOG_LINES = 200  # the tail kept on the round
NOTE_SECONDS = 5.0  # long phases (reference pass, generation) report at least this often


class Recorder:
    """What the worker tells the round: log lines (the tail is kept), step metrics, the heartbeat,
    and whether staff asked it to stop. Each write is its own short transaction."""

    def __init__(self, training_round: TrainingRound, echo: Callable[[str], None] | None = None) -> None:
        self.round = training_round
        self.lines = training_round.log.splitlines()
        self.echo = echo
        self._noted = 0.0

    def log(self, message: str) -> None:
        if self.echo is not None:
            self.echo(message)
        else:  # in a worker: its console shows the round's progress
            logger.info("round %s: %s", self.round.pk, message)
        self.lines.append(f"{timezone.now():%H:%M:%S} {message}")
        self.lines = self.lines[-LOG_LINES:]
        self.update(log="\n".join(self.lines) + "\n")

    def update(self, **values: Any) -> None:
        TrainingRound.objects.filter(pk=self.round.pk).update(heartbeat_at=timezone.now(), **values)
        for name, value in values.items():
            setattr(self.round, name, value)

    def check_cancelled(self) -> None:
        if TrainingRound.objects.filter(pk=self.round.pk, cancel_requested=True).exists():
            raise RoundCancelled()

    def metrics(self, values: dict[str, float]) -> None:
        step = int(values["step"])
        RoundMetric.objects.update_or_create(round=self.round, step=step, defaults={"values": values})
        total = self.round.steps_total or "?"
        shown = [f"loss {values['loss']:.4f}"]  # KTO logs no accuracy, SFT neither nor a margin
        shown += [f"{label} {values[name]:.4f}" for name, label in LOGGED if name in values]
        self.log(f"step {step}/{total} " + " ".join(shown))
        self.check_cancelled()

    def note(self, message: str) -> None:
        """A log line that may come very often (a reference pass, batch by batch): kept at most every
        ``NOTE_SECONDS``, so the round shows life without a write per batch."""
        now = time.monotonic()
        if now - self._noted >= NOTE_SECONDS:
            self._noted = now
            self.log(message)

    def meter(self, what: str) -> TokenMeter:
        """An ``on_tokens`` for generation: logs tokens and tokens/s every ``NOTE_SECONDS`` and stops
        the generation (RoundCancelled) if staff cancelled meanwhile."""

        def report(tokens: int, rate: float) -> None:
            self.log(f"{what}: {tokens} tokens, {rate:.0f} tokens/s")
            self.check_cancelled()

        return TokenMeter(report, every=NOTE_SECONDS)

    def progress(self, total: int, what: str) -> Callable[[int, int], None]:
        """An ``on_progress(prompts, tokens)`` for generation that logs ``done/total what``."""
        done = 0

        def progress(batch_prompts: int, tokens: int) -> None:
            nonlocal done
            done += batch_prompts
            self.log(f"{done}/{total} {what}")

        return progress


# what a round's log line shows of each step, where the loss logs it
LOGGED = (("rewards/accuracies", "accuracy"), ("rewards/margins", "margin"), ("kl", "kl"))
