"""Policies, generation runs and the comparisons they queue: services and commands."""

import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Campaign, Comparison, Kind
from annotate.services.pairing import comparisons_generate, prompts_pending, responses_pair
from config.errors import Invalid
from generation.backends import Completion, Sampling
from generation.models import Policy, Prompt, Response, Split
from generation.services import policy_register
from tests.factories import CampaignFactory, PolicyFactory, PromptFactory
from training.evaluation import evaluation_campaign, evaluations_queue, heldout_answer
from training.models import Evaluation


class ScriptedBackend:
    """Answers from a script (the real backends are tested in test_backends.py)."""

    name = "scripted"

    def __init__(self, answers, fail_on_call=None):
        self.answers, self.calls, self.fail_on_call = answers, 0, fail_on_call

    def generate(self, prompts, sampling):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("GPU fell off the bus")
        return [
            [Completion(text, 3, "stop", -float(i + 1)) for i, text in enumerate(self.answers(p))]
            for p in prompts
        ]


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
def test_policy_vs_policy_queues_one_blind_eval_comparison_per_held_out_prompt():
    old, new = PolicyFactory(name="old"), PolicyFactory(name="new")
    for _ in range(3):
        PromptFactory(split=Split.EVAL)
    PromptFactory(split=Split.TRAIN)
    for policy, backend in (
        (old, ScriptedBackend(lambda p: ["old answer"])),
        (new, ScriptedBackend(lambda p: ["new"])),
    ):
        assert heldout_answer(policy=policy, sampling=Sampling(samples=4), backend=backend) == 3
    campaign = evaluation_campaign(name="new vs old")

    report = evaluations_queue(policy=new, opponent=old, campaign=campaign)

    assert report.extra["comparisons"] == 3
    assert Response.objects.filter(heldout=True).count() == 6  # one answer per policy and prompt
    for comparison in Comparison.objects.all():
        assert comparison.kind == Kind.EVAL and comparison.campaign == campaign
        assert {comparison.response_a.policy, comparison.response_b.policy} == {old, new}
        assert (comparison.evaluation.policy, comparison.evaluation.opponent) == (new, old)
    assert campaign.priority > CampaignFactory(name="train").priority  # evaluation is served first
    again = evaluations_queue(policy=new, opponent=old, campaign=campaign)
    assert "comparisons" not in again.extra and Evaluation.objects.count() == 3
    assert heldout_answer(policy=new, sampling=Sampling(), backend=None) == 3  # nothing to generate


@pytest.mark.django_db
def test_register_policy_checks_the_model_now(chat_model_dir, tmp_path):
    policy = policy_register(name="tiny", location=str(chat_model_dir))
    assert policy.location_kind == "directory"
    with pytest.raises(Invalid, match="no such directory"):
        policy_register(name="x", location=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Invalid, match=r"no config\.json"):
        policy_register(name="x", location=str(tmp_path / "empty"))
    with pytest.raises(Invalid, match="not a LoRA adapter directory"):
        policy_register(name="x", location=str(chat_model_dir), adapter=str(tmp_path / "empty"))
    with pytest.raises(Invalid, match="cannot be loaded"):
        policy_register(name="x", location="some-org/not-in-the-cache")
    with pytest.raises(CommandError, match="already exists"):
        call_command("register_policy", "tiny", "--path", str(chat_model_dir))
    assert Policy.objects.count() == 1


@pytest.mark.django_db
def test_register_embedded_policy():
    out = StringIO()
    call_command("register_policy", "--embedded", stdout=out)
    call_command("register_policy", "--embedded", stdout=out)
    policy = Policy.objects.get()
    assert policy.name == "smollm2-135m-instruct"
    assert "smollm2" in out.getvalue()


@pytest.mark.django_db
def test_generate_command_on_a_tiny_model_is_resumable(chat_model_dir):
    policy_register(name="tiny", location=str(chat_model_dir))
    for i in range(3):
        PromptFactory(text=f"name a colour {i}")
    PromptFactory(text="held out", split=Split.EVAL)
    out = StringIO()
    options = [
        "--policy",
        "tiny",
        "--samples",
        "3",
        "--max-new-tokens",
        "5",
        "--campaign",
        "r1",
        "--overlap",
        "2",
        "--temperature",
        "1.0",
        "--pairs",
        "all",
    ]

    call_command("generate", *options, stdout=out)

    assert "3 prompts, 9 responses stored" in out.getvalue()
    assert Comparison.objects.filter(campaign__name="r1", overlap=2).count() >= 3
    assert not Response.objects.filter(prompt__split=Split.EVAL).exists()
    call_command("generate", *options, stdout=out)
    assert "nothing to do" in out.getvalue()
    with pytest.raises(CommandError, match="--samples must be between 2 and 16"):
        call_command("generate", "--policy", "tiny", "--samples", "1")
    with pytest.raises(CommandError, match="no policy named"):
        call_command("generate", "--policy", "ghost")


@pytest.mark.django_db
def test_nul_characters_from_a_model_are_replaced_so_any_database_stores_them():
    report = run(PolicyFactory(), [PromptFactory()], ScriptedBackend(lambda p: ["a\x00b", "c"]))
    assert report.responses == 2
    assert Response.objects.filter(text="a\ufffdb").exists()
