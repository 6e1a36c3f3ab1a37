"""A policy's answers paired into comparisons of a campaign: annotate.services.pairing."""

import random

import pytest

from annotate.models import Campaign, Comparison
from annotate.services.pairing import comparisons_generate, prompts_pending, responses_pair
from config.errors import Invalid
from generation.backends import Sampling
from generation.models import Prompt, Response
from tests.factories import CampaignFactory, PolicyFactory, PromptFactory
from tests.scripted import ScriptedBackend


def run(policy, prompts, backend, **options):
    settings = {"sampling": Sampling(samples=4), "campaign": CampaignFactory(name="r1"), "pairs": "random"}
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
