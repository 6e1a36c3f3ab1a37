"""Domain error kinds and their one mapping to HTTP.

Services raise these; nothing else in the project turns an error into a status code. DRF reaches
them through ``api_exception_handler`` (EXCEPTION_HANDLER), HTML and htmx views through
``DomainErrorMiddleware``. Any other exception is a bug and becomes a 500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.exceptions import APIException, AuthenticationFailed, NotAuthenticated
from rest_framework.response import Response
from rest_framework.views import exception_handler


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


# DRF's own errors (authentication, permissions, validation, methods, throttling) get our kinds' codes.
_API_CODES = {400: Invalid.code, 403: NotAllowed.code, 404: NotFound.code, 409: Conflict.code}


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """DRF's nested error detail as ``field: message`` lines."""
    if isinstance(detail, dict):
        return [line for key, value in detail.items() for line in _flatten(value, f"{prefix}{key}: ")]
    if isinstance(detail, list):
        return [line for value in detail for line in _flatten(value, prefix)]
    return [f"{prefix}{detail}"]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error as ``{"error": code, "detail": text}`` (validation errors add ``fields``)."""
    if isinstance(exc, Http404):  # a generic view's lookup: the same shape and code as NotFound
        exc = NotFound(str(exc) or "not found")
    exc = unstorable(exc) or exc
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status)
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, APIException):
        return response
    body: dict[str, Any] = {
        "error": exc.default_code
        if isinstance(exc, NotAuthenticated | AuthenticationFailed)
        else _API_CODES.get(response.status_code, exc.default_code),
        "detail": "; ".join(_flatten(exc.detail)),
    }
    if isinstance(exc.detail, dict):
        body["fields"] = response.data
    response.data = body
    return response


class DomainErrorMiddleware:
    """Renders a DomainError raised by an HTML view as ``_error.html`` with its status.

    htmx requests get the fragment alone (base.html lets 4xx responses swap), full requests the page.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, Http404):
            exc = NotFound(str(exc) or f"no page at {request.path}")
        exc = unstorable(exc) or exc
        if not isinstance(exc, DomainError):
            return None
        template = "_error.html" if getattr(request, "htmx", False) else "error.html"
        return render(request, template, {"error": exc}, status=exc.status)


def object_or_404(queryset: Any, *, error: type[NotFound] = NotFound, what: str = "", **lookup: Any) -> Any:
    """The one object ``queryset`` (a model or a queryset) holds for ``lookup``; else ``error``, which
    the one mapping above turns into a 404 with its code (never Django's bare 404 page)."""
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


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a URL no route matches, answered like every other NotFound (JSON under /api/)."""
    error = NotFound(f"no page at {request.path}")
    if request.path.startswith("/api/"):
        return JsonResponse(error.as_dict(), status=error.status)
    return render(request, "error.html", {"error": error}, status=error.status)
