"""The leaderboard's reads: the blind evaluation games, head-to-head win rates (raw, length-controlled
and judged by a second criterion) and the Bradley-Terry leaderboard. Selectors: nothing here writes.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from annotate.models import Choice, Comparison, Judgment, Task
from annotate.oracles import oracle_resolve
from config.errors import Invalid
from generation.models import Policy, Response
from training.models import Evaluation
from training.selectors import judgment_sources
from training.stats import (
    ELO_SCALE,
    MIN_RATED_GAMES,
    ControlledFit,
    Game,
    WinRate,
    bootstrap_interval,
    bradley_terry,
    bradley_terry_controlled,
    length_difference,
    win_rate,
)

SCORE = {Choice.FIRST: 1.0, Choice.SECOND: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: 0.5}


@dataclass(frozen=True)
class PolicyGame:
    comparison_id: int
    a: int  # policy ids: a wrote response_a
    b: int
    score: float  # a's mean score over the comparison's judgments
    length_a: int = 0  # the two answers' lengths in characters (the length-controlled fit's covariate)
    length_b: int = 0
    arena: bool = False  # an arena vote (else a blind eval comparison)


def policy_games(
    *, include_simulated: bool = False, evaluations: QuerySet[Evaluation] | None = None
) -> list[PolicyGame]:
    """Every judged game between two policies, scored for response_a's policy: the blind eval
    comparisons and the arena's votes (only those of ``evaluations`` when given); a policy against
    itself is no game."""
    if evaluations is None:
        played = Q(pk__in=Evaluation.objects.values("comparison")) | Q(campaign__task=Task.ARENA)
    else:
        played = Q(pk__in=evaluations.values("comparison"))
    judged = Judgment.objects.filter(source__in=judgment_sources(include_simulated)).only(
        "comparison_id", "choice"
    )
    comparisons = (
        Comparison.objects.filter(played)
        .select_related("response_a", "response_b", "campaign")
        .prefetch_related(Prefetch("judgments", queryset=judged))
        .order_by("id")
    )
    games = []
    for comparison in comparisons:
        choices = [j.choice for j in comparison.judgments.all()]
        if not choices or comparison.response_a.policy_id == comparison.response_b.policy_id:
            continue  # unjudged, or two samples of one policy (an arena pool of one): no game
        games.append(
            PolicyGame(
                comparison_id=comparison.pk,
                a=comparison.response_a.policy_id,
                b=comparison.response_b.policy_id,
                score=sum(SCORE[c] for c in choices) / len(choices),
                length_a=len(comparison.response_a.text),
                length_b=len(comparison.response_b.text),
                arena=comparison.campaign.task == Task.ARENA,
            )
        )
    return games


def head_to_head(games: Iterable[PolicyGame], *, policy: int, opponent: int, seed: int = 0) -> WinRate | None:
    """``policy``'s win rate over ``opponent`` in their games (ties and both-bad count one half)."""
    scores = [g.score if g.a == policy else 1.0 - g.score for g in games if {g.a, g.b} == {policy, opponent}]
    return win_rate(scores, seed=seed)


def _controlled(sample: Sequence[PolicyGame]) -> ControlledFit:
    """The length-controlled fit of ``sample`` (players are policy ids as strings)."""
    return bradley_terry_controlled(
        [Game(str(g.a), str(g.b), g.score) for g in sample],
        [length_difference(g.length_a, g.length_b) for g in sample],
    )


def _implied_rate(rating: float, other: float) -> float:
    """The win rate two Elo-scale ratings imply."""
    return 1.0 / (1.0 + math.exp(-(rating - other) / ELO_SCALE))


