"""Existing preference data (JSONL) parsed into validated drafts, every bad line collected.

Accepted shapes, per line:

- standard: ``{"prompt": str, "chosen": str, "rejected": str}``
- the same with ``preferred`` / ``dispreferred`` instead of ``chosen`` / ``rejected``
- conversational, explicit prompt: ``{"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}`` (TRL's conversational preference format)
- conversational, implicit prompt: ``{"chosen": [messages], "rejected": [messages]}``: two whole
  conversations that share every message but the last, an assistant turn (Anthropic HH style)

Optional: ``split`` (train/eval) and ``tags``. Other fields are ignored.

Thumbs logs (one answer judged good or bad), per line: ``{"prompt": str or [messages], "completion":
str or [assistant message], "label": true/false}`` (TRL's unpaired format); ``label`` may also be
"good"/"bad", "up"/"down" or 1/0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from config.limits import too_long
from generation.errors import LineProblem
from generation.messages import messages_problem
from generation.prompt_files import PromptDraft, prompt_draft_from_record
from generation.records import records_numbered, records_parse, records_read


@dataclass(frozen=True)
class PreferenceDraft:
    line: int
    prompt: PromptDraft
    chosen: str
    rejected: str


def _pick(record: dict[str, Any], names: tuple[str, str]) -> tuple[Any, str | None]:
    present = [name for name in names if name in record]
    if len(present) == 2:
        return None, f"give either {names[0]!r} or {names[1]!r}, not both"
    if not present:
        return None, f"missing field {names[0]!r} (or {names[1]!r})"
    return record[present[0]], None


def _completion_text(value: Any, field: str) -> tuple[str | None, str | None]:
    """A completion as text: a string, or a list holding one assistant message."""
    if isinstance(value, str):
        if "\x00" in value:
            return None, f"{field!r} contains a NUL character, which databases cannot store"
        if problem := too_long("response", value, field=repr(field)):
            return None, problem
        return (value, None) if value.strip() else (None, f"{field!r} is empty")
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            return None, f"{field!r} must be one assistant message (got {len(value)} message(s))"
        content = value[0].get("content")
        if not isinstance(content, str) or not content.strip():
            return None, f"{field!r} has an empty assistant message"
        return _completion_text(content, field)
    return None, f"{field!r} must be a string or a list of messages"


def _split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[list, list, list] | str:
    """(prompt, chosen tail, rejected tail) from two whole conversations, or why that fails."""
    for field, conversation in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(conversation, list) or len(conversation) < 2:
            return f"without 'prompt', {field!r} must be a whole conversation (a list of 2+ messages)"
        if not isinstance(conversation[-1], dict) or conversation[-1].get("role") != "assistant":
            return f"the last message of {field!r} must be the assistant's answer"
    if chosen[:-1] != rejected[:-1]:
        return "'chosen' and 'rejected' must share every message before the last (the prompt)"
    return chosen[:-1], chosen[-1:], rejected[-1:]


def preference_draft_from_record(line: int, record: dict[str, Any]) -> PreferenceDraft | LineProblem:
    chosen, problem = _pick(record, ("chosen", "preferred"))
    if problem:
        return LineProblem(line, problem)
    rejected, problem = _pick(record, ("rejected", "dispreferred"))
    if problem:
        return LineProblem(line, problem)
    prompt_record: dict[str, Any] = {"split": record.get("split"), "tags": record.get("tags")}
    prompt = record.get("prompt")
    if prompt is None:
        parts = _split_implicit_prompt(chosen, rejected)
        if isinstance(parts, str):
            return LineProblem(line, parts)
        prompt_record["messages"], chosen, rejected = parts
    elif isinstance(prompt, list):
        problem = messages_problem(prompt)
        if problem:
            return LineProblem(line, f"'prompt': {problem}")
        prompt_record["messages"] = prompt
    else:
        prompt_record["prompt"] = prompt
    draft = prompt_draft_from_record(line, prompt_record)
    if isinstance(draft, LineProblem):
        return draft
    chosen_text, problem = _completion_text(chosen, "chosen")
    if problem:
        return LineProblem(line, problem)
    rejected_text, problem = _completion_text(rejected, "rejected")
    if problem:
        return LineProblem(line, problem)
    if chosen_text == rejected_text:
        return LineProblem(line, "'chosen' and 'rejected' are identical")
    return PreferenceDraft(line=line, prompt=draft, chosen=chosen_text, rejected=rejected_text)


def preference_drafts_read(stream: IO[bytes], *, name: str) -> list[PreferenceDraft]:
    """Every line of a JSONL preference file as a draft; raises InvalidFile listing every bad line."""
    records = records_read(stream, name=name, fmt="jsonl")
    return records_parse(
        records, preference_draft_from_record, name=name, empty="the file holds no preference pairs"
    )


def preference_drafts_from_objects(objects: list[Any], *, name: str = "request") -> list[PreferenceDraft]:
    """Drafts from already-decoded JSON objects (the API); item i is 'line' i+1."""
    return records_parse(
        records_numbered(objects), preference_draft_from_record, name=name, empty="no preference pairs given"
    )


@dataclass(frozen=True)
class ThumbsDraft:
    line: int
    prompt: PromptDraft
    completion: str
    good: bool


_LABELS = {
    True: True,
    False: False,
    "good": True,
    "bad": False,
    "up": True,
    "down": False,
}  # 1 and 0 are True and False as keys


def thumbs_draft_from_record(line: int, record: dict[str, Any]) -> ThumbsDraft | LineProblem:
    for field in ("prompt", "completion", "label"):
        if field not in record:
            return LineProblem(line, f"missing field {field!r}")
    label = record["label"]
    key = label.strip().lower() if isinstance(label, str) else label
    if isinstance(key, float) or key not in _LABELS:
        return LineProblem(line, f"'label' must be true or false (or good/bad, up/down, 1/0; got {label!r})")
    prompt = record["prompt"]
    prompt_record: dict[str, Any] = {"split": record.get("split"), "tags": record.get("tags")}
    if isinstance(prompt, list):
        if problem := messages_problem(prompt):
            return LineProblem(line, f"'prompt': {problem}")
        prompt_record["messages"] = prompt
    else:
        prompt_record["prompt"] = prompt
    draft = prompt_draft_from_record(line, prompt_record)
    if isinstance(draft, LineProblem):
        return draft
    text, problem = _completion_text(record["completion"], "completion")
    if problem:
        return LineProblem(line, problem)
    return ThumbsDraft(line=line, prompt=draft, completion=text or "", good=_LABELS[key])


def thumbs_drafts_read(stream: IO[bytes], *, name: str) -> list[ThumbsDraft]:
    """Every line of a JSONL thumbs log as a draft; raises InvalidFile listing every bad line."""
    records = records_read(stream, name=name, fmt="jsonl")
    return records_parse(records, thumbs_draft_from_record, name=name, empty="the file holds no thumbs")
