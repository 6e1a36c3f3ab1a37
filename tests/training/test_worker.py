"""A real worker process (manage.py db_worker) runs a round queued from the web."""

import subprocess
import sys
from pathlib import Path

import pytest
from django_tasks_db.models import DBTaskResult

from generation.models import Policy
from tests.training.test_rounds import judged_policy
from training.models import RoundStatus, TrainingRound
from training.rounds import RoundRequest
from training.tasks import round_start

ROOT = Path(__file__).resolve().parents[2]


def worker_batch(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A real `manage.py db_worker` that runs what is queued, then exits."""
    return subprocess.run(
        [sys.executable, "manage.py", "db_worker", "--batch", "--no-startup-delay", "--interval", "0.1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_db_worker_process_runs_a_queued_round(chat_model_dir, worker_environment):
    policy = judged_policy(chat_model_dir)
    queued = round_start(
        request=RoundRequest(
            policy=policy, hyperparameters={"lr": 1e-3, "batch_size": 2, "max_length": 64}, min_pairs=4
        )
    )
    assert TrainingRound.objects.get(pk=queued.pk).status == RoundStatus.QUEUED  # nothing ran in this process

    worker = worker_batch(worker_environment)

    assert worker.returncode == 0, worker.stderr
    finished = TrainingRound.objects.get(pk=queued.pk)
    assert finished.status == RoundStatus.SUCCEEDED, finished.log
    assert finished.metrics.count() == 2
    assert Policy.objects.get(parent=policy) == finished.output_policy
    task = DBTaskResult.objects.get(id=queued.task_id)
    assert task.status == "SUCCESSFUL" and task.return_value == "succeeded"
