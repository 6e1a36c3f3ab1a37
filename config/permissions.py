"""Who may call an API view, decided before its body is read."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request


class StaffOnly:
    """A mixin for staff-only API views. DRF decides permissions after authentication, and session
    authentication's CSRF check reads ``request.POST``, which parses the whole body (a signed-in
    annotator's 50 MiB of JSON grew a worker by 1.2 GiB before the 403). Here a signed-in user who is
    not staff is refused first, from the session alone; everyone else goes the usual way."""

    permission_classes = [IsAdminUser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        user = getattr(request._request, "user", None)
        if user is not None and user.is_authenticated and not user.is_staff:
            raise PermissionDenied("staff only")
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
