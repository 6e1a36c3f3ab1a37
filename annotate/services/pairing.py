"""A policy's answers, paired into comparisons of a campaign and queued there (no model is loaded
here: ``training.answering`` generates and scores)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from django.db import transaction
from django.db.models import Q, QuerySet

from annotate.models import Campaign, Comparison, Kind, Task
from config.errors import Invalid
from generation.models import Policy, Prompt, Response, Split

PAIRINGS = ("random", "all", "best-worst-by-logprob", "uncertain")


def responses_pair(
    responses: Sequence[Response], *, how: str, rng: random.Random
) -> list[tuple[Response, Response]]:
    """Pairs of distinct responses to compare.

    random: disjoint pairs in a random order (K responses give K // 2); all: every pair (K·(K-1)/2);
    best-worst-by-logprob: the most likely response against the least likely one. (Uncertain pairs
    need the policy's implicit rewards: ``uncertain_pairs``.)
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
        raise Invalid(f"pairs must be one of random, all, best-worst-by-logprob here (got {how!r})")
    shuffled = list(responses)
    rng.shuffle(shuffled)
    return [(shuffled[i], shuffled[i + 1]) for i in range(0, len(shuffled) - 1, 2)]


def policy_parent(policy: Policy) -> Policy | None:
    """The policy ``policy`` was trained from (its reference for uncertainty), or None for a base."""
    if policy.parent_id is None or policy.parent_id == policy.pk:
        return None
    return policy.parent


def budget_left(*, policy: Policy, campaign: Campaign, budget: int | None) -> int | None:
    """How many more comparisons of ``policy``'s answers ``campaign`` takes under ``budget`` (None: no
    cap); the comparisons already queued there count, so a rerun keeps to the budget."""
    if budget is None:
        return None
    queued = Comparison.objects.filter(campaign=campaign, kind=Kind.TRAIN).filter(
        Q(response_a__policy=policy) | Q(response_b__policy=policy)
    )
    return max(0, budget - queued.count())


def prompts_pending(*, policy: Policy, campaign: Campaign, prompts: QuerySet[Prompt]) -> QuerySet[Prompt]:
    """``prompts`` whose answers by ``policy`` are not compared in ``campaign`` yet: what a (re)run of
    generation for that policy and campaign still has to do. (A prompt whose answers were all
    identical queued nothing, and is answered again by a rerun.)"""
    done = Comparison.objects.filter(campaign=campaign).filter(
        Q(response_a__policy=policy) | Q(response_b__policy=policy)
    )
    return prompts.exclude(pk__in=done.values("prompt")).order_by("id")


def items_of(
    campaign: Campaign, responses: Sequence[Response], *, how: str, rng: random.Random
) -> list[tuple[Response, ...]]:
    """What one prompt's distinct answers become in ``campaign``: pairs (``responses_pair`` by
    ``how``), one thumbs item per answer, or one ranking item of its first 3 or 4 answers."""
    if campaign.task == Task.THUMBS:
        return [(r,) for r in responses]
    if campaign.task == Task.RANKINGS:
        return [tuple(responses[:4])] if len(responses) >= 3 else []
    return list(responses_pair(responses, how=how, rng=rng))


def item_new(campaign: Campaign, prompt: Prompt, answers: Sequence[Response], *, overlap: int) -> Comparison:
    """An unsaved comparison of ``answers`` (1 to 4: a, b, c, d) in ``campaign``."""
    named = dict(zip(("response_a", "response_b", "response_c", "response_d"), answers, strict=False))
    return Comparison(prompt=prompt, campaign=campaign, overlap=overlap, **named)


@transaction.atomic
def answers_queue(
    *, policy: Policy, campaign: Campaign, pairs: str = "random", overlap: int | None = None, seed: int = 0
) -> int:
    """Queue in ``campaign`` the answers ``policy`` has already given to train prompts, for the prompts
    with none of its items there yet, as the campaign's kind of item (``items_of``): the same answers
    judged as thumbs or ranked, without sampling again. Returns how many items were queued."""
    if pairs not in ("random", "all"):
        raise Invalid(f"pairs must be random or all here (got {pairs!r})")
    rng = random.Random(seed)
    pending = prompts_pending(
        policy=policy, campaign=campaign, prompts=Prompt.objects.filter(split=Split.TRAIN)
    )
    answers: dict[int, list[Response]] = {}
    for response in Response.objects.filter(policy=policy, heldout=False, prompt__in=pending).order_by("id"):
        answers.setdefault(response.prompt_id, []).append(response)
    prompts = {p.pk: p for p in Prompt.objects.filter(pk__in=answers)}
    items = [
        item_new(campaign, prompts[prompt_id], item, overlap=overlap or campaign.overlap)
        for prompt_id, responses in answers.items()
        for item in items_of(campaign, responses, how=pairs, rng=rng)
    ]
    Comparison.objects.bulk_create(items)
    return len(items)
