"""A policy's answers paired into comparisons of a campaign: annotate.services.pairing queues them,
training.answering generates and scores them."""

import random

import pytest

from annotate.models import Campaign, Comparison
from annotate.services.pairing import prompts_pending, responses_pair
from config.errors import Invalid
from generation.backends import Sampling
from generation.models import Prompt, Response
from tests.factories import CampaignFactory, PolicyFactory, PromptFactory
from tests.scripted import ScriptedBackend
from training.answering import Queueing, comparisons_generate, uncertain_pairs


def run(policy, prompts, backend, **options):
    queueing = Queueing(**{k: options.pop(k) for k in ("pairs", "overlap", "budget", "beta") if k in options})
    settings = {"sampling": Sampling(samples=4), "campaign": CampaignFactory(name="r1"), "queueing": queueing}
    return comparisons_generate(policy=policy, prompts=prompts, backend=backend, **(settings | options))


@pytest.mark.django_db
def test_duplicates_are_dropped_and_distinct_responses_paired():
    policy, prompts = PolicyFactory(), [PromptFactory(), PromptFactory()]
    backend = ScriptedBackend(lambda p: ["same", "same", "other", "third"])

    report = run(policy, prompts, backend)

    assert (report.prompts, report.responses, report.duplicates) == (2, 6, 2)
    assert report.extra["comparisons"] == 2  # 3 distinct per prompt → 1 random pair each
    assert Response.objects.filter(policy=policy).count() == 6
    for comparison in Comparison.objects.all():
        assert comparison.response_a.text != comparison.response_b.text
        assert comparison.campaign.name == "r1"
        assert comparison.overlap == comparison.campaign.overlap  # the campaign's default


@pytest.mark.django_db
def test_all_pairs_and_best_worst_by_logprob():
    policy = PolicyFactory()
    run(policy, [PromptFactory()], ScriptedBackend(lambda p: ["a", "b", "c", "d"]), pairs="all")
    assert Comparison.objects.count() == 6
    Comparison.objects.all().delete()
    run(
        policy,
        [PromptFactory()],
        ScriptedBackend(lambda p: ["a", "b", "c", "d"]),
        pairs="best-worst-by-logprob",
        campaign=CampaignFactory(name="r2"),
    )
    comparison = Comparison.objects.get(campaign__name="r2")
    assert (comparison.response_a.text, comparison.response_b.text) == ("a", "d")  # -1 vs -4


def test_pairing_rules_on_their_own():
    responses = [Response(text=t, mean_logprob=None) for t in "abcde"]
    assert len(responses_pair(responses, how="random", rng=random.Random(0))) == 2
    assert len(responses_pair(responses, how="all", rng=random.Random(0))) == 10
    assert (
        len(responses_pair(responses, how="best-worst-by-logprob", rng=random.Random(0))) == 2
    )  # no logprobs
    assert responses_pair(responses[:1], how="all", rng=random.Random(0)) == []
    with pytest.raises(Invalid):
        responses_pair(responses, how="tournament", rng=random.Random(0))


@pytest.mark.django_db
def test_a_crash_loses_only_the_batch_in_flight_and_a_rerun_finishes_the_job():
    policy = PolicyFactory()
    prompts = [PromptFactory() for _ in range(20)]
    crashing = ScriptedBackend(lambda p: ["x", "y"], fail_on_call=2)

    with pytest.raises(RuntimeError, match="fell off"):
        comparisons_generate(
            policy=policy,
            prompts=prompts,
            backend=crashing,
            sampling=Sampling(samples=2),
            campaign=CampaignFactory(name="r1"),
        )

    assert (
        Response.objects.count() == 32 and Comparison.objects.count() == 16
    )  # the first batch of 16 prompts
    campaign = Campaign.objects.get(name="r1")
    pending = list(prompts_pending(policy=policy, campaign=campaign, prompts=Prompt.objects.all()))
    assert len(pending) == 4
    run(policy, pending, ScriptedBackend(lambda p: ["x", "y"]), sampling=Sampling(samples=2))
    assert Comparison.objects.count() == 20
    assert not prompts_pending(policy=policy, campaign=campaign, prompts=Prompt.objects.all()).exists()


@pytest.mark.django_db
def test_nul_characters_from_a_model_are_replaced_so_any_database_stores_them():
    report = run(PolicyFactory(), [PromptFactory()], ScriptedBackend(lambda p: ["a\x00b", "c"]))
    assert report.responses == 2
    assert Response.objects.filter(text="a\ufffdb").exists()


def answers_of(prompt, *texts, start=0):
    """Unsaved responses with ids (``uncertain_pairs`` keys rewards by id)."""
    return [Response(pk=start + i, prompt=prompt, text=t) for i, t in enumerate(texts)]


