"""Scripted annotators: an oracle judges queued comparisons as people are served them."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from annotate.models import Campaign, Choice, Comparison, Source
from annotate.oracles import oracle_resolve
from annotate.services.judgments import judgment_record, system_user
from annotate.services.queue import assignment_skip, comparison_assign_next
from config.errors import Invalid
from config.invalid_input import InvalidInput

REVERSED = {Choice.FIRST: Choice.SECOND, Choice.SECOND: Choice.FIRST}


@dataclass
class SimulationReport:
    judged: int = 0
    flipped: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)


def flips_parse(text: str) -> tuple[float, ...]:
    """Per-judge flip rates from ``"0,0,0.35,0.35,0.35"`` (empty: none); Invalid names a bad entry."""
    rates = []
    for position, part in enumerate((p.strip() for p in text.split(",")) if text.strip() else (), start=1):
        try:
            rate = float(part)
        except ValueError:
            raise Invalid(f"flip rate {position} is not a number (got {part!r})") from None
        if not 0.0 <= rate <= 1.0:
            raise Invalid(f"flip rate {position} must be between 0 and 1 (got {part})")
        rates.append(rate)
    return tuple(rates)


def simulated_annotator(*, oracle_name: str, index: int) -> AbstractBaseUser:
    """The inactive user a simulated judge works as (``sim:<oracle>:<n>``, no password)."""
    return system_user(f"sim:{oracle_name.rsplit('.', 1)[-1][:60]}:{index}")


def comparisons_simulate(
    *,
    oracle_name: str,
    count: int,
    noise: float = 0.0,
    seed: int = 0,
    annotators: int = 0,
    campaign: Campaign | None = None,
    flips: Sequence[float] = (),
) -> SimulationReport:
    """Judge up to ``count`` queued comparisons by a scripted oracle, as simulated annotators.

    Comparisons are served exactly as to people (campaigns open to all, priority, overlap, leases);
    the judgments carry source "simulated". With probability ``noise`` the oracle's verdict is
    replaced by a random one. ``annotators`` simulated users take turns (default: as many as the
    largest overlap queued); ``campaign`` keeps them to one campaign's comparisons. ``flips``: one
    simulated annotator per entry, each reversing that share of its decisive verdicts (first ↔
    second; ties and both-bad stand): judges of different reliability, e.g. (0, 0, .35, .35, .35).
    """
    try:
        oracle = oracle_resolve(oracle_name)
    except InvalidInput as exc:
        raise Invalid(str(exc)) from exc
    if not 0.0 <= noise <= 1.0:
        raise Invalid(f"noise must be between 0 and 1 (got {noise})")
    if any(not 0.0 <= f <= 1.0 for f in flips):
        raise Invalid(f"flip rates must be between 0 and 1 (got {', '.join(map(str, flips))})")
    rng = random.Random(seed)
    queued = Comparison.objects.filter(campaign=campaign) if campaign else Comparison.objects.all()
    width = len(flips) or annotators or max(queued.aggregate(m=Max("overlap"))["m"] or 1, 1)
    users = [simulated_annotator(oracle_name=oracle_name, index=i + 1) for i in range(width)]
    flip_of = {user.pk: flips[i] if flips else 0.0 for i, user in enumerate(users)}
    report = SimulationReport()
    idle: set[int] = set()
    while report.judged < count and len(idle) < len(users):
        for user in users:
            if report.judged >= count or user.pk in idle:
                continue
            assignment = comparison_assign_next(annotator=user, campaign=campaign)
            if assignment is None:
                idle.add(user.pk)
                continue
            comparison = assignment.comparison
            if comparison.response_b is None:  # a thumbs item: oracles compare two answers
                assignment_skip(comparison=comparison, annotator=user)
                continue
            verdict = oracle(
                comparison.prompt.as_messages()[-1]["content"],
                comparison.response_a.text,
                comparison.response_b.text,
            )
            if verdict not in Choice.values:
                raise Invalid(f"oracle {oracle_name!r} answered {verdict!r}; expected one of {Choice.values}")
            if rng.random() < noise:
                verdict = rng.choice(Choice.values)
            if verdict in REVERSED and flip_of[user.pk] and rng.random() < flip_of[user.pk]:
                verdict = REVERSED[verdict]
                report.flipped += 1
            with transaction.atomic():
                judgment_record(
                    comparison=comparison,
                    annotator=user,
                    choice=verdict,
                    source=Source.SIMULATED,
                    assignment=assignment,
                )
            report.judged += 1
            report.verdicts[verdict] += 1
    return report
