"""The staff dashboard's statistics and leaderboard on a hand-made scene."""

import pytest

from annotate.models import Choice, Kind, Side, Source
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    JudgmentFactory,
    PolicyFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)
from training.leaderboard import head_to_head, leaderboard, policy_games
from training.models import Evaluation
from training.selectors import annotation_stats


def versus(new, old, *choices, source=Source.HUMAN):
    """An eval comparison with new's answer first (``new`` evaluated against ``old``), judged once per choice."""
    prompt = PromptFactory()
    comparison = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, policy=new),
        response_b=ResponseFactory(prompt=prompt, policy=old),
        kind=Kind.EVAL,
        campaign=CampaignFactory(name="eval"),
        overlap=len(choices) or 1,
    )
    Evaluation.objects.create(comparison=comparison, policy=new, opponent=old)
    for choice in choices:
        JudgmentFactory(comparison=comparison, choice=choice, source=source)
    return comparison


@pytest.mark.django_db
def test_leaderboard_rates_policies_and_win_rate_over_parent():
    base = PolicyFactory(name="base")
    child = PolicyFactory(name="child", parent=base)
    for _ in range(3):
        versus(child, base, Choice.FIRST)
    versus(child, base, Choice.SECOND)
    versus(child, base, Choice.FIRST, source=Source.SIMULATED)  # not counted unless asked

    rows = {row.policy.name: row for row in leaderboard()}

    assert rows["child"].rating > rows["base"].rating
    assert rows["child"].games == 4
    assert rows["child"].versus_parent.rate == pytest.approx(0.75)
    assert rows["base"].versus_parent is None
    with_simulated = {row.policy.name: row for row in leaderboard(include_simulated=True)}
    assert with_simulated["child"].versus_parent.rate == pytest.approx(0.8)


@pytest.mark.django_db
def test_four_games_won_four_nil_get_no_rating_interval_and_an_honest_win_rate(client, staff):
    base = PolicyFactory(name="base")
    child = PolicyFactory(name="child", parent=base)
    for _ in range(4):
        versus(child, base, Choice.FIRST)

    rows = {row.policy.name: row for row in leaderboard()}

    assert rows["child"].rating is not None and rows["child"].low is None  # a zero-width bootstrap before
    assert rows["child"].lc_low is None and rows["child"].lc_versus_parent is None
    assert rows["child"].versus_parent.low == pytest.approx(0.51, abs=0.01)
    client.force_login(staff)
    html = client.get("/training/").content.decode()
    assert "too few games for an interval (4 of 10)" in html
    assert '100% <span class="muted">[51–100%] over 4 (4 won, 0 tied, 0 lost)' in html


@pytest.mark.django_db
def test_ten_games_give_a_rating_interval_around_the_rating():
    base = PolicyFactory(name="base")
    child = PolicyFactory(name="child", parent=base)
    for choice in [Choice.FIRST] * 7 + [Choice.SECOND] * 3:
        versus(child, base, choice)

    rows = {row.policy.name: row for row in leaderboard()}

    assert rows["child"].low < rows["child"].rating < rows["child"].high
    assert rows["child"].lc_low < rows["child"].lc_rating < rows["child"].lc_high


@pytest.mark.django_db
def test_head_to_head_scores_from_either_side_and_averages_several_judgments():
    a, b = PolicyFactory(), PolicyFactory()
    versus(a, b, Choice.FIRST, Choice.SECOND)  # split: one half
    versus(b, a, Choice.SECOND)  # a's answer second, and it won
    rate = head_to_head(policy_games(), policy=a.pk, opponent=b.pk)
    assert (rate.rate, rate.games) == (pytest.approx(0.75), 2)


