"""Chat messages as prompts carry them: validation, canonical form and content hash.

A prompt is either a plain string or a list of ``{"role", "content"}`` messages ending with a user
turn (the model answers it). Both forms hash through the same canonical message list, so the string
``"hi"`` and ``[{"role": "user", "content": "hi"}]`` are the same prompt for de-duplication.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings

from config.limits import too_long

ROLES = ("system", "user", "assistant")


def messages_problem(messages: Any) -> str | None:
    """Why ``messages`` is not a valid prompt conversation, or None when it is."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    turns = settings.PREFLOOP_MAX_TURNS
    if len(messages) > turns:
        return f"the conversation has {len(messages)} messages; the limit is {turns} (PREFLOOP_MAX_TURNS)"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] must be an object with 'role' and 'content'"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"messages[{index}].role must be one of {', '.join(ROLES)} (got {role!r})"
        if not isinstance(content, str) or not content.strip():
            return f"messages[{index}].content must be a non-empty string"
        if "\x00" in content:
            return f"messages[{index}].content contains a NUL character, which databases cannot store"
        extra = set(message) - {"role", "content"}
        if extra:
            return f"messages[{index}] has unknown field(s): {', '.join(sorted(extra))}"
    if messages[-1]["role"] != "user":
        return "the last message must have role 'user' (it is what the model answers)"
    return too_long("prompt", "".join(m["content"] for m in messages), field="the conversation")


def messages_from_text(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def messages_hash(messages: list[dict[str, str]]) -> str:
    """SHA-256 of the canonical JSON of the conversation (roles and contents only)."""
    canonical = [{"role": m["role"], "content": m["content"]} for m in messages]
    payload = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
