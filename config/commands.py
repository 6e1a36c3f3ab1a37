"""The base of every prefloop management command: domain errors become CommandError here, once.

A command parses its options and calls services; a ``DomainError`` (or an ``InvalidInput`` from the
Django-free layers: DPOConfig, Sampling, a bad line in a trainer's file) it lets through is shown as
the command's error message, with the exit status 1, instead of a traceback. Any other exception,
``ValueError`` included, is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from config.errors import DomainError
from config.invalid_input import InvalidInput


class Command(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        except InvalidInput as exc:
            raise CommandError(str(exc)) from exc

    def say(self, message: str) -> None:
        """One line to stdout, at once (long commands report as they go)."""
        self.stdout.write(message)
        self.stdout.flush()
