"""Background tasks (Django's Tasks framework, as backported by django-tasks; the database backend
from django-tasks-db runs them in ``manage.py db_worker``, never inside a web request), and
``round_start``, which creates a round and enqueues its task in one transaction.

Imports run one way: tasks → rounds → options (the round itself runs in ``manage.py run_round``:
``execution.round_execute``); nothing imports tasks back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django_tasks import task

from training.errors import RoundFinished
from training.models import TrainingRound
from training.rounds import RoundRequest, round_abandon, round_create, rounds_reap_stale


def _die_with_parent() -> None:
    """In the round's child, before it runs: on Linux, the kernel kills it when the worker dies (even
    by SIGKILL), so a dead worker never leaves a round training on its own. Elsewhere, a no-op."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@task()
def round_run_task(round_id: int) -> str:
    """Run one training round, follow-up included, in a child process (``manage.py run_round``): the
    model, the optimizer and the generation backend live and die with it, so a worker waiting for
    the next round holds no model (about 3 GB after a round on SmolLM2, when rounds ran in the
    worker itself). The round records how it went; a child that dies (killed, out of memory) leaves
    the round failed with its exit status. First, rounds whose worker died silently (SIGKILL, a lost
    machine) are ended (``rounds_reap_stale``). Returns the round's status."""
    rounds_reap_stale()
    child = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_round", str(round_id)],
        # Nothing is downloaded at run time: a policy registered by hub id loads from the local cache
        # (register_policy checked it is there) or fails naming it, never a download in a round.
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        check=False,
        preexec_fn=_die_with_parent,
    )
    training_round = TrainingRound.objects.get(pk=round_id)
    if child.returncode != 0:
        round_abandon(training_round=training_round, why=f"its process exited with status {child.returncode}")
        training_round.refresh_from_db()
    return training_round.status


def round_start(*, request: RoundRequest, started_by: AbstractBaseUser | None = None) -> TrainingRound:
    """Create a round (``round_create``'s checks) and enqueue it for a worker, in one transaction:
    the task row and the round land together. Rounds whose worker died silently are ended first
    (``rounds_reap_stale``): a start is a write, the pages that show rounds are not."""
    rounds_reap_stale()  # its own transactions: kept even if this request is refused
    with transaction.atomic():
        training_round = round_create(request=request, started_by=started_by)
        result = round_run_task.enqueue(round_id=training_round.pk)
        training_round.task_id = str(result.id)
        training_round.save(update_fields=["task_id"])
    return training_round


@transaction.atomic
def round_retry(
    *, training_round: TrainingRound, started_by: AbstractBaseUser | None = None
) -> TrainingRound:
    """A new queued round with the same starting policy, reference and settings as a failed or
    cancelled one (its partial output is left where it was; the new round writes its own)."""
    if not training_round.can_retry:
        raise RoundFinished(
            f"round {training_round.pk} is {training_round.status}: only a failed or cancelled round is retried",
            round=training_round.pk,
        )
    retried = round_start(request=RoundRequest.of(training_round), started_by=started_by)
    TrainingRound.objects.filter(pk=retried.pk).update(
        log=f"{timezone.now():%H:%M:%S} retry of round {training_round.pk}\n"
    )
    retried.refresh_from_db()
    return retried
