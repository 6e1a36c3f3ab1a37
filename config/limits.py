"""Length caps on the texts people and files send (settings PREFLOOP_MAX_*_CHARS), checked where each
kind of text is validated: prompts (files, the API, conversations), responses (imported pairs),
rationales (judging)."""

from __future__ import annotations

from django.conf import settings

CAPS = {
    "prompt": "PREFLOOP_MAX_PROMPT_CHARS",
    "response": "PREFLOOP_MAX_RESPONSE_CHARS",
    "rationale": "PREFLOOP_MAX_RATIONALE_CHARS",
}


def too_long(kind: str, text: str, *, field: str) -> str | None:
    """Why ``text`` (a ``kind`` of text, given as ``field``) is over its cap, or None."""
    setting = CAPS[kind]
    limit = getattr(settings, setting)
    if len(text) > limit:
        return f"{field} is {len(text)} characters; the limit is {limit} ({setting})"
    return None
