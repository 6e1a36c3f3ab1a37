#!/usr/bin/env python
"""Django's command-line utility for prefloop."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:  # a setting the environment must give (SECRET_KEY, ...)
        sys.exit(f"prefloop: {exc}")


if __name__ == "__main__":
    main()
