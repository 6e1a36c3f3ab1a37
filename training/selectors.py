"""Reads for the staff dashboard, the leaderboard and the loop's report. Never writes.

Judgments are human (and imported) by default; simulated ones count only when asked, so a demo's
scripted judges never inflate the statistics of real annotators.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Prefetch
from django.utils import timezone

from annotate.models import Choice, Comparison, Judgment, Kind, Side, Source
from generation.models import Policy
from training.models import TrainingRound
from training.stats import (
    Game,
    WinRate,
    bradley_terry,
    krippendorff_alpha_nominal,
    median,
    win_rate,
)

SCORE = {Choice.FIRST: 1.0, Choice.SECOND: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: 0.5}


def _sources(include_simulated: bool) -> list[str]:
    return [Source.HUMAN, Source.IMPORTED] + ([Source.SIMULATED] if include_simulated else [])


# --- Policies: blind eval comparisons -------------------------------------------------------------


@dataclass(frozen=True)
class PolicyGame:
    comparison_id: int
    a: int  # policy ids: a wrote response_a
    b: int
    score: float  # a's mean score over the comparison's judgments


def policy_games(*, include_simulated: bool = False, round_label: str | None = None) -> list[PolicyGame]:
    """Every judged eval comparison between two policies, scored for response_a's policy."""
    comparisons = Comparison.objects.filter(
        kind=Kind.EVAL, response_a__policy__isnull=False, response_b__policy__isnull=False
    )
    if round_label is not None:
        comparisons = comparisons.filter(round_label=round_label)
    judged = Judgment.objects.filter(source__in=_sources(include_simulated)).only("comparison_id", "choice")
    games = []
    for comparison in (
        comparisons.select_related("response_a", "response_b")
        .prefetch_related(Prefetch("judgments", queryset=judged))
        .order_by("id")
    ):
        choices = [j.choice for j in comparison.judgments.all()]
        if not choices or comparison.response_a.policy_id == comparison.response_b.policy_id:
            continue
        games.append(
            PolicyGame(
                comparison_id=comparison.pk,
                a=comparison.response_a.policy_id,
                b=comparison.response_b.policy_id,
                score=sum(SCORE[c] for c in choices) / len(choices),
            )
        )
    return games


def head_to_head(games: Iterable[PolicyGame], *, policy: int, opponent: int, seed: int = 0) -> WinRate | None:
    """``policy``'s win rate over ``opponent`` in their games (ties and both-bad count one half)."""
    scores = [g.score if g.a == policy else 1.0 - g.score for g in games if {g.a, g.b} == {policy, opponent}]
    return win_rate(scores, seed=seed)


@dataclass
class LeaderboardRow:
    policy: Policy
    rating: float | None
    low: float | None
    high: float | None
    games: int
    versus_parent: WinRate | None


def leaderboard(
    *, include_simulated: bool = False, resamples: int = 200, seed: int = 0
) -> list[LeaderboardRow]:
    """Bradley-Terry ratings (Elo scale, centred on 1000) with 95% bootstrap intervals (games
    resampled with replacement, ratings refitted), and each policy's win rate over its parent."""
    games = policy_games(include_simulated=include_simulated)
    policies = list(Policy.objects.select_related("parent").order_by("id"))

    def fit(sample: Sequence[PolicyGame]) -> dict[str, float]:
        return bradley_terry([Game(str(g.a), str(g.b), g.score) for g in sample])

    ratings = fit(games)
    draws: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(seed)
    for _ in range(resamples if games else 0):
        for player, value in fit([games[rng.randrange(len(games))] for _ in games]).items():
            draws[player].append(value)
    played = Counter(p for g in games for p in (g.a, g.b))
    rows = []
    for policy in policies:
        key = str(policy.pk)
        spread = sorted(draws.get(key, []))
        low = spread[int(0.025 * (len(spread) - 1))] if spread else None
        high = spread[int(0.975 * (len(spread) - 1) + 0.5)] if spread else None
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
            )
        )
    rows.sort(key=lambda r: (r.rating is None, -(r.rating or 0.0), r.policy.pk))
    return rows


# --- Annotation quality, per comparison round ------------------------------------------------------


@dataclass
class AnnotatorStats:
    username: str
    judgments: int = 0
    agreed: int = 0  # with the majority of the others' votes, where they have one
    compared: int = 0
    gold_correct: int = 0
    gold_judged: int = 0
    left_chosen: int = 0
    decided: int = 0  # judgments that picked a side
    times: list[float] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_judged if self.gold_judged else None

    @property
    def left_share(self) -> float | None:
        return self.left_chosen / self.decided if self.decided else None

    @property
    def median_seconds(self) -> float | None:
        return median(self.times)


