"""Background tasks (Django's Tasks framework, as backported by django-tasks; the database backend
from django-tasks-db runs them in ``manage.py db_worker``, never inside a web request)."""

from __future__ import annotations

from django_tasks import task

from training.services import round_run


@task()
def round_run_task(round_id: int) -> str:
    """Run one training round; the round itself records how it went. Returns its final status."""
    return round_run(round_id=round_id).status
