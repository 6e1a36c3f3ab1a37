"""The numbers behind the dashboard, worked by hand."""

import math

import pytest

from annotate.reliability import krippendorff_alpha_nominal
from training.stats import Game, bradley_terry, length_difference, wilson_interval, win_rate


def test_bradley_terry_three_wins_in_four_is_odds_of_three():
    games = [Game("a", "b", 1.0)] * 3 + [Game("a", "b", 0.0)]
    ratings = bradley_terry(games, prior=0.0)
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (ratings["a"] + ratings["b"]) / 2 == pytest.approx(1000.0)


def test_bradley_terry_ties_are_half_a_win_and_the_prior_keeps_an_unbeaten_player_finite():
    assert bradley_terry([Game("a", "b", 0.5)] * 4, prior=0.0) == pytest.approx({"a": 1000.0, "b": 1000.0})
    unbeaten = bradley_terry([Game("a", "b", 1.0)] * 2, prior=0.5)
    # 2.5 wins against 0.5: odds 5, finite
    assert unbeaten["a"] - unbeaten["b"] == pytest.approx(400 * math.log10(5), abs=1e-6)


def test_bradley_terry_orders_a_chain_transitively():
    games = [Game("a", "b", 1.0)] * 3 + [Game("b", "c", 1.0)] * 3 + [Game("a", "b", 0.0), Game("b", "c", 0.0)]
    ratings = bradley_terry(games)
    assert ratings["a"] > ratings["b"] > ratings["c"]


def test_krippendorff_alpha_nominal_by_hand():
    # units: (first, first), (second, second), (first, second). Coincidences: o_ff=2, o_ss=2, o_fs=o_sf=1;
    # n=6, n_f=n_s=3. D_o = 2/6; D_e = 2*3*3/(6*5) = 0.6; alpha = 1 - (1/3)/0.6 = 4/9.
    counts = [[2, 0, 0, 0], [0, 2, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]]  # a single judgment: ignored
    assert krippendorff_alpha_nominal(counts) == pytest.approx(4 / 9)
    assert krippendorff_alpha_nominal([[2, 0, 0, 0], [0, 2, 0, 0]]) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal([[2, 0, 0, 0]]) is None  # one category: undefined
    assert krippendorff_alpha_nominal([[1, 0, 0, 0]]) is None


def test_win_rate_counts_ties_as_half_with_an_interval_around_it():
    rate = win_rate([1.0, 1.0, 0.5, 0.0])
    assert (rate.wins, rate.ties, rate.losses, rate.games) == (2, 1, 1, 4)
    assert rate.rate == pytest.approx(0.625)
    assert 0.0 <= rate.low <= 0.625 <= rate.high <= 1.0
    assert win_rate([]) is None


def test_four_wins_of_four_is_not_certain_the_interval_is_wilsons():
    # Wilson by hand, p = 1, n = 4, z = 1.96: centre (1 + z²/8) / (1 + z²/4) = 0.7551,
    # half-width z·sqrt(z²/64) / (1 + z²/4) = 0.2449: [0.510, 1.000]. The bootstrap alone gave [1, 1].
    rate = win_rate([1.0] * 4)
    assert rate.rate == 1.0
    assert rate.low == pytest.approx(0.5101, abs=1e-4)
    assert rate.high == pytest.approx(1.0)
    assert wilson_interval(0, 4)[1] == pytest.approx(0.4899, abs=1e-4)
    assert win_rate([1.0] * 50).low == pytest.approx(0.9287, abs=1e-4)  # many games: narrow, not zero


def test_length_controlled_fit_recovers_strengths_and_the_length_effect_by_hand():
    """Scores set to the model's own probabilities: the fit returns the parameters that made them.
    θA - θB = 0.5 and γ = -2: P(A wins) = σ(0.5 - 2x) at x in {-0.5, 0, 0.5}."""
    from training.stats import ELO_SCALE, bradley_terry_controlled

    xs = [-0.5, 0.0, 0.5] * 4
    games = [Game("A", "B", 1 / (1 + math.exp(-(0.5 - 2.0 * x)))) for x in xs]
    fit = bradley_terry_controlled(games, xs, l2=1e-9)  # a penalty is what pins θA + θB
    assert fit.length == pytest.approx(-2.0, abs=1e-5)
    assert (fit.ratings["A"] - fit.ratings["B"]) / ELO_SCALE == pytest.approx(0.5, abs=1e-5)
    assert fit.ratings["A"] + fit.ratings["B"] == pytest.approx(2000.0)


def test_length_difference_is_bounded_and_antisymmetric():

    assert length_difference(30, 10) == pytest.approx(0.5)
    assert length_difference(10, 30) == pytest.approx(-0.5)
    assert length_difference(0, 0) == 0.0


def test_judges_who_decide_on_length_alone_leave_the_controlled_strengths_level():
    """The shorter answer always wins (perfect separation): γ stays finite and negative, and with
    length taken out neither player is ahead."""
    from training.stats import bradley_terry_controlled

    xs = [-0.6, -0.3, -0.1, 0.1, 0.2, 0.4] * 5  # A's answer shorter in half the games
    games = [Game("A", "B", 1.0 if x < 0 else 0.0) for x in xs]
    fit = bradley_terry_controlled(games, xs)
    assert -200 < fit.length < -5
    assert abs(fit.ratings["A"] - fit.ratings["B"]) < 30
