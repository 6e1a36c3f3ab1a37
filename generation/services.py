from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from config.errors import Conflict
from generation.models import Prompt, Split, Tag
from generation.prompt_files import PromptDraft

_CHUNK = 500


@dataclass(frozen=True)
class PromptImport:
    created: int
    duplicates: int


def tags_get_or_create(*, names: Iterable[str]) -> dict[str, Tag]:
    names = sorted(set(names))
    Tag.objects.bulk_create([Tag(name=name) for name in names], ignore_conflicts=True)
    return {tag.name: tag for tag in Tag.objects.filter(name__in=names)}


@transaction.atomic
def prompts_import(
    *, drafts: Sequence[PromptDraft], split: str | None = None, tags: Sequence[str] = (), source: str = ""
) -> PromptImport:
    """Store the drafts that are new; a prompt already stored (or repeated in the batch) is a duplicate.

    ``split`` is the default for drafts without one (train if neither says). All or nothing: the caller
    validated every draft first, and this runs in one transaction.
    """
    fresh: dict[str, PromptDraft] = {}
    for draft in drafts:
        fresh.setdefault(draft.content_hash, draft)
    hashes = list(fresh)
    for start in range(0, len(hashes), _CHUNK):
        for existing in Prompt.objects.filter(content_hash__in=hashes[start : start + _CHUNK]).values_list(
            "content_hash", flat=True
        ):
            fresh.pop(existing)
    prompts = [
        Prompt(
            text=draft.text,
            messages=draft.messages,
            split=draft.split or split or Split.TRAIN,
            source=source[:300],
            content_hash=content_hash,
        )
        for content_hash, draft in fresh.items()
    ]
    try:
        Prompt.objects.bulk_create(prompts, batch_size=_CHUNK)
    except IntegrityError as exc:
        raise Conflict("another import stored some of these prompts at the same time; run it again") from exc
    wanted = {name for draft in fresh.values() for name in draft.tags} | set(tags)
    if wanted:
        by_name = tags_get_or_create(names=wanted)
        links = [
            Prompt.tags.through(prompt_id=prompt.pk, tag_id=by_name[name].pk)
            for prompt, draft in zip(prompts, fresh.values(), strict=True)
            for name in sorted(set(draft.tags) | set(tags))
        ]
        Prompt.tags.through.objects.bulk_create(links, batch_size=_CHUNK)
    return PromptImport(created=len(prompts), duplicates=len(drafts) - len(prompts))
