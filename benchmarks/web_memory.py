"""A web process's memory: peak RSS after loading every route (config.urls) and serving the judging
page and the dashboard once, as a gunicorn/runserver worker would. Prints the figure and the command.

    python benchmarks/web_memory.py
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")
os.environ.setdefault("DEBUG", "1")  # a local measurement: no SECRET_KEY needed


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    import config.urls  # noqa: F401  every page and API view

    setup_test_environment()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create(username="staff", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    for url in ("/annotate/", "/training/"):
        assert client.get(url).status_code == 200, url
    heavy = sorted(m for m in ("torch", "transformers", "peft", "trl") if m in sys.modules)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("$ python benchmarks/web_memory.py")
    print(
        f"web process after loading every route and two pages: peak RSS {peak_mib:.0f} MiB; "
        f"heavy modules loaded: {', '.join(heavy) or 'none'}"
    )


if __name__ == "__main__":
    main()
