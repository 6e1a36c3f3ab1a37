"""Scripted judges for simulated annotators: ``(prompt, first, second) -> "first" | "second" | "tie" |
"both_bad"``. Named ones live here; ``oracle_resolve`` also takes a dotted path to any function of that
shape, so a team can plug in its own judge (a rule, a classifier, a larger model)."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.utils.module_loading import import_string

from config.invalid_input import InvalidInput

Oracle = Callable[[str, str, str], str]

_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}|\b[A-Z]{2,3}\b")  # 4+ letters, or an acronym (DNA)
_STOPWORDS = {
    "what", "which", "when", "where", "explain", "write", "give", "name", "tell", "about", "please", "short",
    "sentence", "sentences", "three", "with", "that", "this", "there", "their", "your", "does", "into", "from",
    "have", "would", "could", "should", "make", "between", "difference",
    # the asking itself: "Describe X in a few words", "a quick summary of X", "X to a ten-year-old",
    # "to a friend", "Why does X matter?"
    "describe", "description", "summary", "summarise", "summarize", "quick", "brief", "briefly", "simple",
    "simply", "words", "friend", "matter", "ten-year-old", "five-year-old", "child", "someone",
}  # fmt: skip


def prefers_shorter(prompt: str, first: str, second: str) -> str:
    """The shorter answer wins (in characters, surrounding space ignored); equal lengths tie."""
    a, b = len(first.strip()), len(second.strip())
    return "tie" if a == b else "first" if a < b else "second"


def prefers_no_bullets(prompt: str, first: str, second: str) -> str:
    """An answer without bullet or numbered lists beats one with; otherwise the shorter wins."""
    a, b = bool(_BULLET.search(first)), bool(_BULLET.search(second))
    if a != b:
        return "second" if a else "first"
    return prefers_shorter(prompt, first, second)


def key_noun(prompt: str) -> str | None:
    """The prompt's key word: its longest word of 4+ letters (or acronym) that is not a word of the
    asking ("describe", "summary", "ten-year-old", ...), lower-cased, a possessive 's dropped."""
    words = [w.lower().removesuffix("'s") for w in _WORD.findall(prompt)]
    words = [w for w in words if w not in _STOPWORDS]
    return max(words, key=len) if words else None


def prefers_key_noun(prompt: str, first: str, second: str) -> str:
    """An answer that mentions the prompt's key word beats one that does not; both or neither tie."""
    noun = key_noun(prompt)
    if noun is None:
        return "tie"
    a, b = noun in first.lower(), noun in second.lower()
    return "tie" if a == b else "first" if a else "second"


def prefers_on_topic_shorter(prompt: str, first: str, second: str) -> str:
    """Mentioning the prompt's key word comes first; between answers alike in that, the shorter wins.
    Brevity alone is easy to game (a short answer about anything wins); this keeps it on topic."""
    verdict = prefers_key_noun(prompt, first, second)
    return verdict if verdict != "tie" else prefers_shorter(prompt, first, second)


ORACLES: dict[str, Oracle] = {
    "shorter": prefers_shorter,
    "no-bullets": prefers_no_bullets,
    "key-noun": prefers_key_noun,
    "on-topic-shorter": prefers_on_topic_shorter,
}


def oracle_resolve(name: str) -> Oracle:
    """A named oracle, or a function given by its dotted path (``package.module.function``)."""
    if name in ORACLES:
        return ORACLES[name]
    if "." not in name:
        raise InvalidInput(f"unknown oracle {name!r}: use one of {', '.join(ORACLES)} or a dotted path")
    try:
        oracle = import_string(name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import oracle {name!r}: {exc}") from exc
    if not callable(oracle):
        raise InvalidInput(f"oracle {name!r} is not a function")
    return oracle
