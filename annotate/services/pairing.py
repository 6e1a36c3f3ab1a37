"""A policy's answers, paired into comparisons of a campaign."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

from django.db.models import Q, QuerySet

from annotate.models import Campaign, Comparison
from config.errors import Invalid
from generation.backends import Backend, ModelSpec, Sampling, TokenCallback, backend_load
from generation.models import Policy, Prompt, Response, Split
from generation.services import GenerationReport, prompts_least_answered, responses_generate

PAIRINGS = ("random", "all", "best-worst-by-logprob")


def responses_pair(
    responses: Sequence[Response], *, how: str, rng: random.Random
) -> list[tuple[Response, Response]]:
    """Pairs of distinct responses to compare.

    random: disjoint pairs in a random order (K responses give K // 2); all: every pair (K·(K-1)/2);
    best-worst-by-logprob: the most likely response against the least likely one.
    """
    if len(responses) < 2:
        return []
    if how == "all":
        return list(itertools.combinations(responses, 2))
    if how == "best-worst-by-logprob":
        scored = [r for r in responses if r.mean_logprob is not None]
        if len(scored) >= 2:
            ranked = sorted(scored, key=lambda r: r.mean_logprob)
            return [(ranked[-1], ranked[0])]
        how = "random"  # a backend that gave no log-probs: fall back to a random pair
    if how != "random":
        raise Invalid(f"pairs must be one of {', '.join(PAIRINGS)} (got {how!r})")
    shuffled = list(responses)
    rng.shuffle(shuffled)
    return [(shuffled[i], shuffled[i + 1]) for i in range(0, len(shuffled) - 1, 2)]


def prompts_pending(*, policy: Policy, campaign: Campaign, prompts: QuerySet[Prompt]) -> QuerySet[Prompt]:
    """``prompts`` whose answers by ``policy`` are not compared in ``campaign`` yet: what a (re)run of
    generation for that policy and campaign still has to do. (A prompt whose answers were all
    identical queued nothing, and is answered again by a rerun.)"""
    done = Comparison.objects.filter(campaign=campaign).filter(
        Q(response_a__policy=policy) | Q(response_b__policy=policy)
    )
    return prompts.exclude(pk__in=done.values("prompt")).order_by("id")


def comparisons_generate(
    *,
    policy: Policy,
    prompts: Sequence[Prompt],
    sampling: Sampling,
    backend: Backend,
    campaign: Campaign,
    pairs: str = "random",
    overlap: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_tokens: TokenCallback | None = None,
) -> GenerationReport:
    """Sample responses from ``policy`` and queue train comparisons of distinct ones in ``campaign``,
    batch by batch (responses and their comparisons commit together). ``overlap``: the campaign's
    unless given."""
    if pairs not in PAIRINGS:
        raise Invalid(f"pairs must be one of {', '.join(PAIRINGS)} (got {pairs!r})")
    rng = random.Random(sampling.seed)
    wanted = overlap or campaign.overlap

    def queue(stored: dict[Prompt, list[Response]], report: GenerationReport) -> None:
        comparisons = [
            Comparison(prompt=prompt, response_a=a, response_b=b, campaign=campaign, overlap=wanted)
            for prompt, responses in stored.items()
            for a, b in responses_pair(responses, how=pairs, rng=rng)
        ]
        Comparison.objects.bulk_create(comparisons)
        report.extra["comparisons"] += len(comparisons)
        report.extra["prompts with fewer than 2 distinct responses"] += sum(
            1 for r in stored.values() if len(r) < 2
        )

    return responses_generate(
        policy=policy,
        prompts=prompts,
        sampling=sampling,
        backend=backend,
        on_batch=queue,
        on_progress=on_progress,
        on_tokens=on_tokens,
    )


def train_prompts_answer(
    *,
    policy: Policy,
    campaign: Campaign,
    limit: int,
    sampling: Sampling,
    pairs: str = "random",
    overlap: int | None = None,
    backend_name: str = "auto",
    backend: Backend | None = None,
    on_start: Callable[[int], Callable[[int, int], None] | None] | None = None,
    on_tokens: TokenCallback | None = None,
) -> tuple[GenerationReport | None, Backend | None]:
    """``policy`` answers up to ``limit`` train prompts still pending in ``campaign``, fewest answered
    first, and the comparisons of its answers are queued there. ``on_start(n)`` is told how many
    prompts it answers and may return an ``on_progress(prompts, tokens)``. Returns the report (None when no
    prompt was pending) and the backend, loaded only when there was work, so a caller can reuse it."""
    pending = prompts_pending(
        policy=policy, campaign=campaign, prompts=Prompt.objects.filter(split=Split.TRAIN)
    )
    prompts = prompts_least_answered(prompts=pending, limit=limit)
    if not prompts:
        return None, backend
    on_progress = on_start(len(prompts)) if on_start is not None else None
    backend = backend or backend_load(backend_name, ModelSpec(policy.location, policy.adapter))
    report = comparisons_generate(
        policy=policy,
        prompts=prompts,
        sampling=sampling,
        backend=backend,
        campaign=campaign,
        pairs=pairs,
        overlap=overlap,
        on_progress=on_progress,
        on_tokens=on_tokens,
    )
    return report, backend
