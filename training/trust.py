"""Whom to trust: every annotator, person or AI judge, on one page. Reads only.

For each: judgments, median time per judgment, agreement with the majority of the others on the same
comparison as Cohen's kappa (chance-corrected; raw share beside it), the share of decisive verdicts
for the answer shown first ("left"; a judge: the answer shown as A), gold accuracy, Dawid-Skene
reliability (people and judges fitted together, a judge an annotator of its own), and agreement week by
week. Flags for the suspicious, each with its rule:

- **too fast**: at least ``MIN_FLAGGED`` timed judgments, and the median of (time on task / the time
  the texts take to read at ``READING_WPM`` words a minute) under ``FAST_SHARE``;
- **one side**: at least ``MIN_FLAGGED`` decisive verdicts, and over ``ONE_SIDE`` of them for one
  position;
- **at chance**: kappa against the others' majority at most ``CHANCE_KAPPA`` over at least
  ``MIN_COMPARED`` comparisons.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models.functions import Length
from django.utils import timezone

from annotate.judge_agreement import cohen_kappa
from annotate.models import AIVerdict, Choice, Judgment, Kind
from annotate.reliability import left_chosen, reliability_estimate
from annotate.selectors import majority
from training.selectors import AnnotatorStats, judgment_sources
from training.stats import median

READING_WPM = 250  # words a minute a careful reader takes in
CHARS_PER_WORD = 6  # characters a word, spaces included (English prose)
FAST_SHARE = 0.25  # a median under this share of the reading time: too fast to have read them
ONE_SIDE = 0.9
CHANCE_KAPPA = 0.1
MIN_FLAGGED = 10
MIN_COMPARED = 20
WEEKS = 6


@dataclass
class Trust(AnnotatorStats):
    """The dashboard's figures of one annotator (``AnnotatorStats``: judgments, times, agreement,
    gold, position), with what this page adds; an AI judge's position is the answer shown as A."""

    kind: str = "person"  # or "AI judge"
    reading: list[float] = field(default_factory=list)  # time on task / reading time, per timed judgment
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (their verdict, the others' majority)
    weeks: dict[date, list[int]] = field(default_factory=dict)  # week's Monday → [agreed, compared]

    @property
    def name(self) -> str:
        return self.username

    @property
    def kappa(self) -> float | None:
        return cohen_kappa([a for a, _ in self.pairs], [b for _, b in self.pairs]) if self.pairs else None

    @property
    def by_week(self) -> list[tuple[date, float | None, int]]:
        """The last ``WEEKS`` weeks with judgments compared: (Monday, agreement, compared)."""
        return [
            (week, agreed / compared if compared else None, compared)
            for week, (agreed, compared) in sorted(self.weeks.items())[-WEEKS:]
        ]

    @property
    def flags(self) -> list[str]:
        found = []
        if len(self.reading) >= MIN_FLAGGED and (median(self.reading) or 1.0) < FAST_SHARE:
            found.append(
                f"too fast: half their judgments took under {FAST_SHARE:.0%} of the time the texts take to read"
            )
        if self.decided >= MIN_FLAGGED and max(self.left_share or 0, 1 - (self.left_share or 0)) > ONE_SIDE:
            side = "left (first)" if (self.left_share or 0) > 0.5 else "right (second)"
            found.append(
                f"one side: {max(self.left_share or 0, 1 - (self.left_share or 0)):.0%} for the {side}"
            )
        if len(self.pairs) >= MIN_COMPARED and self.kappa is not None and self.kappa <= CHANCE_KAPPA:
            found.append(f"at chance: kappa {self.kappa:.2f} against the others' majority")
        return found


def _monday(moment: datetime) -> date:
    day = timezone.localtime(moment).date()
    return day - timedelta(days=day.weekday())


def _reading_seconds(characters: int) -> float:
    return max(characters / CHARS_PER_WORD / READING_WPM * 60, 1.0)


def trust_rows(*, include_simulated: bool = False) -> list[Trust]:
    """Every annotator and AI judge with judgments on pairs or thumbs, most judgments first."""
    votes = (
        Judgment.objects.filter(source__in=judgment_sources(include_simulated))
        .annotate(
            texts=Length("comparison__prompt__text")
            + Length("comparison__response_a__text")
            + Length("comparison__response_b__text")
        )
        .values_list(
            "comparison_id",
            "annotator_id",
            "annotator__username",
            "choice",
            "first_choice",
            "left",
            "time_on_task_ms",
            "created_at",
            "comparison__kind",
            "comparison__gold_answer",
            "texts",
        )
        .order_by("id")
    )
    rows: dict[int, Trust] = {}
    by_comparison: dict[int, list[tuple[int, str]]] = defaultdict(
        list
    )  # comparison → [(annotator key, choice)]
    when: dict[tuple[int, int], datetime] = {}
    gold: dict[int, str] = {}
    for cid, who, username, choice, first, left, ms, created, kind, answer, texts in votes.iterator(
        chunk_size=2000
    ):
        person = rows.setdefault(who, Trust(username=username))
        person.judgments += 1
        if ms:
            person.times.append(ms / 1000)
            if texts:
                person.reading.append(ms / 1000 / _reading_seconds(texts))
        if choice in (Choice.FIRST, Choice.SECOND) and left:
            person.decided += 1
            person.left_chosen += left_chosen(choice, left)
        if kind == Kind.GOLD:
            person.gold_judged += 1
            person.gold_correct += first == answer
            if answer:
                gold[cid] = answer
            by_comparison[cid].append((who, first or choice))
        else:
            by_comparison[cid].append((who, choice))
        when[(cid, who)] = created
    for verdict in AIVerdict.objects.select_related("judge").order_by("id"):
        key = -verdict.judge_id  # a judge: an annotator of its own (its id negated)
        judge = rows.setdefault(key, Trust(username=verdict.judge.name, kind="AI judge"))
        judge.judgments += 1
        for reading in verdict.readings:  # position bias: the answer shown as A, each reading
            judge.decided += 1
            judge.left_chosen += reading["probability_shown_first"] >= 0.5
        by_comparison[verdict.comparison_id].append((key, verdict.choice))
        when[(verdict.comparison_id, key)] = verdict.created_at
    for cid, cast in by_comparison.items():
        people = [(who, choice) for who, choice in cast if who > 0]
        for who, choice in cast:
            others, _ = majority([c for w, c in people if w != who])
            if others is None or cid in gold:
                continue
            row = rows[who]
            row.pairs.append((choice, others))
            row.compared += 1
            row.agreed += choice == others
            week = row.weeks.setdefault(_monday(when[(cid, who)]), [0, 0])
            week[0] += choice == others
            week[1] += 1
    fitted = reliability_estimate(
        ((cid, who, choice) for cid, cast in by_comparison.items() for who, choice in cast), gold=gold
    )
    for key, row in rows.items():
        row.reliability = fitted.annotators.get(key)
    return sorted(rows.values(), key=lambda r: (-r.judgments, r.username))
