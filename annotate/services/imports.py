"""Comparisons from outside prefloop: preference pairs (with their verdict) and hand-written pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from annotate.models import Campaign, Choice, Comparison, Judgment, Source, Task
from annotate.preference_files import PreferenceDraft, ThumbsDraft
from annotate.services.judgments import import_user
from config.errors import Invalid
from generation.models import Prompt, Response
from generation.services import prompts_import

_CHUNK = 2000


@dataclass(frozen=True)
class PreferenceImport:
    prompts_created: int
    comparisons_created: int
    duplicates: int


def _response_for(*, prompt: Prompt, text: str) -> Response:
    existing = Response.objects.filter(prompt=prompt, policy=None, text=text).first()
    return existing or Response.objects.create(prompt=prompt, policy=None, text=text)


def _prompt_ids(drafts: Sequence[PreferenceDraft | ThumbsDraft]) -> dict[str, int]:
    """The id of each draft's prompt (imported already), by content hash, read a chunk at a time."""
    hashes = list({d.prompt.content_hash for d in drafts})
    prompt_ids: dict[str, int] = {}
    for start in range(0, len(hashes), _CHUNK):
        prompt_ids.update(
            Prompt.objects.filter(content_hash__in=hashes[start : start + _CHUNK]).values_list(
                "content_hash", "pk"
            )
        )
    return prompt_ids


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
    """Prompts, responses, comparisons in ``campaign`` and one imported judgment (chosen = first) per pair.

    A pair already imported for the same prompt (same two texts, either order), or repeated in the
    batch, is a duplicate. Give ``overlap`` > 1 (default: the campaign's) to leave room for annotators
    to review the imported verdicts. In bulk: a fixed number of queries per chunk of pairs, not per
    pair (100,000 pairs import in well under a minute); one transaction, all or nothing.
    """
    prompt_result = prompts_import(drafts=[d.prompt for d in drafts], split=split, tags=tags, source=source)
    prompt_ids = _prompt_ids(drafts)
    wanted = overlap or campaign.overlap

    # Responses: the policy-less ones these prompts already have, then the missing ones, in bulk.
    response_ids: dict[tuple[int, str], int] = {}
    ids = sorted(set(prompt_ids.values()))
    for start in range(0, len(ids), _CHUNK):
        for pk, prompt_id, text in Response.objects.filter(
            prompt_id__in=ids[start : start + _CHUNK], policy=None
        ).values_list("pk", "prompt_id", "text"):
            response_ids.setdefault((prompt_id, text), pk)
    missing = {
        (prompt_ids[d.prompt.content_hash], text): None
        for d in drafts
        for text in (d.chosen, d.rejected)
        if (prompt_ids[d.prompt.content_hash], text) not in response_ids
    }
    created_responses = Response.objects.bulk_create(
        [Response(prompt_id=prompt_id, policy=None, text=text) for prompt_id, text in missing],
        batch_size=_CHUNK,
    )
    response_ids.update({(r.prompt_id, r.text): r.pk for r in created_responses})

    # Pairs already compared (either order) for these prompts, then the new ones.
    seen: set[frozenset[int]] = set()
    for start in range(0, len(ids), _CHUNK):
        seen.update(
            frozenset(pair)
            for pair in Comparison.objects.filter(prompt_id__in=ids[start : start + _CHUNK]).values_list(
                "response_a_id", "response_b_id"
            )
        )
    comparisons: list[Comparison] = []
    for draft in drafts:
        prompt_id = prompt_ids[draft.prompt.content_hash]
        chosen, rejected = response_ids[(prompt_id, draft.chosen)], response_ids[(prompt_id, draft.rejected)]
        if frozenset((chosen, rejected)) in seen:
            continue
        seen.add(frozenset((chosen, rejected)))
        comparisons.append(
            Comparison(
                prompt_id=prompt_id,
                response_a_id=chosen,
                response_b_id=rejected,
                campaign=campaign,
                overlap=wanted,
                judgment_count=1,
                needs_judgments=wanted > 1,
            )
        )
    created = Comparison.objects.bulk_create(comparisons, batch_size=_CHUNK)
    annotator = import_user()
    Judgment.objects.bulk_create(
        [
            Judgment(
                comparison_id=comparison.pk,
                annotator=annotator,
                choice=Choice.FIRST,
                first_choice=Choice.FIRST,
                source=Source.IMPORTED,
            )
            for comparison in created
        ],
        batch_size=_CHUNK,
    )
    return PreferenceImport(
        prompts_created=prompt_result.created,
        comparisons_created=len(created),
        duplicates=len(drafts) - len(created),
    )


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
    each (good or bad). An answer already a thumbs item of its prompt, or repeated in the batch, is a
    duplicate. One transaction, all or nothing."""
    if campaign.task != Task.THUMBS:
        raise Invalid(f"campaign {campaign.name!r} asks for {campaign.task}; thumbs go to a thumbs campaign")
    prompt_result = prompts_import(drafts=[d.prompt for d in drafts], split=split, tags=tags, source=source)
    prompt_ids = _prompt_ids(drafts)
    wanted = overlap or campaign.overlap
    seen = set(
        Comparison.objects.filter(prompt_id__in=prompt_ids.values(), response_b__isnull=True).values_list(
            "prompt_id", "response_a__text"
        )
    )
    annotator, created = import_user(), 0
    for draft in drafts:
        prompt_id = prompt_ids[draft.prompt.content_hash]
        if (prompt_id, draft.completion) in seen:
            continue
        seen.add((prompt_id, draft.completion))
        comparison = Comparison.objects.create(
            prompt_id=prompt_id,
            response_a=_response_for(prompt=Prompt(pk=prompt_id), text=draft.completion),
            response_b=None,
            campaign=campaign,
            overlap=wanted,
            judgment_count=1,
            needs_judgments=wanted > 1,
        )
        choice = Choice.GOOD if draft.good else Choice.BAD
        Judgment.objects.create(
            comparison=comparison,
            annotator=annotator,
            choice=choice,
            first_choice=choice,
            source=Source.IMPORTED,
        )
        created += 1
    return PreferenceImport(
        prompts_created=prompt_result.created, comparisons_created=created, duplicates=len(drafts) - created
    )


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
