"""Comparisons from outside prefloop: preference pairs (with their verdict) and hand-written pairs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from annotate.models import Campaign, Choice, Comparison, Judgment, Source, Task
from annotate.preference_files import PreferenceDraft, ThumbsDraft
from annotate.services.judgments import import_user
from config.errors import Invalid
from generation.models import Prompt, Response
from generation.prompt_files import PromptDraft
from generation.services import prompts_import

_CHUNK = 2000


@dataclass(frozen=True)
class PreferenceImport:
    prompts_created: int
    comparisons_created: int
    duplicates: int


@dataclass(frozen=True)
class _Item:
    """One imported item: its prompt's draft, its answers (a pair's chosen first, or a thumbs item's
    one answer) and the imported verdict."""

    prompt: PromptDraft
    texts: tuple[str, ...]
    choice: str


def _response_for(*, prompt: Prompt, text: str) -> Response:
    existing = Response.objects.filter(prompt=prompt, policy=None, text=text).first()
    return existing or Response.objects.create(prompt=prompt, policy=None, text=text)


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _items_import(
    items: Sequence[_Item],
    *,
    campaign: Campaign,
    split: str | None,
    tags: Sequence[str],
    source: str,
    overlap: int | None,
) -> PreferenceImport:
    """Prompts, responses (policy-less), comparisons in ``campaign`` and one imported judgment per
    item, in bulk: a fixed number of queries per chunk of items, not per item (100,000 pairs import
    in well under a minute). An item whose prompt already has a comparison of the same texts (either
    order), or repeated in the batch, is a duplicate. The caller's transaction makes it all or nothing."""
    prompt_result = prompts_import(drafts=[i.prompt for i in items], split=split, tags=tags, source=source)
    hashes = list({i.prompt.content_hash for i in items})
    prompt_ids: dict[str, int] = {}
    for chunk in _chunks(hashes):
        prompt_ids.update(Prompt.objects.filter(content_hash__in=chunk).values_list("content_hash", "pk"))
    ids = sorted(set(prompt_ids.values()))

    # Responses: the policy-less ones these prompts already have, then the missing ones.
    response_ids: dict[tuple[int, str], int] = {}
    seen: set[tuple[int, frozenset[str]]] = set()  # the texts compared already, by prompt
    for chunk in _chunks(ids):
        for pk, prompt_id, text in Response.objects.filter(prompt_id__in=chunk, policy=None).values_list(
            "pk", "prompt_id", "text"
        ):
            response_ids.setdefault((prompt_id, text), pk)
        compared = Comparison.objects.filter(prompt_id__in=chunk)
        for prompt_id, a, b in compared.values_list("prompt_id", "response_a__text", "response_b__text"):
            seen.add((prompt_id, frozenset(t for t in (a, b) if t is not None)))
    missing = {
        (prompt_ids[i.prompt.content_hash], text): None
        for i in items
        for text in i.texts
        if (prompt_ids[i.prompt.content_hash], text) not in response_ids
    }
    created_responses = Response.objects.bulk_create(
        [Response(prompt_id=prompt_id, policy=None, text=text) for prompt_id, text in missing],
        batch_size=_CHUNK,
    )
    response_ids.update({(r.prompt_id, r.text): r.pk for r in created_responses})

    wanted = overlap or campaign.overlap
    comparisons, choices = [], []
    for item in items:
        prompt_id = prompt_ids[item.prompt.content_hash]
        if (prompt_id, frozenset(item.texts)) in seen:
            continue
        seen.add((prompt_id, frozenset(item.texts)))
        answers = [response_ids[(prompt_id, text)] for text in item.texts]
        comparisons.append(
            Comparison(
                prompt_id=prompt_id,
                response_a_id=answers[0],
                response_b_id=answers[1] if len(answers) > 1 else None,
                campaign=campaign,
                overlap=wanted,
                judgment_count=1,
                needs_judgments=wanted > 1,
            )
        )
        choices.append(item.choice)
    created = Comparison.objects.bulk_create(comparisons, batch_size=_CHUNK)
    annotator = import_user()
    Judgment.objects.bulk_create(
        [
            Judgment(
                comparison_id=comparison.pk,
                annotator=annotator,
                choice=choice,
                first_choice=choice,
                source=Source.IMPORTED,
            )
            for comparison, choice in zip(created, choices, strict=True)
        ],
        batch_size=_CHUNK,
    )
    return PreferenceImport(
        prompts_created=prompt_result.created,
        comparisons_created=len(created),
        duplicates=len(items) - len(created),
    )


@transaction.atomic
def preferences_import(
    *,
    drafts: Sequence[PreferenceDraft],
    campaign: Campaign,
    split: str | None = None,
    tags: Sequence[str] = (),
    source: str = "",
    overlap: int | None = None,
) -> PreferenceImport:
    """Prompts, responses, comparisons in ``campaign`` and one imported judgment (chosen = first) per
    pair (``_items_import``). Give ``overlap`` > 1 (default: the campaign's) to leave room for
    annotators to review the imported verdicts. One transaction, all or nothing."""
    items = [_Item(d.prompt, (d.chosen, d.rejected), Choice.FIRST) for d in drafts]
    return _items_import(items, campaign=campaign, split=split, tags=tags, source=source, overlap=overlap)


@transaction.atomic
def thumbs_import(
    *,
    drafts: Sequence[ThumbsDraft],
    campaign: Campaign,
    split: str | None = None,
    tags: Sequence[str] = (),
    source: str = "",
    overlap: int | None = None,
) -> PreferenceImport:
    """Prompts, responses, thumbs items in ``campaign`` (a thumbs campaign) and one imported judgment
    each, good or bad (``_items_import``). One transaction, all or nothing."""
    if campaign.task != Task.THUMBS:
        raise Invalid(f"campaign {campaign.name!r} asks for {campaign.task}; thumbs go to a thumbs campaign")
    items = [_Item(d.prompt, (d.completion,), Choice.GOOD if d.good else Choice.BAD) for d in drafts]
    return _items_import(items, campaign=campaign, split=split, tags=tags, source=source, overlap=overlap)


@transaction.atomic
def comparison_create_from_texts(
    *, prompt: Prompt, first: str, second: str, campaign: Campaign, overlap: int | None = None
) -> Comparison:
    """A comparison of two texts written outside prefloop (responses with no policy)."""
    return Comparison.objects.create(
        prompt=prompt,
        response_a=_response_for(prompt=prompt, text=first),
        response_b=_response_for(prompt=prompt, text=second),
        campaign=campaign,
        overlap=overlap or campaign.overlap,
    )