@dataclass
class RoundStats:
    label: str
    comparisons: int = 0
    judged: int = 0  # comparisons with at least one judgment
    complete: int = 0  # comparisons with all the judgments their overlap wants
    judgments: int = 0
    last_hour: int = 0
    annotators: int = 0
    active_last_hour: int = 0
    alpha: float | None = None
    alpha_units: int = 0  # comparisons with several judgments
    gold_accuracy: float | None = None
    left_share: float | None = None  # position bias: 0.5 is none
    tie_rate: float | None = None
    both_bad_rate: float | None = None
    median_seconds: float | None = None

    @property
    def queued(self) -> int:
        return self.comparisons - self.complete


def _leave_one_out_majority(choices: Sequence[str]) -> str | None:
    counts = Counter(choices).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _left_chosen(choice: str, left: str) -> bool:
    return (choice == Choice.FIRST and left == Side.FIRST) or (
        choice == Choice.SECOND and left == Side.SECOND
    )


def annotation_stats(
    *, include_simulated: bool = False, now: datetime | None = None
) -> tuple[list[RoundStats], list[AnnotatorStats]]:
    """Per comparison round label, and per annotator: progress, throughput, agreement (Krippendorff's
    alpha over comparisons with several judgments; each annotator against the majority of the
    others), gold accuracy, position bias (share of decisive verdicts for the left side), tie and
    both-bad rates, median time on task."""
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)
    rounds: dict[str, RoundStats] = {}
    for row in Comparison.objects.values("round_label").annotate(n=Count("id")).order_by("round_label"):
        rounds[row["round_label"]] = RoundStats(label=row["round_label"] or "(none)", comparisons=row["n"])
    judgments = (
        Judgment.objects.filter(source__in=_sources(include_simulated))
        .values(
            "comparison_id",
            "comparison__round_label",
            "comparison__kind",
            "comparison__gold_answer",
            "comparison__overlap",
            "annotator_id",
            "annotator__username",
            "choice",
            "left",
            "time_on_task_ms",
            "created_at",
        )
        .order_by("id")
    )
    by_comparison: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for j in judgments.iterator(chunk_size=2000):
        by_comparison[j["comparison_id"]].append(j)
    per_round: dict[str, list[dict[str, Any]]] = defaultdict(list)
    per_annotator: dict[int, AnnotatorStats] = {}
    units: dict[str, list[list[int]]] = defaultdict(list)
    for votes in by_comparison.values():
        label = votes[0]["comparison__round_label"]
        stats = rounds[label]
        stats.judged += 1
        stats.complete += (
            votes[0]["comparison__kind"] == Kind.GOLD or len(votes) >= votes[0]["comparison__overlap"]
        )
        per_round[label].extend(votes)
        if len(votes) >= 2:
            counts = Counter(v["choice"] for v in votes)
            units[label].append([counts.get(c, 0) for c in Choice.values])
        for i, vote in enumerate(votes):
            person = per_annotator.setdefault(
                vote["annotator_id"], AnnotatorStats(username=vote["annotator__username"])
            )
            person.judgments += 1
            if vote["time_on_task_ms"]:
                person.times.append(vote["time_on_task_ms"] / 1000)
            if vote["choice"] in (Choice.FIRST, Choice.SECOND) and vote["left"]:
                person.decided += 1
                person.left_chosen += _left_chosen(vote["choice"], vote["left"])
            if vote["comparison__kind"] == Kind.GOLD:
                person.gold_judged += 1
                person.gold_correct += vote["choice"] == vote["comparison__gold_answer"]
                continue
            others = _leave_one_out_majority([v["choice"] for k, v in enumerate(votes) if k != i])
            if others is not None:
                person.compared += 1
                person.agreed += vote["choice"] == others
    for label, votes in per_round.items():
        stats = rounds[label]
        stats.judgments = len(votes)
        stats.last_hour = sum(1 for v in votes if v["created_at"] >= hour_ago)
        stats.annotators = len({v["annotator_id"] for v in votes})
        stats.active_last_hour = len({v["annotator_id"] for v in votes if v["created_at"] >= hour_ago})
        stats.alpha = krippendorff_alpha_nominal(units[label])
        stats.alpha_units = len(units[label])
        gold = [v for v in votes if v["comparison__kind"] == Kind.GOLD]
        stats.gold_accuracy = (
            sum(v["choice"] == v["comparison__gold_answer"] for v in gold) / len(gold) if gold else None
        )
        decided = [v for v in votes if v["choice"] in (Choice.FIRST, Choice.SECOND) and v["left"]]
        stats.left_share = (
            sum(_left_chosen(v["choice"], v["left"]) for v in decided) / len(decided) if decided else None
        )
        stats.tie_rate = sum(v["choice"] == Choice.TIE for v in votes) / len(votes)
        stats.both_bad_rate = sum(v["choice"] == Choice.BOTH_BAD for v in votes) / len(votes)
        stats.median_seconds = median([v["time_on_task_ms"] / 1000 for v in votes if v["time_on_task_ms"]])
    people = sorted(per_annotator.values(), key=lambda p: (-p.judgments, p.username))
    return list(rounds.values()), people


def rounds_recent(*, limit: int = 50) -> list[TrainingRound]:
    return list(
        TrainingRound.objects.select_related("policy", "output_policy", "started_by").order_by("-id")[:limit]
    )
