"""Fresh databases for the benchmarks: a new PostgreSQL database (the machine's server, trust auth)
or a new SQLite file, migrated. Not for tests (they have their own)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
BENCH_KEY = "benchmark-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789"
BENCH_STATIC = ROOT / "var" / "bench-static"


def fresh_database(kind: str, name: str = "prefloop_bench") -> str:
    """A DATABASE_URL for an empty, migrated database of ``kind`` (postgresql or sqlite)."""
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {name}")
        url = f"{POSTGRES}/{name}"
    elif kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='prefloop-bench-')}/{name}.sqlite3"
    else:
        raise ValueError(f"unknown database kind {kind!r}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=bench_env(url), check=True
    )
    return url


def static_collect() -> None:
    """``collectstatic`` into the benchmarks' own STATIC_ROOT, as ``make serve`` does before it starts:
    with DEBUG off every page names its static files through the manifest, and a missing or stale
    manifest makes each page a 500."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--clear", "-v0"],
        cwd=ROOT,
        env=bench_env("sqlite:///:memory:"),
        check=True,
    )


def bench_env(url: str, **extra: str) -> dict[str, str]:
    """The production environment (DEBUG off) on plain http, for a server and clients on one machine."""
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=BENCH_KEY,
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        PYTHONUNBUFFERED="1",
        STATIC_ROOT=str(BENCH_STATIC),
    )
    env.update(extra)
    return env
