"""Prompt files (JSONL or CSV) parsed into validated drafts, every bad line collected.

JSONL lines hold ``{"prompt": "..."}`` or ``{"messages": [...]}``; CSV files a ``prompt`` column.
Optional per record: ``split`` (train/eval) and ``tags`` (a list in JSONL, ``;``-separated in CSV).
Other fields are ignored, so rows exported from other tools import as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

from config.limits import too_long
from generation.errors import LineProblem
from generation.messages import messages_from_text, messages_hash, messages_problem
from generation.models import Split
from generation.records import records_format, records_numbered, records_parse, records_read


@dataclass(frozen=True)
class PromptDraft:
    line: int
    text: str
    messages: list[dict[str, str]] | None
    split: str | None
    tags: tuple[str, ...] = field(default=())

    @property
    def content_hash(self) -> str:
        return messages_hash(self.messages if self.messages is not None else messages_from_text(self.text))


def prompt_draft_from_record(line: int, record: dict[str, Any]) -> PromptDraft | LineProblem:
    has_prompt, has_messages = record.get("prompt") not in (None, ""), record.get("messages") is not None
    if has_prompt and has_messages:
        return LineProblem(line, "give either 'prompt' or 'messages', not both")
    if record.get("prompt") == "" and not has_messages:
        return LineProblem(line, "'prompt' is empty")
    if not has_prompt and not has_messages:
        return LineProblem(line, "missing field 'prompt' (or 'messages')")
    text, messages = "", None
    if has_prompt:
        text = record["prompt"]
        if not isinstance(text, str):
            return LineProblem(line, f"'prompt' must be a string (got {type(text).__name__})")
        if not text.strip():
            return LineProblem(line, "'prompt' is blank")
        if "\x00" in text:
            return LineProblem(line, "'prompt' contains a NUL character, which databases cannot store")
        if problem := too_long("prompt", text, field="'prompt'"):
            return LineProblem(line, problem)
    else:
        problem = messages_problem(record["messages"])
        if problem:
            return LineProblem(line, problem)
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    split = record.get("split") or None
    if split is not None and split not in Split.values:
        return LineProblem(line, f"'split' must be one of {', '.join(Split.values)} (got {split!r})")
    tags = record.get("tags") or []
    if isinstance(tags, str):
        tags = [tag for tag in tags.split(";")]
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return LineProblem(line, "'tags' must be a list of strings")
    tags = [tag.strip() for tag in tags if tag.strip()]
    if any(len(tag) > 100 for tag in tags):
        return LineProblem(line, "a tag is longer than 100 characters")
    return PromptDraft(line=line, text=text, messages=messages, split=split, tags=tuple(tags))


def prompt_drafts_read(stream: IO[bytes], *, name: str, fmt: str | None = None) -> list[PromptDraft]:
    """Every record of the file as a draft; raises InvalidFile listing every bad line."""
    fmt = records_format(name, fmt)
    records = records_read(stream, name=name, fmt=fmt, csv_columns=("prompt",))
    return records_parse(records, prompt_draft_from_record, name=name, empty="the file holds no prompts")


def prompt_drafts_from_objects(objects: list[Any], *, name: str = "request") -> list[PromptDraft]:
    """Drafts from already-decoded JSON objects (the API's bulk import); item i is 'line' i+1."""
    return records_parse(
        records_numbered(objects), prompt_draft_from_record, name=name, empty="no prompts given"
    )
