"""Faults: a worker killed with SIGKILL in the middle of a round."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generation.models import Policy
from tests.factories import UserFactory
from tests.training.test_rounds import judged_policy
from tests.training.test_worker import worker_batch
from training.models import RoundStatus, TrainingRound
from training.rounds import RoundRequest
from training.tasks import round_start

ROOT = Path(__file__).resolve().parents[2]


def round_children(round_id: int) -> list[int]:
    """Pids of live `manage.py run_round <id>` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"run_round" in argv and str(round_id).encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for(condition, *, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_round_leaves_it_failed_with_nothing_registered_and_it_can_be_retried(
    chat_model_dir, worker_environment, settings, client
):
    policy = judged_policy(chat_model_dir)
    settings_used = {"lr": 1e-3, "batch_size": 2, "max_length": 64, "epochs": 1000, "max_steps": 400}
    queued = round_start(request=RoundRequest(policy=policy, hyperparameters=settings_used, min_pairs=4))
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--interval", "0.1", "--no-reload"],
        cwd=ROOT,
        env=worker_environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: queued.metrics.count() >= 3, seconds=180, what="training to be under way")
        children = round_children(queued.pk)
        assert children, "the round runs in a child process"
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its child must not train on by itself
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    wait_for(lambda: not round_children(queued.pk), seconds=10, what="the child to die with its worker")

    running = TrainingRound.objects.get(pk=queued.pk)
    assert running.status == RoundStatus.RUNNING  # nobody has noticed yet
    steps_done = running.metrics.count()
    assert steps_done < 400

    # The next look at the rounds shows it silent, and writes nothing (a GET never does).
    settings.PREFLOOP_ROUND_STALE_SECONDS = 1
    time.sleep(1.5)
    client.force_login(UserFactory(is_staff=True))
    page = client.get(f"/training/rounds/{queued.pk}/")
    assert page.status_code == 200 and "No word from its worker" in page.content.decode()
    assert client.get(f"/api/rounds/{queued.pk}/").json()["silent"] is True
    assert TrainingRound.objects.get(pk=queued.pk).status == RoundStatus.RUNNING

    # Cancel ends a silent round at once, with nothing registered.
    client.post(f"/training/rounds/{queued.pk}/cancel/")
    failed = TrainingRound.objects.get(pk=queued.pk)
    assert failed.status == RoundStatus.CANCELLED and "the worker stopped answering" in failed.log
    assert "Retry with the same settings" in client.get(f"/training/rounds/{queued.pk}/").content.decode()
    assert failed.output_policy is None and not Policy.objects.filter(parent=policy).exists()
    train_dir = Path(failed.output_dir) / "train"
    assert not (train_dir / "final").exists() and not (train_dir / "merged").exists()

    # Retried from the web: a new round with the same settings, which a worker then completes.
    response = client.post(f"/training/rounds/{queued.pk}/retry/")
    retried = TrainingRound.objects.exclude(pk=queued.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/training/rounds/{retried.pk}/"
    assert retried.status == RoundStatus.QUEUED and retried.policy == policy
    assert retried.hyperparameters == failed.hyperparameters
    assert f"retry of round {queued.pk}" in retried.log
    settings.PREFLOOP_ROUND_STALE_SECONDS = 600
    done = worker_batch(worker_environment)
    assert done.returncode == 0, done.stderr[-2000:]
    retried.refresh_from_db()
    assert retried.status == RoundStatus.SUCCEEDED, retried.log
    assert Policy.objects.get(parent=policy) == retried.output_policy


@pytest.mark.django_db
def test_only_rounds_silent_past_the_limit_are_reaped(settings):
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import PolicyFactory
    from training.rounds import rounds_reap_stale

    settings.PREFLOOP_ROUND_STALE_SECONDS = 600
    policy = PolicyFactory()
    now = timezone.now()
    old, fresh = now - timedelta(seconds=601), now - timedelta(seconds=30)

    def make(**values):
        return TrainingRound.objects.create(policy=policy, reference=policy, **values)

    dead = make(status=RoundStatus.RUNNING, started_at=old, heartbeat_at=old)
    alive = make(status=RoundStatus.RUNNING, started_at=old, heartbeat_at=fresh)
    queued = make(status=RoundStatus.QUEUED)
    dead_follow_up = make(
        status=RoundStatus.SUCCEEDED,
        output_policy=PolicyFactory(parent=policy),
        following_up=True,
        heartbeat_at=old,
        finished_at=old,
    )
    reaped = rounds_reap_stale(now=now)
    assert {r.pk for r in reaped} == {dead.pk, dead_follow_up.pk}
    statuses = dict(TrainingRound.objects.values_list("pk", "status"))
    assert statuses[dead.pk] == RoundStatus.FAILED
    assert statuses[alive.pk] == RoundStatus.RUNNING and statuses[queued.pk] == RoundStatus.QUEUED
    follow_up = TrainingRound.objects.get(pk=dead_follow_up.pk)
    assert follow_up.status == RoundStatus.SUCCEEDED and not follow_up.following_up  # its policy stands
    assert rounds_reap_stale(now=now) == []


@pytest.mark.django_db
def test_looking_at_a_silent_round_writes_nothing_and_the_next_start_ends_it(settings, client):
    from datetime import timedelta

    from django.utils import timezone

    from config.errors import DomainError
    from tests.factories import PolicyFactory
    from training.rounds import RoundRequest
    from training.tasks import round_start

    settings.PREFLOOP_ROUND_STALE_SECONDS = 600
    policy = PolicyFactory()
    old = timezone.now() - timedelta(seconds=601)
    silent = TrainingRound.objects.create(
        policy=policy, reference=policy, status=RoundStatus.RUNNING, started_at=old, heartbeat_at=old
    )
    alive = TrainingRound.objects.create(
        policy=policy,
        reference=policy,
        status=RoundStatus.RUNNING,
        started_at=old,
        heartbeat_at=timezone.now(),
    )
    client.force_login(UserFactory(is_staff=True))

    pages = [
        client.get("/training/"),
        client.get(f"/training/rounds/{silent.pk}/"),
        client.get(f"/training/rounds/{silent.pk}/live/"),
        client.get("/api/rounds/"),
        client.get(f"/api/rounds/{silent.pk}/"),
    ]

    assert [page.status_code for page in pages] == [200] * 5
    assert "No word from its worker" in pages[1].content.decode()
    assert "no word from its worker" in pages[0].content.decode()
    assert {r["id"]: r["silent"] for r in pages[3].json()["results"]} == {silent.pk: True, alive.pk: False}
    silent.refresh_from_db()
    assert silent.status == RoundStatus.RUNNING and silent.log == ""  # shown, not written
    with pytest.raises(DomainError):  # a start is a write: it ends the silent round first
        round_start(request=RoundRequest(policy=policy))
    silent.refresh_from_db()
    assert silent.status == RoundStatus.FAILED and "its worker stopped answering" in silent.error
    assert TrainingRound.objects.get(pk=alive.pk).status == RoundStatus.RUNNING
