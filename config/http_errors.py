"""The one mapping of domain errors (``config.errors``) to HTTP: DRF's EXCEPTION_HANDLER for the API,
a middleware for HTML and htmx views, and handler404 for a URL no route matches. A value the database
cannot store is a 400 here too (``errors.unstorable``).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.exceptions import APIException, AuthenticationFailed, NotAuthenticated
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.errors import Conflict, DomainError, Invalid, NotAllowed, NotFound, unstorable

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


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a URL no route matches, answered like every other NotFound (JSON under /api/)."""
    error = NotFound(f"no page at {request.path}")
    if request.path.startswith("/api/"):
        return JsonResponse(error.as_dict(), status=error.status)
    return render(request, "error.html", {"error": error}, status=error.status)
