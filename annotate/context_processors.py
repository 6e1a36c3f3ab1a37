from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from annotate.selectors import annotator_progress


def progress(request: HttpRequest) -> dict:
    """``progress`` (judged today, remaining) for the logged-in user, queried only when a page shows it."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"progress": SimpleLazyObject(lambda: annotator_progress(annotator=user))}
