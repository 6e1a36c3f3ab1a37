"""Domain error kinds: what services raise when the caller can act on the problem.

Each kind carries the HTTP status it maps to, but nothing here speaks HTTP or imports DRF: services
and commands import these alone. ``config.http_errors`` is the one place they become responses (DRF's
EXCEPTION_HANDLER, a middleware for HTML and htmx views, handler404); commands turn them into
CommandError (``config.commands``). Any other exception is a bug and becomes a 500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError


class DomainError(Exception):
    """A problem the caller can act on; ``detail`` is shown to them as it is."""

    status = 400
    code = "error"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.context}


class Invalid(DomainError):
    status = 400
    code = "invalid"


class NotAllowed(DomainError):
    status = 403
    code = "not_allowed"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


def unstorable(exc: Exception) -> Invalid | None:
    """A value the database refused to store (a NUL character in text on PostgreSQL, a number out of
    its column's range) is the sender's problem: a 400, never a 500."""
    if isinstance(exc, DataError | OverflowError):
        return Invalid(
            f"a value cannot be stored: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
    return None


def object_or_404(queryset: Any, *, error: type[NotFound] = NotFound, what: str = "", **lookup: Any) -> Any:
    """The one object ``queryset`` (a model or a queryset) holds for ``lookup``; else ``error``, which
    ``config.http_errors`` turns into a 404 with its code (never Django's bare 404 page)."""
    manager = getattr(queryset, "_default_manager", None)
    rows = manager.all() if manager is not None else queryset
    try:
        found = rows.filter(**lookup).first()
    except (ValueError, TypeError, DjangoValidationError) as exc:  # "abc" for an integer id
        raise Invalid(f"not a valid {', '.join(lookup)}: {', '.join(map(repr, lookup.values()))}") from exc
    if found is None:
        name = what or rows.model._meta.verbose_name
        shown = ", ".join(f"{key} {value}" for key, value in lookup.items() if key != "annotator")
        raise error(
            f"no {name} with {shown}", **{key: str(value) for key, value in lookup.items() if key == "pk"}
        )
    return found
