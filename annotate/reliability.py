"""How far each annotator's verdicts can be trusted, and what each comparison's true verdict likely is.

Dawid-Skene (crowd-kit's EM implementation): every annotator has a confusion matrix (the chance of
answering each verdict given the true one) and every comparison a posterior over the true verdict,
fitted together from all overlapping judgments; gold comparisons are held at their known answer.
An annotator's **reliability** is the chance they give the true verdict, the diagonal of their
confusion matrix weighted by how common each verdict is. A comparison's **confidence** in a side is
the posterior that this side beats the other, given that one of them wins.

Beside it the plainer measures every report of the annotators shares: Krippendorff's alpha over
per-comparison vote counts (the ``krippendorff`` package) and whether a verdict went to the answer
shown on the left (position bias). Pure functions of plain values: no Django. crowd-kit (pandas,
scikit-learn) is imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

FIRST, SECOND = "first", "second"  # Choice values for the two sides (annotate.models.Choice)


def krippendorff_alpha_nominal(counts: Sequence[Sequence[int]]) -> float | None:
    """Alpha over units (comparisons) given as counts per category; units with fewer than two
    judgments carry no agreement information and are ignored. None when alpha is undefined (fewer
    than two pairable judgments, or every judgment in one category)."""
    usable = [row for row in counts if sum(row) >= 2]
    if not usable:
        return None
    matrix = np.asarray(usable, dtype=float)
    if np.count_nonzero(matrix.sum(axis=0)) < 2:  # one category only: no disagreement is possible
        return None
    import krippendorff

    value = float(krippendorff.alpha(value_counts=matrix, level_of_measurement="nominal"))
    return None if math.isnan(value) else value


def left_chosen(choice: str, left: str) -> bool:
    """Whether ``choice`` (first/second) went to the response shown on the left (``left``: which was)."""
    return (choice == FIRST and left == FIRST) or (choice == SECOND and left == SECOND)


@dataclass(frozen=True)
class Reliability:
    posteriors: dict[int, dict[str, float]] = field(default_factory=dict)  # comparison → verdict → p
    annotators: dict[int, float] = field(default_factory=dict)  # annotator → P(gives the true verdict)

    def confidence(self, comparison_id: int, side: str) -> float | None:
        """P(``side`` beats the other side | one of them wins), or None for an unjudged comparison."""
        posterior = self.posteriors.get(comparison_id)
        if posterior is None:
            return None
        first, second = posterior.get(FIRST, 0.0), posterior.get(SECOND, 0.0)
        if first + second <= 0:
            return 0.5
        return (first if side == FIRST else second) / (first + second)

    def most_likely(self, comparison_id: int) -> str | None:
        posterior = self.posteriors.get(comparison_id)
        return max(posterior, key=lambda k: posterior[k]) if posterior else None


def reliability_estimate(
    votes: Iterable[tuple[int, int, str]], *, gold: dict[int, str] | None = None, iterations: int = 100
) -> Reliability:
    """Dawid-Skene over ``(comparison id, annotator id, choice)`` votes; ``gold``: comparison id →
    its known choice, which holds that comparison's posterior during the fit."""
    rows = list(votes)
    if not rows:
        return Reliability()
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    data = pd.DataFrame(rows, columns=["task", "worker", "label"])
    known = {task: label for task, label in (gold or {}).items() if task in set(data["task"])}
    model = DawidSkene(n_iter=iterations)
    model.fit(data, true_labels=pd.Series(known, dtype=object) if known else None)
    probas = model.probas_
    posteriors = {
        int(task): {str(label): float(p) for label, p in row.items()} for task, row in probas.iterrows()
    }
    priors = model.priors_
    annotators: dict[int, float] = {}
    for worker, matrix in model.errors_.groupby(level=0):
        confusion = matrix.droplevel(0)  # observed verdict × true verdict
        annotators[int(worker)] = float(
            sum(
                priors[label] * confusion.at[label, label]
                for label in priors.index
                if label in confusion.index
            )
        )
    return Reliability(posteriors, annotators)


def bootstrap_interval(
    values: Sequence[object],
    statistic: Callable[[Sequence[object]], float],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` resampled with replacement."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    estimates = sorted(statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2
    return estimates[int(tail * (resamples - 1))], estimates[math.ceil((1 - tail) * (resamples - 1))]