@pytest.mark.django_db
def test_annotation_stats_by_campaign_and_annotator():
    ann, bob, cat = UserFactory(username="ann"), UserFactory(username="bob"), UserFactory(username="cat")
    one = ComparisonFactory(campaign=CampaignFactory(name="r1"), overlap=3)
    JudgmentFactory(comparison=one, annotator=ann, choice=Choice.FIRST, left=Side.FIRST, time_on_task_ms=4000)
    JudgmentFactory(
        comparison=one, annotator=bob, choice=Choice.FIRST, left=Side.SECOND, time_on_task_ms=6000
    )
    JudgmentFactory(
        comparison=one, annotator=cat, choice=Choice.SECOND, left=Side.SECOND, time_on_task_ms=8000
    )
    two = ComparisonFactory(campaign=CampaignFactory(name="r1"), overlap=2)
    JudgmentFactory(comparison=two, annotator=ann, choice=Choice.TIE, left=Side.FIRST, time_on_task_ms=2000)
    gold = ComparisonFactory(campaign=CampaignFactory(name="r1"), kind=Kind.GOLD, gold_answer=Choice.SECOND)
    JudgmentFactory(
        comparison=gold, annotator=ann, choice=Choice.SECOND, left=Side.FIRST, time_on_task_ms=1000
    )
    JudgmentFactory(
        comparison=gold, annotator=bob, choice=Choice.FIRST, left=Side.FIRST, time_on_task_ms=3000
    )
    ComparisonFactory(campaign=CampaignFactory(name="r2"))
    sim = UserFactory(username="sim:shorter:1")
    JudgmentFactory(comparison=two, annotator=sim, choice=Choice.FIRST, source=Source.SIMULATED)

    rounds, people = annotation_stats()

    r1 = next(r for r in rounds if r.campaign.name == "r1")
    assert (r1.comparisons, r1.judged, r1.complete, r1.queued) == (3, 3, 2, 1)
    assert r1.judgments == 6 and r1.last_hour == 6 and r1.annotators == 3
    assert r1.gold_accuracy == pytest.approx(0.5)
    # decisive verdicts: ann left(first/first), bob right, cat left (second/second), ann gold right, bob gold left
    assert r1.left_share == pytest.approx(3 / 5)
    assert r1.tie_rate == pytest.approx(1 / 6) and r1.both_bad_rate == 0
    assert r1.median_seconds == pytest.approx(3.5)
    assert r1.alpha_units == 2  # comparison one, and gold (two judgments); simulated left out
    by_name = {p.username: p for p in people}
    assert "sim:shorter:1" not in by_name
    assert (by_name["ann"].agreed, by_name["ann"].compared) == (0, 0)  # others split 1-1 on one
    assert (by_name["bob"].agreed, by_name["bob"].compared) == (0, 0)
    assert by_name["ann"].gold_accuracy == 1.0 and by_name["bob"].gold_accuracy == 0.0
    r2 = next(r for r in rounds if r.campaign.name == "r2")
    assert (r2.comparisons, r2.judged, r2.alpha) == (1, 0, None)
    _, with_sim = annotation_stats(include_simulated=True)
    assert "sim:shorter:1" in {p.username for p in with_sim}


@pytest.mark.django_db
def test_agreement_with_the_majority_of_the_others():
    people = [UserFactory(username=n) for n in ("a", "b", "c")]
    comparison = ComparisonFactory(overlap=3)
    for user, choice in zip(people, [Choice.FIRST, Choice.FIRST, Choice.SECOND], strict=True):
        JudgmentFactory(comparison=comparison, annotator=user, choice=choice)
    _, stats = annotation_stats()
    by_name = {p.username: p for p in stats}
    # a: others b=first, c=second → split, no majority. c: others first, first → disagrees.
    assert by_name["a"].compared == 0 and by_name["c"].agreement == 0.0


@pytest.mark.django_db
def test_the_length_controlled_leaderboard_sees_through_a_policy_that_only_got_shorter():
    """Judges who prefer the shorter answer, a child that answers shorter: the raw rating puts it
    far ahead; controlled for length, child and parent are level (the interval holds 50%), and the
    judges' length coefficient is negative."""
    import random

    rng = random.Random(0)
    base = PolicyFactory(name="base")
    child = PolicyFactory(name="child", parent=base)
    for _ in range(120):
        prompt = PromptFactory()
        short, long = rng.randint(20, 200), rng.randint(20, 200)
        comparison = ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, policy=child, text="x" * min(short, long)),
            response_b=ResponseFactory(prompt=prompt, policy=base, text="y" * max(short, long)),
            kind=Kind.EVAL,
            campaign=CampaignFactory(name="eval"),
        )
        Evaluation.objects.create(comparison=comparison, policy=child, opponent=base)
        x = (min(short, long) - max(short, long)) / (short + long)
        child_wins = rng.random() < 1 / (1 + 2.718281828 ** (4.0 * x))  # only length decides
        JudgmentFactory(comparison=comparison, choice=Choice.FIRST if child_wins else Choice.SECOND)

    rows = {row.policy.name: row for row in leaderboard(resamples=100)}

    child_row = rows["child"]
    assert child_row.versus_parent.rate > 0.7  # the raw win rate rewards brevity
    rate, low, high = child_row.lc_versus_parent
    assert low <= 0.5 <= high and abs(rate - 0.5) < 0.15
    assert child_row.lc_low <= child_row.lc_rating <= child_row.lc_high
    assert child_row.rating - rows["base"].rating > child_row.lc_rating - rows["base"].lc_rating + 100
    gamma, gamma_low, gamma_high = child_row.length_coefficient
    assert gamma_high < 0 and gamma_low <= gamma <= gamma_high


@pytest.mark.django_db
def test_the_leaderboard_says_where_its_games_came_from_and_labels_the_record(client, staff):
    from annotate.models import Task
    from tests.factories import (
        CampaignFactory,
        ComparisonFactory,
        JudgmentFactory,
        PolicyFactory,
        ResponseFactory,
    )

    parent = PolicyFactory(name="parent")
    child = PolicyFactory(name="child", parent=parent)
    arena = CampaignFactory(name="arena", task=Task.ARENA)
    for choice in ("first", "first", "second"):
        comparison = ComparisonFactory(campaign=arena)
        ResponseFactory._meta.model.objects.filter(pk=comparison.response_a_id).update(policy=child)
        ResponseFactory._meta.model.objects.filter(pk=comparison.response_b_id).update(policy=parent)
        JudgmentFactory(comparison=comparison, choice=choice)
    client.force_login(staff)

    html = client.get("/training/").content.decode()

    assert "now 0 blind eval comparisons and 3 arena votes" in html
    assert "(2 won, 0 tied, 1 lost)" in html