def controlled_head_to_head(
    games: Iterable[PolicyGame], *, policy: int, opponent: int, seed: int = 0, resamples: int = 200
) -> dict[str, float] | None:
    """``policy``'s length-controlled win rate over ``opponent`` in their games: the rate their
    ratings imply at equal answer lengths (``stats.bradley_terry_controlled``), with a 95% bootstrap
    interval, and the judges' length coefficient."""
    mine = [g for g in games if {g.a, g.b} == {policy, opponent}]
    if not mine:
        return None

    def rate_of(fit: ControlledFit) -> float:
        return _implied_rate(fit.ratings[str(policy)], fit.ratings[str(opponent)])

    def rate(sample: Sequence[PolicyGame]) -> float:
        return rate_of(_controlled(sample))

    low, high = bootstrap_interval(mine, rate, resamples=resamples, seed=seed)  # type: ignore[arg-type]
    fit = _controlled(mine)  # the point estimate: one fit for the rate and the coefficient
    return {"rate": rate_of(fit), "low": low, "high": high, "length_coefficient": fit.length}


@dataclass
class LeaderboardRow:
    policy: Policy
    rating: float | None
    low: float | None
    high: float | None
    games: int
    versus_parent: WinRate | None
    drift: dict[str, Any] = field(default_factory=dict)  # from the round that trained it
    both_bad: float | None = None  # share of both-bad verdicts in its blind evaluations
    # length-controlled (Bradley-Terry with the answers' length difference as a covariate): the rating
    # at equal lengths with its interval, and the win rate over the parent that rating implies
    lc_rating: float | None = None
    lc_low: float | None = None
    lc_high: float | None = None
    lc_versus_parent: tuple[float, float, float] | None = None  # rate, low, high
    length_coefficient: tuple[float, float, float] | None = None  # γ and its interval (every row alike)


def both_bad_rates(*, include_simulated: bool = False, policy: Policy | None = None) -> dict[int, float]:
    """Per evaluated policy (or ``policy`` alone), the share of its blind eval judgments that found
    both answers bad."""
    judged = Judgment.objects.filter(
        source__in=judgment_sources(include_simulated), comparison__evaluation__isnull=False
    )
    if policy is not None:
        judged = judged.filter(comparison__evaluation__policy=policy)
    judged = judged.values_list("comparison__evaluation__policy", "choice")
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for policy_id, choice in judged:
        counts[policy_id][0] += choice == Choice.BOTH_BAD
        counts[policy_id][1] += 1
    return {policy_id: bad / total for policy_id, (bad, total) in counts.items()}


