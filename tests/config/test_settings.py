"""The production configuration: what start-up refuses, what check --deploy says, the headers every
page carries, and login throttling."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.factories import ComparisonFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_KEY = "a-production-key-for-the-check-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG"


def production_env(**extra: str) -> dict[str, str]:
    """The environment of `make serve`: DEBUG off and nothing but what an operator sets."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "PREFLOOP_"))
    }
    env.pop("DEBUG", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the browser tests' setting, never a production one
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_start_up_stops_without_a_secret_key_and_says_what_to_set():
    env = production_env()
    env.pop("SECRET_KEY", None)
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr and "DEBUG=1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_debug_mode_runs_without_a_secret_key():
    env = production_env(DEBUG="1")
    env.pop("SECRET_KEY", None)
    assert manage("check", env=env).returncode == 0


@pytest.mark.slow
def test_check_deploy_is_clean_in_production():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "DEBUG",
        env=production_env(SECRET_KEY=PRODUCTION_KEY),  # the defaults: behind one TLS proxy, counted
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.slow
def test_check_deploy_warns_when_a_proxy_is_trusted_but_not_counted():
    env = production_env(SECRET_KEY=PRODUCTION_KEY, PREFLOOP_PROXY_COUNT="0")
    result = manage("check", "--deploy", env=env)
    assert "prefloop.W001" in result.stderr + result.stdout
    assert "PREFLOOP_PROXY_COUNT is 0" in result.stderr + result.stdout


@pytest.mark.slow
def test_production_defaults_turn_https_on_and_each_can_be_turned_off():
    show = (
        "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER)"
    )

    def shown(env):
        return manage("shell", "-c", show, env=env).stdout.strip().splitlines()[-1].split()

    assert shown(production_env(SECRET_KEY=PRODUCTION_KEY)) == [
        "True",
        "True",
        "True",
        "31536000",
        "('HTTP_X_FORWARDED_PROTO',",
        "'https')",
    ]
    assert shown(production_env(SECRET_KEY=PRODUCTION_KEY, SECURE_SSL_REDIRECT="0"))[:2] == ["False", "True"]
    assert shown(production_env(DEBUG="1")) == ["False", "False", "False", "0", "None"]


@pytest.mark.slow
def test_the_proxy_is_counted_wherever_it_is_trusted_by_default():
    def proxies(env):
        show = "from django.conf import settings as s; print(s.PREFLOOP_PROXY_COUNT)"
        return manage("shell", "-c", show, env=env).stdout.strip().splitlines()[-1]

    assert proxies(production_env(SECRET_KEY=PRODUCTION_KEY)) == "1"  # behind one TLS proxy
    assert proxies(production_env(SECRET_KEY=PRODUCTION_KEY, SECURE_PROXY_SSL_HEADER="0")) == "0"  # none
    assert proxies(production_env(DEBUG="1")) == "0"
    assert proxies(production_env(SECRET_KEY=PRODUCTION_KEY, PREFLOOP_PROXY_COUNT="2")) == "2"


INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["login", "home", "annotate:queue", "annotate:mine", "annotate:campaigns", "training:dashboard"]
)
def test_pages_carry_a_strict_csp_and_no_inline_script(client, name):
    ComparisonFactory()
    if name != "login":
        client.force_login(UserFactory(is_staff=True))
    response = client.get(reverse(name))
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    html = response.content.decode()
    assert not INLINE_SCRIPT.search(html), INLINE_SCRIPT.search(html)
    assert not INLINE_HANDLER.search(html), INLINE_HANDLER.search(html)
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def _fail_logins(client, url, username, times):
    for _ in range(times):
        client.post(url, {"username": username, "password": "wrong password"})


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_login_is_refused_after_five_failures_even_with_the_right_password(client, url):
    user = UserFactory(username="target", is_staff=True)
    user.set_password("the right one")
    user.save()
    _fail_logins(client, url, "target", 5)
    response = client.post(url, {"username": "target", "password": "the right one"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_lockout_is_per_username_and_address_and_a_success_resets_the_count(client):
    for name in ("target", "colleague"):
        user = UserFactory(username=name)
        user.set_password("the right one")
        user.save()
    _fail_logins(client, "/login/", "target", 4)
    assert client.post("/login/", {"username": "target", "password": "the right one"}).status_code == 302
    client.logout()
    _fail_logins(client, "/login/", "target", 4)  # the count started again after the success
    assert client.post("/login/", {"username": "target", "password": "the right one"}).status_code == 302
    client.logout()
    _fail_logins(client, "/login/", "target", 6)
    # Someone else from the same address (a shared office) still logs in.
    assert client.post("/login/", {"username": "colleague", "password": "the right one"}).status_code == 302


@pytest.mark.django_db
def test_the_lockout_page_is_styled_says_for_how_long_and_links_back(client):
    UserFactory(username="target")
    _fail_logins(client, "/login/", "target", 5)

    response = client.post("/login/", {"username": "target", "password": "still wrong"})

    html = response.content.decode()
    assert response.status_code == 429
    assert '<link rel="stylesheet"' in html  # the site's page, not axes' plain text
    assert "refused for 15 minutes" in html and "for <strong>target</strong>" in html
    assert (
        'href="/login/"' in html
        and "axes_reset_username target" in html
        and "DEBUG=1 .venv/bin/python" in html
    )


@pytest.mark.django_db
def test_the_token_endpoint_is_locked_out_too(api):
    user = UserFactory(username="target")
    user.set_password("the right one")
    user.save()
    statuses = [
        api.post("/api/auth/token/", {"username": "target", "password": "nope"}).status_code for _ in range(5)
    ]
    assert statuses == [400, 400, 400, 400, 429]  # the fifth failure locks the pair out
    response = api.post("/api/auth/token/", {"username": "target", "password": "the right one"})
    assert response.status_code == 429
    assert "too many failed logins" in response.json()["detail"]
    assert not Token.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_the_token_endpoint_is_throttled_per_address(api, settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    limit = int(rates["token"].split("/")[0])
    statuses = [
        api.post("/api/auth/token/", {"username": f"u{i}", "password": "x"}).status_code
        for i in range(limit + 1)
    ]
    assert statuses[:limit] == [400] * limit
    assert statuses[limit] == 429
    assert api.post("/api/auth/token/", {"username": "u", "password": "x"}).json()["error"] == "throttled"


@pytest.mark.django_db
@pytest.mark.parametrize("proxies", [0, 1])
def test_a_client_rotating_x_forwarded_for_is_still_throttled(api, settings, proxies):
    settings.PREFLOOP_PROXY_COUNT = proxies
    limit = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])
    statuses = [
        api.post(
            "/api/auth/token/",
            {"username": f"u{i}", "password": "x"},
            # the client's own entry first; one proxy appends the address it saw (the same each time)
            HTTP_X_FORWARDED_FOR=f"10.9.{i}.1" + (", 203.0.113.7" if proxies else ""),
        ).status_code
        for i in range(limit + 1)
    ]
    assert statuses[limit] == 429  # DRF alone keyed each request on its own forged header


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "6.6.6.6", "10.0.0.1"),  # no proxy: a client's own header is ignored
        (1, "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the address the proxy saw, not the claimed one
        (2, "6.6.6.6, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
        (1, "", "10.0.0.1"),
    ],
)
def test_the_client_address_counts_only_trusted_proxies(rf, settings, proxies, forwarded, expected):
    from config.security import client_ip

    settings.PREFLOOP_PROXY_COUNT = proxies
    request = rf.get("/login/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


@pytest.mark.django_db
def test_an_api_token_ends_with_a_password_change_and_after_its_days(api, settings):
    from datetime import timedelta

    from django.utils import timezone

    user = UserFactory(username="tok")
    user.set_password("first password")
    user.save()
    key = api.post("/api/auth/token/", {"username": "tok", "password": "first password"}).json()["token"]
    assert api.get("/api/judgments/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200

    user.set_password("second password")
    user.save()
    assert api.get("/api/judgments/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401  # revoked

    fresh = api.post("/api/auth/token/", {"username": "tok", "password": "second password"}).json()["token"]
    Token.objects.filter(key=fresh).update(
        created=timezone.now() - timedelta(days=settings.PREFLOOP_TOKEN_DAYS + 1)
    )
    expired = api.get("/api/judgments/", HTTP_AUTHORIZATION=f"Token {fresh}")
    assert expired.status_code == 401 and "token expired" in expired.json()["detail"]
    renewed = api.post("/api/auth/token/", {"username": "tok", "password": "second password"}).json()["token"]
    assert renewed != fresh
    assert api.get("/api/judgments/", HTTP_AUTHORIZATION=f"Token {renewed}").status_code == 200
    user.first_name = "unchanged password"
    user.save()
    assert api.get("/api/judgments/", HTTP_AUTHORIZATION=f"Token {renewed}").status_code == 200


@pytest.mark.parametrize("prepared", ["1", "0"])
def test_postgresql_connections_turn_jit_compilation_off(monkeypatch, prepared):
    """A statement estimated above PostgreSQL's JIT threshold is compiled on every run (a form of the
    queue's candidate query spent 40-80 ms per serve on it; docs/benchmarks.md, 2026-12-07): off,
    with prepared statements or not."""
    from config.settings import _database

    monkeypatch.setenv("DATABASE_URL", "postgres://someone@db.example:5432/prefloop")
    monkeypatch.setenv("PREFLOOP_DB_PREPARED", prepared)
    options = _database()["OPTIONS"]
    assert options["options"] == "-c jit=off"
    assert options.get("server_side_binding", False) is (prepared == "1")


@pytest.mark.django_db
def test_the_connection_in_use_has_jit_off():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite compiles nothing")
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


def test_asgi_workers_share_a_pool_of_postgresql_connections(monkeypatch):
    """Under ASGI each request has a thread of its own: connections come from a bounded pool, never
    one kept per thread (PostgreSQL ran out of them at 50 arena users)."""
    from config.settings import _database

    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("PREFLOOP_DB_POOL", "1")
    monkeypatch.setenv("PREFLOOP_DB_POOL_SIZE", "6")
    db = _database()

    assert db["CONN_MAX_AGE"] == 0 and db["OPTIONS"]["pool"]["max_size"] == 6
    assert db["OPTIONS"]["options"] == "-c jit=off"  # the rest kept


def test_gunicorns_asgi_workers_ask_for_the_pool(monkeypatch):
    import runpy

    monkeypatch.setenv("PREFLOOP_WEB_WORKER", "asgi")
    assert "PREFLOOP_DB_POOL" not in os.environ
    try:
        config = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))
        pooled = os.environ.get("PREFLOOP_DB_POOL")
    finally:
        os.environ.pop("PREFLOOP_DB_POOL", None)

    assert config["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert config["wsgi_app"] == "config.asgi:application" and pooled == "1"
