"""How far each annotator's verdicts can be trusted, and what each comparison's true verdict likely is.

Dawid-Skene (crowd-kit's EM implementation): every annotator has a confusion matrix (the chance of
answering each verdict given the true one) and every comparison a posterior over the true verdict,
fitted together from all overlapping judgments; gold comparisons are held at their known answer.
An annotator's **reliability** is the chance they give the true verdict, the diagonal of their
confusion matrix weighted by how common each verdict is. A comparison's **confidence** in a side is
the posterior that this side beats the other, given that one of them wins.

Pure functions of (comparison, annotator, choice) votes: no Django. crowd-kit (pandas, scikit-learn)
is imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

FIRST, SECOND = "first", "second"  # Choice values for the two sides (annotate.models.Choice)


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