def leaderboard(
    *, include_simulated: bool = False, resamples: int = 200, seed: int = 0
) -> list[LeaderboardRow]:
    """Bradley-Terry ratings (Elo scale, centred on 1000) with 95% bootstrap intervals (games
    resampled with replacement, ratings refitted), and each policy's win rate over its parent; beside
    them the length-controlled fit (``stats.bradley_terry_controlled``: the length difference of the
    two answers as a covariate), its ratings, the win rate over the parent they imply at equal
    lengths, and the judges' length coefficient, each with the same bootstrap's interval."""
    games = policy_games(include_simulated=include_simulated)
    policies = list(Policy.objects.select_related("parent", "trained_by").order_by("id"))
    both_bad = both_bad_rates(include_simulated=include_simulated)

    def fit(sample: Sequence[PolicyGame]) -> dict[str, float]:
        return bradley_terry([Game(str(g.a), str(g.b), g.score) for g in sample])

    ratings, controlled = fit(games), _controlled(games)
    draws: dict[str, list[float]] = defaultdict(list)
    lc_draws: list[ControlledFit] = []
    rng = random.Random(seed)
    for _ in range(resamples if games else 0):
        sample = [games[rng.randrange(len(games))] for _ in games]
        for player, value in fit(sample).items():
            draws[player].append(value)
        lc_draws.append(_controlled(sample))

    def interval(values: list[float]) -> tuple[float, float] | tuple[None, None]:
        spread = sorted(values)
        if not spread:
            return None, None
        return spread[int(0.025 * (len(spread) - 1))], spread[int(0.975 * (len(spread) - 1) + 0.5)]

    length_coefficient = (controlled.length, *interval([d.length for d in lc_draws])) if games else None
    played = Counter(p for g in games for p in (g.a, g.b))
    rows = []
    for policy in policies:
        key = str(policy.pk)
        rated = played.get(policy.pk, 0) >= MIN_RATED_GAMES  # else too few games for an honest interval
        low, high = interval(draws.get(key, []) if rated else [])
        rows.append(
            LeaderboardRow(
                policy=policy,
                rating=ratings.get(key),
                low=low,
                high=high,
                games=played.get(policy.pk, 0),
                versus_parent=(
                    head_to_head(games, policy=policy.pk, opponent=policy.parent_id)
                    if policy.parent_id
                    else None
                ),
                drift=getattr(getattr(policy, "trained_by", None), "drift", {}) or {},
                both_bad=both_bad.get(policy.pk),
            )
        )
        row = rows[-1]
        row.lc_rating = controlled.ratings.get(key)
        row.lc_low, row.lc_high = interval(
            [d.ratings[key] for d in lc_draws if key in d.ratings] if rated else []
        )
        row.length_coefficient = length_coefficient
        parent = str(policy.parent_id)
        if rated and policy.parent_id and row.lc_rating is not None and parent in controlled.ratings:
            implied = [
                _implied_rate(d.ratings[key], d.ratings[parent])
                for d in lc_draws
                if {key, parent} <= set(d.ratings)
            ]
            low, high = interval(implied)
            if low is not None and high is not None:
                row.lc_versus_parent = (_implied_rate(row.lc_rating, controlled.ratings[parent]), low, high)
    rows.sort(key=lambda r: (r.rating is None, -(r.rating or 0.0), r.policy.pk))
    return rows


# --- A second judge ----------------------------------------------------------------------------------

FLUENCY_CHECK = "fluency"
FLUENCY_MARGIN = 0.05  # nats/token: closer than this, the two answers are equally fluent to the base


def _fluency_verdict(first: Response, second: Response) -> str:
    """The answer the base finds likelier per token wins (``base_nll``, measured with drift)."""
    if (
        first.base_nll is None
        or second.base_nll is None
        or abs(first.base_nll - second.base_nll) < FLUENCY_MARGIN
    ):
        return Choice.TIE
    return Choice.FIRST if first.base_nll < second.base_nll else Choice.SECOND


def check_win_rate(
    *, evaluations: QuerySet[Evaluation], policy: Policy, opponent: Policy, check: str, seed: int = 0
) -> WinRate | None:
    """``policy``'s win rate over ``opponent`` on the same blind comparisons, judged by a second
    criterion: ``fluency`` (the base's per-token NLL of each answer: lower wins) or any oracle
    (``annotate.oracles``: a name or a dotted path). Nothing is stored: it reads beside the training
    judge's win rate, so a judge that is being gamed shows in the numbers."""
    oracle = None if check == FLUENCY_CHECK else oracle_resolve(check)
    games = []
    for evaluation in evaluations.filter(policy=policy, opponent=opponent).select_related(
        "comparison__prompt", "comparison__response_a", "comparison__response_b"
    ):
        comparison = evaluation.comparison
        first, second = comparison.response_a, comparison.response_b
        if oracle is None:
            verdict = _fluency_verdict(first, second)
        else:
            verdict = oracle(comparison.prompt.as_messages()[-1]["content"], first.text, second.text)
        if verdict not in SCORE:
            raise Invalid(f"check {check!r} answered {verdict!r}; expected one of {', '.join(SCORE)}")
        games.append(PolicyGame(comparison.pk, first.policy_id, second.policy_id, SCORE[verdict]))
    return head_to_head(games, policy=policy.pk, opponent=opponent.pk, seed=seed)


# --- The loop ----------------------------------------------------------------------------------------
