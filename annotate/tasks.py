"""Background jobs of annotate (django-tasks; ``manage.py db_worker`` runs them, never a web request)."""

from __future__ import annotations

from django_tasks import task


@task()
def judge_run_task(run_id: int) -> str:
    """An AI judge judging a campaign (``ai_judges.judge_run_execute``); returns the run's status."""
    from annotate.services.ai_judges import judge_run_execute

    return judge_run_execute(run_id)
