"""The test suite's settings: the production configuration (DEBUG off), with the few things a test
client on plain http needs. Set in the environment, so the subprocesses tests start (manage.py
commands, the round worker's child, gunicorn) get the same."""

import os

for name, value in {
    "SECRET_KEY": "prefloop-test-suite-key-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
    "SECURE_SSL_REDIRECT": "0",
    "SESSION_COOKIE_SECURE": "0",
    "CSRF_COOKIE_SECURE": "0",
    "PREFLOOP_STATIC_MANIFEST": "0",
}.items():
    os.environ.setdefault(name, value)

from config.settings import *  # noqa: E402, F403