def test_uncertain_pairs_take_the_smallest_implicit_reward_margins_hand_worked():
    first, second = Prompt(pk=1, text="p1"), Prompt(pk=2, text="p2")
    answers = {first: answers_of(first, "a", "b", "c", "d"), second: answers_of(second, "e", "f", start=10)}
    # r = log π - log π_ref per answer; β = 0.5
    rewards = {0: 0.0, 1: 0.5, 2: 3.0, 3: 3.2, 10: -1.0, 11: 1.0}

    unbudgeted = uncertain_pairs(answers, rewards, beta=0.5, budget=None)
    # K // 2 pairs per prompt, smallest margins: c-d 0.5·0.2 = 0.1, a-b 0.25; e-f 1.0
    assert [(c.a.text, c.b.text) for c in unbudgeted] == [("c", "d"), ("a", "b"), ("e", "f")]
    assert [c.margin for c in unbudgeted] == pytest.approx([0.1, 0.25, 1.0])

    budgeted = uncertain_pairs(answers, rewards, beta=0.5, budget=4)
    # every pair of both prompts competes: c-d 0.1, a-b 0.25, b-c 1.25, e-f 1.0, a-c 1.5, ...
    assert [(c.a.text, c.b.text) for c in budgeted] == [("c", "d"), ("a", "b"), ("e", "f"), ("b", "c")]
    assert uncertain_pairs(answers, rewards, beta=0.5, budget=0) == []


class TextScorer:
    """Scores an answer by a table of its text (sequence log-probs)."""

    def __init__(self, table):
        self.table, self.calls = table, 0

    def score(self, prompts, answers, ended, *, total=False):
        assert total  # the implicit reward is built from sequence log-probs
        self.calls += 1
        return [self.table[a] for a in answers]


@pytest.mark.django_db
def test_uncertain_pairing_scores_answers_under_the_policy_and_its_parent(monkeypatch):
    parent = PolicyFactory(name="parent")
    policy = PolicyFactory(name="child", parent=parent)
    scorers = {
        policy.pk: TextScorer({"a": -10.0, "b": -12.0, "c": -20.0, "d": -5.0}),
        parent.pk: TextScorer({"a": -11.0, "b": -10.0, "c": -21.0, "d": -9.0}),
    }
    monkeypatch.setattr("training.answering.scorer_load", lambda who, loaded=None: scorers[who.pk])

    report = run(
        policy, [PromptFactory()], ScriptedBackend(lambda p: ["a", "b", "c", "d"]), pairs="uncertain"
    )

    # r: a +1, b -2, c +1, d +4 → a-c margin 0, then a-b / b-c 0.3 (β 0.1): a-c and one of those
    queued = {frozenset((c.response_a.text, c.response_b.text)) for c in Comparison.objects.all()}
    assert len(queued) == 2 and frozenset("ac") in queued
    assert queued <= {frozenset("ac"), frozenset("ab"), frozenset("bc")}
    assert report.extra["comparisons"] == 2 and report.extra["answers scored for uncertainty"] == 4
    assert scorers[policy.pk].calls == scorers[parent.pk].calls == 1


@pytest.mark.django_db
def test_uncertain_pairing_without_a_parent_pairs_at_random_and_says_so(monkeypatch):
    monkeypatch.setattr("training.answering.scorer_load", lambda *a, **k: pytest.fail("scored"))
    base = PolicyFactory(parent=None)

    report = run(
        base, [PromptFactory(), PromptFactory()], ScriptedBackend(lambda p: list("abcd")), pairs="uncertain"
    )

    assert Comparison.objects.count() == 4  # K // 2 per prompt, as random pairing gives
    assert report.extra["prompts paired at random (uncertain: the policy has no parent)"] == 2


@pytest.mark.django_db
def test_a_budget_caps_the_comparisons_and_a_rerun_keeps_to_it():
    policy = PolicyFactory()
    campaign = CampaignFactory(name="capped", pair_budget=3)
    prompts = [PromptFactory() for _ in range(4)]

    report = run(policy, prompts, ScriptedBackend(lambda p: list("abcd")), campaign=campaign)

    assert Comparison.objects.filter(campaign=campaign).count() == 3  # of 8 random pairs
    assert report.extra["pairs left out by the budget"] == 5
    assert Response.objects.filter(policy=policy).count() == 16  # every answer is kept
    pending = list(prompts_pending(policy=policy, campaign=campaign, prompts=Prompt.objects.all()))
    run(policy, pending, ScriptedBackend(lambda p: list("efgh")), campaign=campaign)
    assert Comparison.objects.filter(campaign=campaign).count() == 3  # the budget is spent
    run(policy, pending, ScriptedBackend(lambda p: list("ijkl")), campaign=campaign, budget=5)
    assert Comparison.objects.filter(campaign=campaign).count() == 5  # an explicit budget wins
    with pytest.raises(Invalid, match="budget"):
        run(policy, pending, ScriptedBackend(lambda p: list("mn")), campaign=campaign, budget=-1)
