from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from annotate.models import Comparison, Judgment
from config.authentication import token_expired
from config.parsers import JSONParser
from config.security import client_ip
from generation.models import Policy, Prompt


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico: the SVG one (its hashed name in production, so resolved per request)."""
    return redirect(static("favicon.svg"), permanent=True)


@login_required
def landing(request: HttpRequest) -> HttpResponse:
    """Where logging in leads (unless ``?next=`` says otherwise): staff to the dashboard, annotators
    to the judging page."""
    return redirect("training:dashboard" if request.user.is_staff else "annotate:queue")


@login_required
def home(request: HttpRequest) -> HttpResponse:
    counts = {
        "prompts": Prompt.objects.count(),
        "policies": Policy.objects.count(),
        "comparisons": Comparison.objects.count(),
        "judgments": Judgment.objects.count(),
        "mine": Judgment.objects.filter(annotator=request.user).count(),
    }
    return render(request, "home.html", {"counts": counts})


class ClientAddressThrottle(ScopedRateThrottle):
    """DRF's scoped throttle keyed on the address ``config.security.client_ip`` trusts (DRF's own reads
    a client-sent X-Forwarded-For whole when NUM_PROXIES is unset: rotating it escaped the limit)."""

    def get_ident(self, request: Request) -> str:
        return client_ip(request)


class TokenApi(ObtainAuthToken):
    """POST username and password, get the user's API token. A password check: throttled per client
    address (``token`` rate), and django-axes refuses a username and address locked out at /login/."""

    throttle_classes = [ClientAddressThrottle]
    throttle_scope = "token"
    parser_classes = [FormParser, MultiPartParser, JSONParser]  # ours: deep nesting is a 400

    def post(self, request: Request, *args, **kwargs) -> Response:
        """The user's token, a new one when theirs has expired (``PREFLOOP_TOKEN_DAYS``)."""
        try:
            serializer = self.get_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            user = serializer.validated_data["user"]
            token, _ = Token.objects.get_or_create(user=user)
            if token_expired(token):
                token.delete()
                token = Token.objects.create(user=user)
            return Response({"token": token.key})
        except ValidationError:
            if getattr(request, "axes_locked_out", False):  # set by django-axes' backend
                raise Throttled(
                    detail="too many failed logins for this user from here: try again later"
                ) from None
            raise


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """django-axes' lockout answer (AXES_LOCKOUT_CALLABLE): a page in the site's own style saying
    for how long and what to do (its default was unstyled text with neither); the API keeps its
    JSON (the token view words it)."""
    if request.path.startswith("/api/") and original_response is not None:
        return original_response
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    context = {"username": username, "failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes}
    return render(request, "registration/locked_out.html", context, status=429)
