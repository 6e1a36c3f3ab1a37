"""Reads for the staff dashboard and the round page: annotation quality per campaign and per
annotator, recent rounds, a policy's least likely held-out answers. Never writes. (The leaderboard and win rates live in ``evaluation``.)

Judgments are human (and imported) by default; simulated ones count only when asked, so a demo's
scripted judges never inflate the statistics of real annotators.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from annotate.models import Campaign, Choice, Comparison, Judgment, Kind, Source
from annotate.reliability import krippendorff_alpha_nominal, left_chosen, reliability_estimate
from annotate.selectors import majority
from generation.models import Policy, Response
from generation.services import policy_root
from training.drift import percentile
from training.models import TrainingRound
from training.stats import median


def judgment_sources(include_simulated: bool) -> list[str]:
    """The judgments figures count: people's and imported ones, and the scripted judges' when asked."""
    return [Source.HUMAN, Source.IMPORTED] + ([Source.SIMULATED] if include_simulated else [])


# --- Annotation quality, per campaign ------------------------------------------------------


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
    reliability: float | None = None  # Dawid-Skene: P(gives the true verdict), from every judgment

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
class CampaignStats:
    campaign: Campaign
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


def _vote(judgment: dict[str, Any]) -> str:
    """The choice a judgment counts with where it can weigh labels: on gold, the first one given."""
    gold = judgment["comparison__kind"] == Kind.GOLD
    return str(judgment["first_choice"] or judgment["choice"]) if gold else str(judgment["choice"])


def annotation_stats(
    *, include_simulated: bool = False, now: datetime | None = None
) -> tuple[list[CampaignStats], list[AnnotatorStats]]:
    """Per campaign, and per annotator: progress, throughput, agreement (Krippendorff's
    alpha over comparisons with several judgments; each annotator against the majority of the
    others), gold accuracy, each annotator's Dawid-Skene reliability, position bias (share of decisive verdicts for the left side), tie and
    both-bad rates, median time on task."""
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)
    counts = dict(Comparison.objects.values_list("campaign").annotate(n=Count("id")).order_by())
    campaigns: dict[int, CampaignStats] = {
        campaign.pk: CampaignStats(campaign=campaign, comparisons=counts.get(campaign.pk, 0))
        for campaign in Campaign.objects.order_by("-priority", "id")
    }
    judgments = (
        Judgment.objects.filter(source__in=judgment_sources(include_simulated))
        .values(
            "comparison_id",
            "comparison__campaign_id",
            "comparison__kind",
            "comparison__gold_answer",
            "comparison__overlap",
            "annotator_id",
            "annotator__username",
            "choice",
            "first_choice",
            "left",
            "time_on_task_ms",
            "created_at",
        )
        .order_by("id")
    )
    by_comparison: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for j in judgments.iterator(chunk_size=2000):
        by_comparison[j["comparison_id"]].append(j)
    per_campaign: dict[int, list[dict[str, Any]]] = defaultdict(list)
    per_annotator: dict[int, AnnotatorStats] = {}
    units: dict[int, list[list[int]]] = defaultdict(list)
    for votes in by_comparison.values():
        campaign_id = votes[0]["comparison__campaign_id"]
        stats = campaigns[campaign_id]
        stats.judged += 1
        stats.complete += (
            votes[0]["comparison__kind"] == Kind.GOLD or len(votes) >= votes[0]["comparison__overlap"]
        )
        per_campaign[campaign_id].extend(votes)
        if len(votes) >= 2:
            counts = Counter(v["choice"] for v in votes)
            units[campaign_id].append([counts.get(c, 0) for c in Choice.values])
        for i, vote in enumerate(votes):
            person = per_annotator.setdefault(
                vote["annotator_id"], AnnotatorStats(username=vote["annotator__username"])
            )
            person.judgments += 1
            if vote["time_on_task_ms"]:
                person.times.append(vote["time_on_task_ms"] / 1000)
            if vote["choice"] in (Choice.FIRST, Choice.SECOND) and vote["left"]:
                person.decided += 1
                person.left_chosen += left_chosen(vote["choice"], vote["left"])
            if vote["comparison__kind"] == Kind.GOLD:
                person.gold_judged += 1
                person.gold_correct += vote["first_choice"] == vote["comparison__gold_answer"]
                continue
            others, _ = majority([v["choice"] for k, v in enumerate(votes) if k != i])
            if others is not None:
                person.compared += 1
                person.agreed += vote["choice"] == others
    for campaign_id, votes in per_campaign.items():
        stats = campaigns[campaign_id]
        stats.judgments = len(votes)
        stats.last_hour = sum(1 for v in votes if v["created_at"] >= hour_ago)
        stats.annotators = len({v["annotator_id"] for v in votes})
        stats.active_last_hour = len({v["annotator_id"] for v in votes if v["created_at"] >= hour_ago})
        stats.alpha = krippendorff_alpha_nominal(units[campaign_id])
        stats.alpha_units = len(units[campaign_id])
        gold = [v for v in votes if v["comparison__kind"] == Kind.GOLD]
        stats.gold_accuracy = (
            sum(v["first_choice"] == v["comparison__gold_answer"] for v in gold) / len(gold) if gold else None
        )
        decided = [v for v in votes if v["choice"] in (Choice.FIRST, Choice.SECOND) and v["left"]]
        stats.left_share = (
            sum(left_chosen(v["choice"], v["left"]) for v in decided) / len(decided) if decided else None
        )
        stats.tie_rate = sum(v["choice"] == Choice.TIE for v in votes) / len(votes)
        stats.both_bad_rate = sum(v["choice"] == Choice.BOTH_BAD for v in votes) / len(votes)
        stats.median_seconds = median([v["time_on_task_ms"] / 1000 for v in votes if v["time_on_task_ms"]])
    reliability = reliability_estimate(
        (
            # on gold, the answer first given: revising one after learning it was wrong buys nothing
            (v["comparison_id"], v["annotator_id"], _vote(v))
            for votes in by_comparison.values()
            for v in votes
        ),
        gold={
            comparison_id: votes[0]["comparison__gold_answer"]
            for comparison_id, votes in by_comparison.items()
            if votes[0]["comparison__kind"] == Kind.GOLD and votes[0]["comparison__gold_answer"]
        },
    )
    for annotator_id, person in per_annotator.items():
        person.reliability = reliability.annotators.get(annotator_id)
    people = sorted(per_annotator.values(), key=lambda p: (-p.judgments, p.username))
    return list(campaigns.values()), people


def rounds_recent(*, limit: int = 50) -> list[TrainingRound]:
    return list(
        TrainingRound.objects.select_related("policy", "output_policy", "started_by").order_by("-id")[:limit]
    )


# --- Drift, answer by answer -----------------------------------------------------------------


@dataclass(frozen=True)
class UnlikelyAnswer:
    """One held-out answer of a policy beside the base's answer to the same prompt."""

    answer: Response
    base_answer: Response | None
    beyond_p95: bool  # its NLL under the base exceeds the base's own 95th percentile


def heldout_least_likely(*, policy: Policy, limit: int = 5) -> list[UnlikelyAnswer]:
    """``policy``'s held-out answers the base of its lineage finds least likely per token (highest
    ``base_nll``, measured with the round's drift), first: the answers the fluency figures are made
    of, to read before trusting or promoting the policy. Empty for a base, or before drift is measured."""
    base = policy_root(policy)
    if base.pk == policy.pk:
        return []
    answers = list(
        Response.objects.filter(policy=policy, heldout=True, base_nll__isnull=False)
        .select_related("prompt")
        .order_by("-base_nll", "id")[:limit]
    )
    theirs = Response.objects.filter(policy=base, heldout=True, base_nll__isnull=False)
    own = list(theirs.values_list("base_nll", flat=True))
    p95 = percentile(own, 95) if own else None
    by_prompt = {r.prompt_id: r for r in theirs.filter(prompt__in=[a.prompt_id for a in answers])}
    return [
        UnlikelyAnswer(
            answer=a,
            base_answer=by_prompt.get(a.prompt_id),
            beyond_p95=p95 is not None and a.base_nll > p95,
        )
        for a in answers
    ]
