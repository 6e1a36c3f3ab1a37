"""Background tasks (Django's Tasks framework, as backported by django-tasks; the database backend
from django-tasks-db runs them in ``manage.py db_worker``, never inside a web request), and
``round_start``, which creates a round and enqueues its task in one transaction.

Imports run one way: tasks → evaluation → worker → rounds → options; nothing imports tasks back.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_tasks import task

from generation.models import Policy
from training.evaluation import round_execute
from training.models import TrainingRound
from training.rounds import round_create


@task()
def round_run_task(round_id: int) -> str:
    """Run one training round, follow-up included; the round records how it went. Returns its status."""
    return round_execute(round_id=round_id).status


@transaction.atomic
def round_start(
    *,
    policy: Policy,
    reference: Policy | None = None,
    hyperparameters: dict[str, Any] | None = None,
    min_pairs: int | None = None,
    then_generate: int = 0,
    generation: dict[str, Any] | None = None,
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
        started_by=started_by,
    )
    result = round_run_task.enqueue(round_id=training_round.pk)
    training_round.task_id = str(result.id)
    training_round.save(update_fields=["task_id"])
    return training_round
