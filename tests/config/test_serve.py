"""`make serve`'s web process for real: gunicorn with config/gunicorn.py, DEBUG off, static files
through WhiteNoise after collectstatic, on its own SQLite database."""

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.config.test_settings import PRODUCTION_KEY, ROOT, manage, production_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path, request):
    """gunicorn as `make serve` runs it; ``asgi`` (indirect parameter): with uvicorn's workers."""
    port = free_port()
    env = production_env(
        SECRET_KEY=PRODUCTION_KEY,
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        STATIC_ROOT=str(tmp_path / "static"),
        PREFLOOP_VAR_DIR=str(tmp_path),
        PREFLOOP_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        PREFLOOP_WEB_WORKER=getattr(request, "param", "gthread"),
    )
    for args in (("migrate", "--noinput"), ("collectstatic", "--noinput")):
        result = manage(*args, env=env)
        assert result.returncode == 0, result.stderr
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen(
        [str(gunicorn), "-c", "config/gunicorn.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):  # until it answers (a loaded machine may take a while to boot the workers)
        try:
            requests.get(base + "/login/", timeout=5, allow_redirects=False)
            break
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    yield base
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


HTTPS = {"X-Forwarded-Proto": "https"}


@pytest.mark.slow
@pytest.mark.parametrize("served", ["gthread", "asgi"], indirect=True)
def test_gunicorn_serves_the_app_the_production_way(served):
    # Plain http is sent to https; behind the proxy (X-Forwarded-Proto) the page is served.
    plain = requests.get(served + "/login/", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    page = requests.get(served + "/login/", headers=HTTPS, timeout=10)
    assert page.status_code == 200
    assert "max-age=31536000" in page.headers["Strict-Transport-Security"]
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "csrftoken" in page.headers["Set-Cookie"] and "Secure" in page.headers["Set-Cookie"]

    # Static files: hashed names from the manifest, compressed, cached for good, from the web process.
    css = re.search(r'href="(/static/css/prefloop\.[0-9a-f]{12}\.css)"', page.text)
    assert css, "the page links the hashed stylesheet"
    static = requests.get(served + css.group(1), headers={**HTTPS, "Accept-Encoding": "gzip"}, timeout=10)
    assert static.status_code == 200
    assert static.headers["Content-Encoding"] == "gzip"
    assert "immutable" in static.headers["Cache-Control"]
    favicon = requests.get(served + "/favicon.ico", headers=HTTPS, allow_redirects=False, timeout=10)
    assert re.match(r"/static/favicon\.[0-9a-f]{12}\.svg", favicon.headers["Location"])


@pytest.mark.slow
def test_gunicorn_keeps_the_admin_and_api_behind_login(served):
    assert (
        requests.get(served + "/admin/", headers=HTTPS, allow_redirects=False, timeout=10).status_code == 302
    )
    api = requests.get(served + "/api/judgments/", headers=HTTPS, timeout=10)
    assert api.status_code in (401, 403) and api.json()["error"]
