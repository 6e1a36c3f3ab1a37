"""API tokens that end: ``PREFLOOP_TOKEN_DAYS`` after they were issued, and when their user's password
changes (DRF's tokens lasted for ever and survived a password change)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed


def token_expired(token: Token) -> bool:
    return token.created < timezone.now() - timedelta(days=settings.PREFLOOP_TOKEN_DAYS)


class ExpiringTokenAuthentication(TokenAuthentication):
    """``Authorization: Token KEY``, refused once the token is older than ``PREFLOOP_TOKEN_DAYS``."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            raise AuthenticationFailed(
                f"token expired (issued over {settings.PREFLOOP_TOKEN_DAYS} days ago): "
                "POST /api/auth/token/ for a new one"
            )
        return user, token


def tokens_revoke_on_password_change(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_save of the user model: a password set since the last save (``set_password`` keeps the raw
    one in ``_password`` until the save completes) ends every API token of that user."""
    if getattr(instance, "_password", None) is not None:
        Token.objects.filter(user=instance).delete()
