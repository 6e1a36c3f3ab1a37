"""A policy answers prompts and its answers become comparisons of a campaign: the model is loaded
here (a backend to generate, scorers for the uncertainty pairing), for the rounds and commands that
call it; annotate only queues what it is given (``annotate.services.pairing``)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from annotate.models import Campaign, Comparison, Task
from annotate.services.pairing import (
    PAIRINGS,
    budget_left,
    item_new,
    items_of,
    policy_parent,
    prompts_pending,
)
from config.errors import Invalid
from generation.backends import Backend, ModelSpec, Sampling, TokenCallback, backend_load
from generation.models import Policy, Prompt, Response, Split
from generation.services import (
    GenerationReport,
    prompts_least_answered,
    responses_generate,
    responses_score,
    scorer_load,
)


@dataclass(frozen=True)
class Candidate:
    a: Response
    b: Response
    margin: float  # |β·(r(a) - r(b))|, r = log π - log π_ref summed over the answer's tokens


def uncertain_pairs(
    responses: dict[Prompt, list[Response]],
    rewards: dict[int, float],
    *,
    beta: float,
    budget: int | None,
) -> list[Candidate]:
    """The pairs the policy is least sure of: among every pair of a prompt's answers, those with the
    smallest implicit-reward margin |β·(r(a) - r(b))| (``rewards``: r by response id). Without a
    ``budget`` each prompt gets as many pairs as random pairing gives it (K // 2, its smallest
    margins); with one, the ``budget`` smallest margins over all prompts (ties: the earlier prompt
    and answer first)."""
    per_prompt: list[tuple[int, list[Candidate]]] = []
    for rs in responses.values():
        if len(rs) >= 2:
            candidates = [
                Candidate(a, b, abs(beta * (rewards[a.pk] - rewards[b.pk])))
                for a, b in itertools.combinations(rs, 2)
            ]
            per_prompt.append((len(rs) // 2, sorted(candidates, key=lambda c: c.margin)))
    if budget is None:
        return [c for quota, candidates in per_prompt for c in candidates[:quota]]
    flat = sorted((c for _, candidates in per_prompt for c in candidates), key=lambda c: c.margin)
    return flat[:budget]


def implicit_rewards(
    responses: Sequence[Response], *, policy_scorer: Any, reference_scorer: Any
) -> dict[int, float]:
    """Each response's DPO implicit reward over β: log π(answer) - log π_ref(answer), summed over its
    tokens, by response id."""
    mine = responses_score(policy_scorer, responses, total=True)
    theirs = responses_score(reference_scorer, responses, total=True)
    return {r.pk: m - t for r, m, t in zip(responses, mine, theirs, strict=True)}


@dataclass(frozen=True)
class Queueing:
    """How a policy's answers are queued as comparisons: which ``pairs`` (``PAIRINGS``), each one's
    ``overlap`` (None: the campaign's), the ``budget`` of comparisons of this policy's answers the
    campaign takes (None: the campaign's ``pair_budget``), and the DPO ``beta`` that scores
    uncertainty. The generate command, a round's follow-up and the scripted loop each build one."""

    pairs: str = "random"
    overlap: int | None = None
    budget: int | None = None
    beta: float = 0.1

    @classmethod
    def of(cls, options: Mapping[str, Any], *, beta: float = 0.1) -> Queueing:
        """From generation options as a round or a command holds them (``pairs``, ``overlap``, ``budget``)."""
        return cls(pairs=options["pairs"], overlap=options["overlap"], budget=options["budget"], beta=beta)


def comparisons_generate(
    *,
    policy: Policy,
    prompts: Sequence[Prompt],
    sampling: Sampling,
    backend: Backend,
    campaign: Campaign,
    queueing: Queueing = Queueing(),
    on_progress: Callable[[int, int], None] | None = None,
    on_tokens: TokenCallback | None = None,
) -> GenerationReport:
    """Sample responses from ``policy`` and queue train comparisons of distinct ones in ``campaign``,
    as ``queueing`` says (its ``budget``: the most comparisons of this policy's answers the campaign
    takes; None there and on the campaign: no cap).

    Random, all and best-worst pairs are queued batch by batch (responses and their comparisons
    commit together). With a budget, or ``pairs="uncertain"``, the answers are stored batch by batch
    and the pairs chosen once all are in: uncertain scores every answer under the policy and its
    parent (``implicit_rewards``, with ``beta``) and queues the smallest margins
    (``uncertain_pairs``); a policy with no parent has no implicit reward (every margin would be 0),
    so its answers are paired at random, and the report says so. A budget under random pairing keeps
    a random subset of the pairs."""
    pairs, beta = queueing.pairs, queueing.beta
    if pairs not in PAIRINGS:
        raise Invalid(f"pairs must be one of {', '.join(PAIRINGS)} (got {pairs!r})")
    rng = random.Random(sampling.seed)
    wanted = queueing.overlap or campaign.overlap
    budget = campaign.pair_budget if queueing.budget is None else queueing.budget
    if budget is not None and budget < 0:
        raise Invalid(f"budget must be 0 or more (got {budget})")
    # Thumbs: one item per distinct answer; rankings: one item of up to 4 answers per prompt. Neither pairs.
    thumbs, rankings = campaign.task == Task.THUMBS, campaign.task == Task.RANKINGS
    pairing = not (thumbs or rankings)
    deferred = budget is not None or (pairs == "uncertain" and pairing)
    collected: dict[Prompt, list[Response]] = {}
    fewest = 3 if rankings else 1 if thumbs else 2

    def paired(responses: list[Response], how: str) -> list[tuple[Response, ...]]:
        return items_of(campaign, responses, how=how, rng=rng)

    def comparison(prompt: Prompt, *answers: Response) -> Comparison:
        return item_new(campaign, prompt, answers, overlap=wanted)

    def queue(stored: dict[Prompt, list[Response]], report: GenerationReport) -> None:
        if fewest > 1:
            report.extra[f"prompts with fewer than {fewest} distinct responses"] += sum(
                1 for r in stored.values() if len(r) < fewest
            )
        if deferred:
            collected.update(stored)
            return
        comparisons = [
            comparison(prompt, *item)
            for prompt, responses in stored.items()
            for item in paired(responses, pairs)
        ]
        Comparison.objects.bulk_create(comparisons)
        report.extra["comparisons"] += len(comparisons)

    report = responses_generate(
        policy=policy,
        prompts=prompts,
        sampling=sampling,
        backend=backend,
        on_batch=queue,
        on_progress=on_progress,
        on_tokens=on_tokens,
    )
    if deferred and collected:
        left = budget_left(policy=policy, campaign=campaign, budget=budget)
        chosen: list[tuple[Response, ...]]
        parent = policy_parent(policy) if pairs == "uncertain" and pairing else None
        if parent is not None:
            answers = [r for rs in collected.values() for r in rs if len(rs) >= 2]
            rewards = implicit_rewards(
                answers, policy_scorer=scorer_load(policy, backend), reference_scorer=scorer_load(parent)
            )
            chosen = [(c.a, c.b) for c in uncertain_pairs(collected, rewards, beta=beta, budget=left)]
            report.extra["answers scored for uncertainty"] += len(answers)
            offered = sum(len(rs) // 2 for rs in collected.values())  # what it queues without a budget
        else:
            if pairs == "uncertain" and pairing:
                report.extra["prompts paired at random (uncertain: the policy has no parent)"] += len(
                    collected
                )
            how = "random" if pairs == "uncertain" else pairs
            chosen = [pair for rs in collected.values() for pair in paired(rs, how)]
            offered = len(chosen)
            if left is not None and len(chosen) > left:
                chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), left))]
        if left is not None:
            report.extra["pairs left out by the budget"] += max(0, offered - len(chosen))
        prompt_of = {r.pk: prompt for prompt, rs in collected.items() for r in rs}
        with transaction.atomic():
            Comparison.objects.bulk_create([comparison(prompt_of[item[0].pk], *item) for item in chosen])
        report.extra["comparisons"] += len(chosen)
    return report


def train_prompts_answer(
    *,
    policy: Policy,
    campaign: Campaign,
    limit: int,
    sampling: Sampling,
    queueing: Queueing = Queueing(),
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
        queueing=queueing,
        on_progress=on_progress,
        on_tokens=on_tokens,
    )
    return report, backend
