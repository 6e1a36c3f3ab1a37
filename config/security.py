"""Who is asking (the client address the login throttle counts failures by) and how much they may send."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core import checks
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.errors import NotAllowed


def client_ip(request: HttpRequest) -> str:
    """The address of the client: REMOTE_ADDR, or behind ``PREFLOOP_PROXY_COUNT`` reverse proxies the
    address the outermost of them saw (that many entries from the right of X-Forwarded-For, so a
    client cannot pick its address by sending the header itself)."""
    proxies = settings.PREFLOOP_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR", "")
    if proxies <= 0:
        return remote
    forwarded = [
        part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


IMPORT_ROUTES = ("api:prompts-import", "api:preferences-import")  # the bodies that may be files


class RequestSizeLimitMiddleware:
    """Refuse a request body over its cap (uploads included, which Django's own
    DATA_UPLOAD_MAX_MEMORY_SIZE does not count) before anything reads it: 400 naming the limit. The
    import endpoints take ``PREFLOOP_MAX_UPLOAD_BYTES`` (50 MiB); every other request, the anonymous
    login and token endpoints among them, ``PREFLOOP_MAX_BODY_BYTES`` (2 MiB: a judgment, a prompt or
    a round at their caps fits many times over)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._imports: set[str] | None = None

    def _limit(self, path: str) -> tuple[int, str]:
        if self._imports is None:
            from django.urls import reverse

            self._imports = {reverse(name) for name in IMPORT_ROUTES}
        if path in self._imports:
            return settings.PREFLOOP_MAX_UPLOAD_BYTES, "PREFLOOP_MAX_UPLOAD_BYTES"
        return settings.PREFLOOP_MAX_BODY_BYTES, "PREFLOOP_MAX_BODY_BYTES"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit, setting = self._limit(request.path)
        if length > limit:
            detail = f"the request body is {length} bytes; the limit is {limit} ({setting})"
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "too_large", "detail": detail}, status=400)
            return HttpResponse(detail, status=400, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A staff page: anonymous visitors are sent to log in; a signed-in annotator gets a 403 page
    saying the page is for staff, with the site's links back (Django's ``staff_member_required``
    sent them to the admin's login page, as if they had to sign in again)."""

    @wraps(view)
    @login_required
    def staff_only(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise NotAllowed(
                f"{request.path} is for staff; you are signed in as {request.user.get_username()}"
            )
        return view(request, *args, **kwargs)

    return staff_only


@checks.register(checks.Tags.security, deploy=True)
def proxy_count_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Behind a proxy (X-Forwarded-Proto trusted) with PREFLOOP_PROXY_COUNT at 0, every client has the
    proxy's address: five wrong passwords from anyone lock a username out for everyone."""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and settings.PREFLOOP_PROXY_COUNT == 0:
        return [
            checks.Warning(
                "SECURE_PROXY_SSL_HEADER trusts a proxy in front, but PREFLOOP_PROXY_COUNT is 0: the login "
                "lockout and the token throttle would count every client as the proxy's one address.",
                hint="Set PREFLOOP_PROXY_COUNT=1 behind one reverse proxy (README, Deploying), or "
                "SECURE_PROXY_SSL_HEADER=0 with none.",
                id="prefloop.W001",
            )
        ]
    return []
