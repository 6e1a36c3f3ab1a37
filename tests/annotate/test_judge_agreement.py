"""An AI judge's agreement with people, against cases worked by hand."""

import math

import pytest

from annotate.judge_agreement import (
    BOTH_BAD,
    FIRST,
    SECOND,
    TIE,
    JudgedPair,
    OrderedVerdict,
    both_orders,
    calibration_error,
    cohen_kappa,
    judge_agreement,
    verdict_probability,
)


def test_the_verdict_probability_is_the_first_tokens_share_of_the_two_verdicts():
    # p(A) 0.6, p(B) 0.2 (written " b": spaces and case do not matter), C is neither: 0.6 / 0.8
    assert verdict_probability(
        {"A": math.log(0.6), " b": math.log(0.2), "C": math.log(0.2)}
    ) == pytest.approx(0.75)
    assert verdict_probability({"Sure": 0.0}) is None  # no verdict among the candidates


def test_two_readings_in_both_orders_make_one_verdict_in_the_comparisons_own_order():
    # a shown first: 0.8 for a; b shown first: 0.3 for b, so 0.7 for a; mean 0.75, both favour a
    agreed = both_orders(0.8, 0.3)
    assert agreed == OrderedVerdict(FIRST, pytest.approx(0.75), True)
    # position bias: whichever is shown first wins (0.8 and 0.9 for the one shown first)
    biased = both_orders(0.8, 0.9)
    assert (
        biased.choice == SECOND and biased.probability_first == pytest.approx(0.45) and not biased.consistent
    )


def test_cohens_kappa_by_hand():
    # observed agreement 3/4; chance: people half first, judge a quarter first: 0.5*0.25 + 0.5*0.75 = 0.5
    # kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5
    assert cohen_kappa([FIRST, FIRST, SECOND, SECOND], [FIRST, SECOND, SECOND, SECOND]) == pytest.approx(0.5)
    assert cohen_kappa([FIRST, TIE, BOTH_BAD], [FIRST, TIE, BOTH_BAD]) == pytest.approx(1.0)
    assert cohen_kappa([FIRST, FIRST], [FIRST, FIRST]) is None  # one label: chance agreement is 1


def test_expected_calibration_error_by_hand():
    # confidences 0.9, 0.8, 0.6, 0.7 (the last favours the second answer), one per bin;
    # right, wrong, right, right: (|1-0.9| + |0-0.8| + |1-0.6| + |1-0.7|) / 4 = 0.4
    assert calibration_error([0.9, 0.8, 0.6, 0.3], [True, False, True, False]) == pytest.approx(0.4)
    assert calibration_error([0.75, 0.75, 0.75, 0.75], [True, True, True, False]) == pytest.approx(0.0)
    assert calibration_error([], []) is None


def test_the_judge_against_the_peoples_majority():
    def pair(people, choice, lengths, consistent=True):
        p = 0.8 if choice == FIRST else 0.2
        return JudgedPair(people, OrderedVerdict(choice, p, consistent), *lengths)

    pairs = [
        pair(FIRST, FIRST, (10, 5)),  # both chose the longer
        pair(FIRST, SECOND, (5, 10), consistent=False),  # the judge chose the longer, people not
        pair(SECOND, SECOND, (10, 10)),  # equal lengths: not in the length shares
        pair(SECOND, SECOND, (3, 9)),  # both chose the longer
        pair(None, FIRST, (4, 2)),  # people split: in the consistency share only
    ]
    agreement = judge_agreement(pairs, resamples=200)

    assert agreement.compared == 4
    assert agreement.kappa == pytest.approx(0.5)
    low, high = agreement.kappa_interval
    assert -1.0 <= low <= 0.5 <= high <= 1.0 and high - low > 0.1  # four comparisons: a wide interval
    assert agreement.confusion[:2] == [[1, 1, 0, 0], [0, 2, 0, 0]] and agreement.labels[:2] == (FIRST, SECOND)
    assert agreement.consistency == pytest.approx(4 / 5)
    assert agreement.judge_longer == pytest.approx(1.0) and agreement.people_longer == pytest.approx(2 / 3)
    # confidences all 0.8: right three times of four, one bin: |0.75 - 0.8|
    assert agreement.calibration_error == pytest.approx(0.05)
