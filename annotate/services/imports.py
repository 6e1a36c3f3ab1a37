"""Comparisons from outside prefloop: preference pairs (with their verdict) and hand-written pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from annotate.models import Campaign, Choice, Comparison, Source
from annotate.preference_files import PreferenceDraft
from annotate.services.judgments import _judgment_record, import_user
from generation.models import Prompt, Response
from generation.services import prompts_import


@dataclass(frozen=True)
class PreferenceImport:
    prompts_created: int
    comparisons_created: int
    duplicates: int


def _response_for(*, prompt: Prompt, text: str) -> Response:
    existing = Response.objects.filter(prompt=prompt, policy=None, text=text).first()
    return existing or Response.objects.create(prompt=prompt, policy=None, text=text)


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

    A pair already imported for the same prompt (same two texts, either order) is a duplicate. Give
    ``overlap`` > 1 (default: the campaign's) to leave room for annotators to review the imported verdicts.
    """
    prompt_result = prompts_import(drafts=[d.prompt for d in drafts], split=split, tags=tags, source=source)
    prompts = {
        p.content_hash: p
        for p in Prompt.objects.filter(content_hash__in={d.prompt.content_hash for d in drafts})
    }
    annotator = import_user()
    created = duplicates = 0
    for draft in drafts:
        prompt = prompts[draft.prompt.content_hash]
        chosen = _response_for(prompt=prompt, text=draft.chosen)
        rejected = _response_for(prompt=prompt, text=draft.rejected)
        pair = Q(response_a=chosen, response_b=rejected) | Q(response_a=rejected, response_b=chosen)
        if Comparison.objects.filter(pair).exists():
            duplicates += 1
            continue
        comparison = Comparison.objects.create(
            prompt=prompt,
            response_a=chosen,
            response_b=rejected,
            campaign=campaign,
            overlap=overlap or campaign.overlap,
        )
        _judgment_record(
            comparison=comparison, annotator=annotator, choice=Choice.FIRST, source=Source.IMPORTED
        )
        created += 1
    return PreferenceImport(
        prompts_created=prompt_result.created, comparisons_created=created, duplicates=duplicates
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
