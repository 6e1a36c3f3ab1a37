"""How far an AI judge agrees with people: pure functions of plain values, no Django.

An AI judge reads each comparison twice, its answers in both orders (a judge's position bias depends
on the item). Each reading gives the probability that the answer shown first is better, from the
log-probabilities of the verdict tokens where the endpoint returns them (``verdict_probability``);
``both_orders`` turns the two readings into one verdict on the comparison's own order, its
probability and whether the two orders agreed.

Measured against the people's majority on the comparisons both judged (``judge_agreement``):
Cohen's kappa (scikit-learn) with a percentile-bootstrap interval over comparisons, the confusion
matrix, the share of order-consistent verdicts, calibration (expected calibration error of the
probability that the first answer is better, on comparisons people decided), and length bias (how
often the judge and the people chose the longer answer, on comparisons both decided).

``annotate.services.ai_judges`` runs judges and reads these measures off the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from annotate.reliability import bootstrap_interval

FIRST, SECOND, TIE, BOTH_BAD = "first", "second", "tie", "both_bad"  # annotate.models.Choice's values
LABELS = (FIRST, SECOND, TIE, BOTH_BAD)
CALIBRATION_BINS = 10


def verdict_probability(
    top_logprobs: Mapping[str, float], first: str = "A", second: str = "B"
) -> float | None:
    """The probability that the answer shown first is better, from the log-probabilities of the
    verdict token's candidates (``{"A": -0.1, "B": -2.4, ...}``): p(first) / (p(first) + p(second)),
    candidates compared without surrounding spaces and case. None when neither verdict is among them
    (the endpoint gave no log-probabilities, or the model answered something else)."""
    mass = {first.lower(): 0.0, second.lower(): 0.0}
    for token, logprob in top_logprobs.items():
        key = token.strip().lower()
        if key in mass:
            mass[key] += math.exp(logprob)
    total = mass[first.lower()] + mass[second.lower()]
    return mass[first.lower()] / total if total > 0 else None


@dataclass(frozen=True)
class OrderedVerdict:
    """A judge's verdict on one comparison from its two readings."""

    choice: str  # FIRST or SECOND, in the comparison's own order (response_a first)
    probability_first: float  # that response_a is better, the two readings averaged
    consistent: bool  # both readings chose the same answer


def both_orders(first_shown_first: float, first_shown_second: float) -> OrderedVerdict:
    """One verdict from two readings: ``first_shown_first``, the probability that the comparison's
    first answer is better when it was shown first; ``first_shown_second``, the probability that the
    answer shown first was better when the comparison's second answer was shown first (so response_a
    wins that reading below 0.5). Consistent when both readings favour the same answer; the verdict
    follows the averaged probability (0.5 exactly goes to the first answer)."""
    a_first = first_shown_first
    a_second = 1.0 - first_shown_second
    probability = (a_first + a_second) / 2
    consistent = (a_first >= 0.5) == (a_second >= 0.5)
    return OrderedVerdict(FIRST if probability >= 0.5 else SECOND, probability, consistent)


@dataclass(frozen=True)
class JudgedPair:
    """One comparison judged by the judge and by people: the people's majority (None: no majority),
    the judge's verdict, and the two answers' lengths (characters or tokens, the same for all)."""

    people: str | None
    judge: OrderedVerdict
    length_first: int
    length_second: int


@dataclass(frozen=True)
class Agreement:
    compared: int  # comparisons with a people's majority and a judge verdict
    kappa: float | None  # Cohen's kappa over them (None: undefined, one label only)
    kappa_interval: tuple[float, float] | None  # 95% percentile bootstrap over comparisons
    labels: tuple[str, ...]  # the confusion matrix's rows (people) and columns (judge), in order
    confusion: list[list[int]]
    consistency: float | None  # share of the judge's verdicts both orders agreed on (all judged)
    calibration_error: float | None  # ECE of the probability that the first answer is better
    judge_longer: float | None  # share of decided comparisons where the judge chose the longer answer
    people_longer: float | None  # the same for the people, on the same comparisons


def cohen_kappa(people: Sequence[str], judge: Sequence[str]) -> float | None:
    """Cohen's kappa of two label sequences (scikit-learn); None when undefined (a single label in
    both, so chance agreement is 1)."""
    if not people:
        return None
    if len(set(people) | set(judge)) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    value = float(cohen_kappa_score(list(people), list(judge), labels=list(LABELS)))
    return None if math.isnan(value) else value


def calibration_error(
    probabilities: Sequence[float], outcomes: Sequence[bool], bins: int = CALIBRATION_BINS
) -> float | None:
    """Expected calibration error of a binary forecast: ``probabilities`` that the first answer is
    better, ``outcomes`` whether it was. Each forecast's confidence is that of the side it favours
    (max(p, 1-p)); forecasts are binned by confidence in ``bins`` equal-width bins of [0, 1] and the
    error is the bins' |accuracy - mean confidence| weighted by their share."""
    if not probabilities:
        return None
    sums: dict[int, list[float]] = {}
    for p, outcome in zip(probabilities, outcomes, strict=True):
        confidence = max(p, 1.0 - p)
        correct = (p >= 0.5) == outcome
        b = min(int(confidence * bins), bins - 1)
        total = sums.setdefault(b, [0.0, 0.0, 0.0])
        total[0] += 1
        total[1] += confidence
        total[2] += float(correct)
    n = len(probabilities)
    return sum(count / n * abs(hits / count - conf / count) for count, conf, hits in sums.values())


def judge_agreement(pairs: Sequence[JudgedPair], *, resamples: int = 1000, seed: int = 0) -> Agreement:
    """The judge against the people's majority on ``pairs`` (see the module's docstring)."""
    decided = [p for p in pairs if p.people is not None]
    people = [p.people for p in decided]
    judge = [p.judge.choice for p in decided]
    kappa = cohen_kappa(people, judge)  # type: ignore[arg-type]
    interval = None
    if kappa is not None and len(decided) >= 2:

        def statistic(sample: Sequence[object]) -> float:
            value = cohen_kappa([s.people for s in sample], [s.judge.choice for s in sample])  # type: ignore[attr-defined]
            return 0.0 if value is None else value

        interval = bootstrap_interval(decided, statistic, resamples=resamples, seed=seed)
    confusion = [
        [sum(1 for p, j in zip(people, judge, strict=True) if p == row and j == col) for col in LABELS]
        for row in LABELS
    ]
    sides = [p for p in decided if p.people in (FIRST, SECOND)]
    ece = calibration_error([p.judge.probability_first for p in sides], [p.people == FIRST for p in sides])
    unequal = [p for p in sides if p.length_first != p.length_second]
    judge_longer = people_longer = None
    if unequal:
        longer = [FIRST if p.length_first > p.length_second else SECOND for p in unequal]
        judge_longer = sum(p.judge.choice == side for p, side in zip(unequal, longer, strict=True)) / len(
            unequal
        )
        people_longer = sum(p.people == side for p, side in zip(unequal, longer, strict=True)) / len(unequal)
    return Agreement(
        compared=len(decided),
        kappa=kappa,
        kappa_interval=interval,
        labels=LABELS,
        confusion=confusion,
        consistency=sum(p.judge.consistent for p in pairs) / len(pairs) if pairs else None,
        calibration_error=ece,
        judge_longer=judge_longer,
        people_longer=people_longer,
    )
