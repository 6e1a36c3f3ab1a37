"""Held-out answers and blind policy-vs-policy comparisons (training.round_follow_up), and the
scripted loop's warning about tied judges (training.scripted_loop)."""

from collections import Counter
from itertools import combinations

import pytest

from annotate.models import Comparison, Kind
from annotate.oracles import prefers_key_noun, prefers_shorter
from generation.backends import Sampling
from generation.models import Response, Split
from tests.factories import CampaignFactory, PolicyFactory, PromptFactory
from tests.scripted import ScriptedBackend
from training.models import Evaluation
from training.round_follow_up import evaluation_campaign, evaluations_queue, heldout_answer
from training.scripted_loop import tied_warning


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


def test_a_judge_that_ties_on_most_pairs_is_warned_about_with_its_counts():
    # four answers of five already name the topic: key-noun ties every pair of them (6 of 10)
    answers = [
        "DNA is the molecule of heredity.",
        "DNA carries genes.",
        "It is DNA.",
        "Genes: DNA.",
        "A helix.",
    ]
    pairs = list(combinations(answers, 2))
    key_noun = Counter(prefers_key_noun("What is DNA?", a, b) for a, b in pairs)
    shorter = Counter(prefers_shorter("What is DNA?", a, b) for a, b in pairs)

    warning = tied_warning("key-noun", key_noun)

    assert key_noun == {"tie": 6, "first": 4}
    assert warning is not None and "key-noun tied 6 of 10 judgments (60%)" in warning
    assert tied_warning("shorter", shorter) is None  # every pair decided
    assert tied_warning("key-noun", Counter({"tie": 5, "first": 5})) is None  # half is not most
    assert tied_warning("key-noun", Counter()) is None
