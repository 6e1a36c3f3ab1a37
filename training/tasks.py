"""Background tasks (Django's Tasks framework, as backported by django-tasks; the database backend
from django-tasks-db runs them in ``manage.py db_worker``, never inside a web request), and
``round_start``, which creates a round and enqueues its task in one transaction.

Imports run one way: tasks → rounds → options (the round itself runs in ``manage.py run_round``:
evaluation → worker → rounds); nothing imports tasks back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_tasks import task

from generation.models import Policy
from training.models import TrainingRound
from training.rounds import round_abandon, round_create


@task()
def round_run_task(round_id: int) -> str:
    """Run one training round, follow-up included, in a child process (``manage.py run_round``): the
    model, the optimizer and the generation backend live and die with it, so a worker waiting for
    the next round holds no model (about 3 GB after a round on SmolLM2, when rounds ran in the
    worker itself). The round records how it went; a child that dies (killed, out of memory) leaves
    the round failed with its exit status. Returns the round's status."""
    child = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_round", str(round_id)],
        env=os.environ.copy(),
        check=False,
    )
    training_round = TrainingRound.objects.get(pk=round_id)
    if child.returncode != 0:
        round_abandon(training_round=training_round, why=f"its process exited with status {child.returncode}")
        training_round.refresh_from_db()
    return training_round.status


@transaction.atomic
def round_start(
    *,
    policy: Policy,
    reference: Policy | None = None,
    hyperparameters: dict[str, Any] | None = None,
    min_pairs: int | None = None,
    then_generate: int = 0,
    generation: dict[str, Any] | None = None,
    guards: dict[str, Any] | None = None,
    reference_mode: str = "",
    started_by: AbstractBaseUser | None = None,
) -> TrainingRound:
    """Create a round (``round_create``'s checks) and enqueue it for a worker, in one transaction:
    the task row and the round land together."""
    training_round = round_create(
        policy=policy,
        reference=reference,
        hyperparameters=hyperparameters,
        min_pairs=min_pairs,
        then_generate=then_generate,
        generation=generation,
        guards=guards,
        reference_mode=reference_mode,
        started_by=started_by,
    )
    result = round_run_task.enqueue(round_id=training_round.pk)
    training_round.task_id = str(result.id)
    training_round.save(update_fields=["task_id"])
    return training_round
