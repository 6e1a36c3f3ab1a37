"""Who is asking: the client address the login throttle counts failures by."""

from django.conf import settings
from django.http import HttpRequest


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
