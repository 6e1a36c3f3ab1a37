"""Drift: how far a round's new policy moved from where it started, measured on its held-out answers.

Pure functions over numbers the follow-up gathers (``round_follow_up.round_drift_measure``): a win
rate says which answers the judges prefer; these say whether the answers are still the model's
language. Units: nats per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Fluency and outliers compare two sets of samples: from this many held-out answers on they guard;
# with fewer they are shown but hold nothing back (one answer's NLL says little). KL pairs each answer
# with itself under the reference and guards from the first answer.
FLUENCY_MIN_ANSWERS = 20


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0..100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def repetition(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that repeat an earlier one (0: none; near 1: a loop)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def drift_summary(
    *,
    new_self: Sequence[float],
    new_under_reference: Sequence[float],
    new_under_base: Sequence[float],
    base_own: Sequence[float],
    reference_own: Sequence[float],
    new_texts: Sequence[str],
    base_texts: Sequence[str],
    new_tokens: Sequence[int],
    new_ended: Sequence[bool],
) -> dict[str, Any]:
    """The drift figures of one policy's held-out answers. Arguments are mean per-token log-probs
    (``new_self``: the new policy's answers under itself; ``base_own``: the base's answers under the
    base; ...), one per answer, and the answers' texts, token counts and whether the model ended them.

    - ``kl``: KL(new ‖ reference) per token, estimated on the new policy's samples: the mean of
      log p_new − log p_ref over its answers.
    - ``nll_base`` / ``nll_base_own``: per-token NLL of the new answers under the base, and of the
      base's own answers; ``fluency_ratio`` their ratio. ``nll_reference`` / ``nll_reference_own``
      the same under the reference.
    - ``beyond_p95``: share of the new answers whose NLL under the base exceeds the 95th percentile
      of the base's own (about 0.05 for the base itself).
    - ``repetition`` (and ``base_repetition``): mean share of repeated word 3-grams.
    - ``mean_tokens``, ``stopped``: answer length and the share the model ended itself.
    """
    nll_base = [-v for v in new_under_base]
    base_nll = [-v for v in base_own]
    p95 = percentile(base_nll, 95) if base_nll else math.nan
    summary = {
        "answers": len(new_self),
        "kl": mean([a - b for a, b in zip(new_self, new_under_reference, strict=True)]),
        "nll_base": mean(nll_base),
        "nll_base_own": mean(base_nll),
        "nll_reference": -mean(new_under_reference),
        "nll_reference_own": -mean(reference_own),
        "beyond_p95": mean([float(v > p95) for v in nll_base]),
        "base_p95": p95,
        "repetition": mean([repetition(t) for t in new_texts]),
        "base_repetition": mean([repetition(t) for t in base_texts]),
        "mean_tokens": mean([float(t) for t in new_tokens]),
        "stopped": mean([float(e) for e in new_ended]),
    }
    summary["fluency_ratio"] = summary["nll_base"] / summary["nll_base_own"]
    return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in summary.items()}


def drift_breaches(drift: dict[str, Any], guards: dict[str, float]) -> list[str]:
    """Why a policy with ``drift`` is beyond its round's ``guards`` (empty: within them)."""
    reasons = []
    if drift.get("kl") is not None and drift["kl"] > guards["kl_budget"]:
        reasons.append(f"KL from its reference {drift['kl']:.3f} nats/token > budget {guards['kl_budget']:g}")
    enough = drift.get("answers", 0) >= FLUENCY_MIN_ANSWERS
    if enough and drift.get("fluency_ratio") is not None and drift["fluency_ratio"] > guards["fluency_limit"]:
        reasons.append(
            f"held-out answers' NLL under the base {drift['nll_base']:.2f} = {drift['fluency_ratio']:.2f}× "
            f"the base's own {drift['nll_base_own']:.2f} > limit {guards['fluency_limit']:g}×"
        )
    if enough and drift.get("beyond_p95") is not None and drift["beyond_p95"] > guards["outlier_limit"]:
        reasons.append(
            f"{drift['beyond_p95']:.0%} of its held-out answers lie beyond the base's own 95th NLL "
            f"percentile > limit {guards['outlier_limit']:.0%}"
        )
    return reasons
