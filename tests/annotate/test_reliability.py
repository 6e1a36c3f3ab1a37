"""Annotator reliability and comparison posteriors (Dawid-Skene), and what the export does with them."""

import json
import random
from io import StringIO

import pytest
from django.core.management import call_command

from annotate.models import Choice, Kind
from annotate.reliability import Reliability, reliability_estimate
from tests.factories import ComparisonFactory, JudgmentFactory, PromptFactory, UserFactory


def simulated_votes(accuracies, tasks=300, seed=0):
    """Each annotator gives the true side with their accuracy, else the other one."""
    rng = random.Random(seed)
    votes, truth = [], {}
    for task in range(tasks):
        truth[task] = rng.choice([Choice.FIRST, Choice.SECOND])
        for annotator, accuracy in accuracies.items():
            other = Choice.SECOND if truth[task] == Choice.FIRST else Choice.FIRST
            votes.append((task, annotator, truth[task] if rng.random() < accuracy else other))
    return votes, truth


def test_reliability_recovers_each_annotators_accuracy_from_overlap_alone():
    accuracies = {1: 0.95, 2: 0.9, 3: 0.65, 4: 0.55}
    votes, truth = simulated_votes(accuracies)

    estimated = reliability_estimate(votes)

    for annotator, accuracy in accuracies.items():
        assert estimated.annotators[annotator] == pytest.approx(accuracy, abs=0.06)
    most_likely_right = sum(estimated.most_likely(t) == side for t, side in truth.items()) / len(truth)
    best_alone = max(
        sum(choice == truth[t] for t, who, choice in votes if who == annotator) / len(truth)
        for annotator in accuracies
    )
    assert most_likely_right >= best_alone  # at least what the best annotator alone gets
    majority_right = sum(  # with 4 votes, a 2:2 split counts as wrong
        sum(choice == truth[t] for task, _, choice in votes if task == t) > 2 for t in truth
    ) / len(truth)
    assert most_likely_right > majority_right


def test_gold_answers_hold_their_comparisons_posterior():
    votes = [(1, 10, Choice.FIRST), (1, 11, Choice.FIRST), (2, 10, Choice.SECOND), (2, 11, Choice.FIRST)]
    estimated = reliability_estimate(votes, gold={1: Choice.SECOND})
    assert estimated.posteriors[1][Choice.SECOND] == pytest.approx(1.0)


def test_confidence_is_the_posterior_of_a_side_given_that_one_side_wins():
    r = Reliability(posteriors={7: {"first": 0.6, "second": 0.2, "tie": 0.2}})
    assert r.confidence(7, "first") == pytest.approx(0.75)
    assert r.confidence(7, "second") == pytest.approx(0.25)
    assert r.confidence(8, "first") is None
    assert reliability_estimate([]) == Reliability()


@pytest.mark.django_db
def test_a_reliable_annotator_outvotes_two_careless_ones_under_dawid_skene(tmp_path):
    careful, careless_a, careless_b = UserFactory(), UserFactory(), UserFactory()
    # gold comparisons show who gets it right: the careful one always, the careless ones never
    for i in range(12):
        gold = ComparisonFactory(
            prompt=PromptFactory(text=f"gold {i}"), kind=Kind.GOLD, gold_answer=Choice.FIRST
        )
        JudgmentFactory(comparison=gold, annotator=careful, choice=Choice.FIRST)
        JudgmentFactory(comparison=gold, annotator=careless_a, choice=Choice.SECOND)
        JudgmentFactory(comparison=gold, annotator=careless_b, choice=Choice.SECOND)
    disputed = ComparisonFactory(prompt=PromptFactory(text="disputed"), overlap=3)
    JudgmentFactory(comparison=disputed, annotator=careful, choice=Choice.SECOND)
    JudgmentFactory(comparison=disputed, annotator=careless_a, choice=Choice.FIRST)
    JudgmentFactory(comparison=disputed, annotator=careless_b, choice=Choice.FIRST)

    rows = {}
    for aggregation in ("majority", "dawid-skene"):
        path = tmp_path / f"{aggregation}.jsonl"
        call_command(
            "export_preferences", "--out", str(path), "--aggregation", aggregation, stdout=StringIO()
        )
        rows[aggregation] = {r["comparison_id"]: r for r in map(json.loads, path.read_text().splitlines())}

    majority, weighted = rows["majority"][disputed.pk], rows["dawid-skene"][disputed.pk]
    assert majority["chosen"][0]["content"] == disputed.response_a.text  # two careless votes win
    assert weighted["chosen"][0]["content"] == disputed.response_b.text  # the careful one wins
    assert weighted["confidence"] > 0.9 and majority["confidence"] < 0.1
    assert weighted["agreement"] == pytest.approx(1 / 3, abs=1e-4)


@pytest.mark.django_db
def test_the_dashboard_shows_each_annotators_reliability(client):
    staff = UserFactory(is_staff=True)
    annotators = [UserFactory() for _ in range(3)]
    for i in range(6):
        comparison = ComparisonFactory(prompt=PromptFactory(text=f"p {i}"), overlap=3)
        for person in annotators:
            JudgmentFactory(comparison=comparison, annotator=person, choice=Choice.FIRST)
    client.force_login(staff)
    page = client.get("/training/").content.decode()
    assert "Reliability" in page
    assert page.count("100%") >= 3
