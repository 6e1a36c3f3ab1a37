"""Numbers behind the dashboard and the leaderboard: pure functions of plain values, no Django.

- Bradley-Terry strengths from pairwise outcomes (Hunter's MM algorithm), on an Elo-like scale, and
  the length-controlled fit: the answers' length difference as a covariate (Chatbot Arena's style
  control), so a policy does not climb by getting shorter or longer alone.
- Win rates with percentile-bootstrap intervals (``annotate.reliability``), resampling comparisons, never narrower than the
  Wilson score interval: a bootstrap over four identical outcomes has no width, four games do not
  justify that (4-0 is 100% [51%, 100%]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotate.reliability import bootstrap_interval

ELO_SCALE = 400 / math.log(10)  # a 400-point gap is 10:1 odds, as in chess ratings
ELO_CENTRE = 1000.0
MIN_RATED_GAMES = 10  # fewer games than this: a rating gets no interval (a bootstrap of a few is too narrow)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Game:
    """One judged comparison between two players: ``score`` is a's share (1 win, 0.5 tie, 0 loss)."""

    a: str
    b: str
    score: float


def bradley_terry(games: Sequence[Game], *, prior: float = 0.5, iterations: int = 500) -> dict[str, float]:
    """Bradley-Terry strengths as Elo-like ratings centred on 1000.

    P(a beats b) = p_a / (p_a + p_b). Fitted by Hunter's (2004) MM updates on win counts (a tie is
    half a win each). ``prior`` adds that many virtual wins each way to every pair that played, so a
    player who never lost gets a finite rating.
    """
    players = sorted({g.a for g in games} | {g.b for g in games})
    if not players:
        return {}
    index = {name: i for i, name in enumerate(players)}
    n = len(players)
    wins = np.zeros((n, n))  # wins[i, j]: i's (fractional) wins over j
    for g in games:
        i, j = index[g.a], index[g.b]
        wins[i, j] += g.score
        wins[j, i] += 1.0 - g.score
    played = (wins + wins.T) > 0
    wins = wins + prior * played
    games_between = wins + wins.T
    strength = np.ones(n)
    total_wins = wins.sum(axis=1)
    for _ in range(iterations):
        denom = (games_between / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = np.where(denom > 0, total_wins / np.where(denom > 0, denom, 1), strength)
        updated /= math.exp(np.log(updated).mean())  # fix the scale: geometric mean 1
        if np.max(np.abs(updated - strength)) < 1e-10:
            strength = updated
            break
        strength = updated
    return {name: ELO_CENTRE + ELO_SCALE * math.log(strength[index[name]]) for name in players}


@dataclass(frozen=True)
class ControlledFit:
    ratings: dict[str, float]  # Elo scale, centred on 1000: strength at equal answer lengths
    length: float  # the logit coefficient of the length difference (> 0: the longer answer is preferred)


def length_difference(a: int, b: int) -> float:
    """The covariate: (len a - len b) / (len a + len b), in [-1, 1] (0 for two empty answers)."""
    return (a - b) / (a + b) if a + b else 0.0


def bradley_terry_controlled(
    games: Sequence[Game], lengths: Sequence[float], *, l2: float = 0.01, iterations: int = 100
) -> ControlledFit:
    """Bradley-Terry with one covariate: P(a beats b) = σ(θa - θb + γ·x), x = ``lengths[k]`` the
    game's length difference (``length_difference``), fitted by Newton's method on the (fractional:
    a tie is 0.5) log-likelihood with a small L2 penalty on θ and γ (a player who never lost, and judges
    who decide on length alone, stay finite), θ centred on 0. θ is then each player's strength with the length effect taken out; γ is how much
    the judges pay for length."""
    players = sorted({g.a for g in games} | {g.b for g in games})
    if not players:
        return ControlledFit({}, 0.0)
    index = {name: i for i, name in enumerate(players)}
    n = len(players)
    design = np.zeros((len(games), n + 1))  # one row per game: +1 for a, -1 for b, then x
    for k, g in enumerate(games):
        design[k, index[g.a]] += 1.0
        design[k, index[g.b]] -= 1.0
        design[k, n] = lengths[k]
    score = np.array([g.score for g in games])
    # γ takes the same small penalty: judges who decide on length alone (the shorter answer always
    # wins) separate the games perfectly, and without it γ runs off to infinity, θ with it
    penalty = np.full(n + 1, l2)
    params = np.zeros(n + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ params)))
        gradient = design.T @ (score - p) - penalty * params
        hessian = (design.T * (p * (1 - p))) @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        params = params + step
        if np.max(np.abs(step)) < 1e-10:
            break
    theta = params[:n] - params[:n].mean()
    return ControlledFit(
        {name: ELO_CENTRE + ELO_SCALE * theta[index[name]] for name in players}, float(params[n])
    )


def wilson_interval(successes: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion (a tie counted as half a success): honest at small n
    and at 0% or 100%, where a bootstrap or the normal approximation has no width."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WinRate:
    wins: int
    ties: int
    losses: int
    rate: float  # (wins + ties / 2) / games
    low: float  # 95%: the percentile bootstrap's interval widened to Wilson's where that is wider
    high: float

    @property
    def games(self) -> int:
        return self.wins + self.ties + self.losses


def win_rate(scores: Sequence[float], *, seed: int = 0) -> WinRate | None:
    """Win rate from per-comparison scores (1 win, 0.5 tie or both bad, 0 loss), with its interval."""
    if not scores:
        return None

    def mean(sample: Sequence[object]) -> float:
        return sum(float(s) for s in sample) / len(sample)  # type: ignore[arg-type]

    low, high = bootstrap_interval(list(scores), mean, seed=seed)
    wilson_low, wilson_high = wilson_interval(sum(scores), len(scores))
    low, high = min(low, wilson_low), max(high, wilson_high)
    return WinRate(
        wins=sum(1 for s in scores if s == 1.0),
        ties=sum(1 for s in scores if s == 0.5),
        losses=sum(1 for s in scores if s == 0.0),
        rate=mean(list(scores)),
        low=low,
        high=high,
    )


def median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None
