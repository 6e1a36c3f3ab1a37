"""Faults under load: the web server killed and restarted, and PostgreSQL restarted, while annotators
judge over the API. Nothing acknowledged is lost, nothing is corrupted, and service resumes."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.models import Count, F
from rest_framework.authtoken.models import Token

from annotate.models import Comparison, Judgment
from tests.config.test_serve import free_port
from tests.config.test_settings import PRODUCTION_KEY, ROOT, production_env
from tests.factories import CampaignFactory, ComparisonFactory, UserFactory

ANNOTATORS = 6


def start_server(env: dict[str, str]) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "config/gunicorn.py", "config.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killed whole, master and workers
    )
    base = f"http://{env['PREFLOOP_BIND']}"
    for _ in range(150):
        try:
            requests.get(base + "/login/", timeout=10)
            return server
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start")


class Annotators:
    """Threads judging over the API as fast as they can; they keep going through errors (the server
    down, the database restarting) and record every judgment the server acknowledged (201)."""

    def __init__(self, base: str, tokens: list[str]) -> None:
        self.base, self.tokens = base, tokens
        self.acknowledged: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.judge, args=(token,)) for token in tokens]

    def judge(self, token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        while not self.stop.is_set():
            try:
                served = session.post(f"{self.base}/api/comparisons/next/", timeout=10)
                if served.status_code == 204:
                    return
                if served.status_code != 200:
                    self.errors.append(f"next {served.status_code}")
                    time.sleep(0.1)
                    continue
                comparison = served.json()["comparison"]
                submit = session.post(
                    f"{self.base}/api/judgments/",
                    json={"comparison": comparison, "verdict": "left"},
                    timeout=10,
                )
                if submit.status_code == 201:
                    self.acknowledged.append((token, comparison))
                else:
                    self.errors.append(f"submit {submit.status_code}")
            except requests.RequestException as exc:
                self.errors.append(type(exc).__name__)
                time.sleep(0.1)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def wait_for(self, count: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} judgments acknowledged"
            time.sleep(0.05)


@pytest.fixture
def judging(worker_environment, tmp_path):
    """A campaign of comparisons, annotators with tokens, and the environment of a server on the
    test database."""
    campaign = CampaignFactory(name="faults", overlap=2, adjudicate=False)
    for _ in range(400):
        ComparisonFactory(campaign=campaign, overlap=2)
    tokens = [Token.objects.create(user=UserFactory()).key for _ in range(ANNOTATORS)]
    env = production_env(
        SECRET_KEY=PRODUCTION_KEY,
        DATABASE_URL=worker_environment["DATABASE_URL"],
        SECURE_SSL_REDIRECT="0",
        PREFLOOP_BIND=f"127.0.0.1:{free_port()}",
        PREFLOOP_ACCESS_LOG="",
        PREFLOOP_VAR_DIR=str(tmp_path),
        WEB_CONCURRENCY="2",
    )
    return env, tokens


def assert_consistent(acknowledged: list[tuple[str, int]]) -> None:
    connection.close()  # a fresh connection: the server may have been restarted under the old one
    keys = dict(Token.objects.values_list("key", "user__username"))
    stored = set(Judgment.objects.values_list("annotator__username", "comparison_id"))
    lost = {(keys[token], comparison) for token, comparison in acknowledged} - stored
    assert lost == set(), f"{len(lost)} acknowledged judgments are missing"
    assert not Comparison.objects.annotate(n=Count("judgments")).filter(n__gt=F("overlap")).exists()
    counted = Comparison.objects.annotate(n=Count("judgments")).exclude(n=F("judgment_count"))
    assert not counted.exists(), "a comparison's kept count differs from its judgments"


def kill_group(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass
    server.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_web_server_killed_and_restarted_mid_run_loses_no_acknowledged_judgment(judging):
    env, tokens = judging
    server = start_server(env)
    try:
        with Annotators(f"http://{env['PREFLOOP_BIND']}", tokens) as annotators:
            annotators.wait_for(40)
            kill_group(server)  # SIGKILL, master and workers: requests in flight die with them
            time.sleep(1)
            down = len(annotators.errors)
            server = start_server(env)
            annotators.wait_for(len(annotators.acknowledged) + 40)  # service resumed
        assert down > 0, "the clients noticed the server was down"
    finally:
        kill_group(server)
    assert_consistent(annotators.acknowledged)


def _postgres_restart() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql") or os.geteuid() != 0,
    reason="restarting PostgreSQL needs the machine's cluster and root",
)
def test_postgresql_restarted_mid_run_gives_errors_not_corrupt_data_and_service_resumes(judging):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (the suite's second run)")
    env, tokens = judging
    server = start_server(env)
    try:
        with Annotators(f"http://{env['PREFLOOP_BIND']}", tokens) as annotators:
            annotators.wait_for(40)
            _postgres_restart()  # fast shutdown: open transactions are rolled back
            errors_at_restart = len(annotators.errors)
            annotators.wait_for(len(annotators.acknowledged) + 40, seconds=90)  # service resumed
        assert errors_at_restart > 0 or annotators.errors, "the clients saw errors while it restarted"
        assert all(
            error.startswith(("next 5", "submit 5")) or error.isidentifier() for error in annotators.errors
        )
    finally:
        kill_group(server)
    assert_consistent(annotators.acknowledged)
