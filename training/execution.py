"""A queued round, whole, as the worker's child process runs it (``manage.py run_round``).

The path of a round, in one direction:

1. ``rounds.round_create`` checks the request (the start form, the API, ``train_round``);
   ``tasks.round_start`` creates it and enqueues ``tasks.round_run_task`` in one transaction.
2. ``db_worker`` runs that task, which runs ``manage.py run_round`` in a child process: here.
3. ``round_training.round_train``: claim → export → train → register the new policy.
4. ``round_follow_up.round_follow_up``: its held-out answers and drift, its answers to the next train
   prompts, its blind evaluation against the parent.
"""

from __future__ import annotations

from collections.abc import Callable

from training.models import RoundStatus, TrainingRound
from training.recorder import Recorder
from training.round_follow_up import round_follow_up
from training.round_training import round_train


def round_execute(*, round_id: int, on_progress: Callable[[str], None] | None = None) -> TrainingRound:
    """Train and register (``round_train``), then, if it succeeded, the follow-up. What the task's
    child, ``train_round`` and ``run_loop`` call."""
    training_round = round_train(round_id=round_id, on_progress=on_progress)
    if training_round.status == RoundStatus.SUCCEEDED and training_round.following_up:
        round_follow_up(training_round, Recorder(training_round, echo=on_progress))
    return training_round
