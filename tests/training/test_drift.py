"""Drift: the figures on hand-worked numbers, and a drifting policy held back until staff promote it."""

import math

import pytest
import torch
from django.urls import reverse
from django.utils import timezone

from generation.models import Policy, Response, Split
from tests.factories import PolicyFactory, PromptFactory, ResponseFactory
from tests.training.test_rounds import FAST, judged_policy
from training.drift import FLUENCY_MIN_ANSWERS, drift_breaches, drift_summary, percentile, repetition
from training.errors import NotTrainable
from training.execution import round_execute
from training.models import RoundStatus, TrainingRound
from training.rounds import RoundRequest, round_create
from training.selectors import heldout_least_likely

GUARDS = {"kl_budget": 0.5, "fluency_limit": 1.2, "outlier_limit": 0.15}


def test_repetition_counts_repeated_word_trigrams():
    assert repetition("a b c a b c") == pytest.approx(1 / 4)  # abc bca cab abc: one of four repeats
    assert repetition("one two three four") == 0.0
    assert repetition("too short") == 0.0


def test_percentile_is_nearest_rank():
    values = list(range(1, 21))  # 1..20
    assert percentile(values, 95) == 19 and percentile(values, 100) == 20 and percentile(values, 50) == 10


def test_drift_summary_on_hand_worked_numbers():
    base_own = [-1.0] * 19 + [-2.0]  # NLLs 1 (x19) and 2: mean 1.05, 95th percentile 1
    drift = drift_summary(
        new_self=[-1.0, -2.0],
        new_under_reference=[-1.5, -2.5],
        new_under_base=[-1.5, -1.0],
        base_own=base_own,
        reference_own=base_own,
        new_texts=["a b c a b c", "fine answer here"],
        base_texts=["x y z", "x y z w"],
        new_tokens=[10, 30],
        new_ended=[True, False],
    )
    assert drift["kl"] == pytest.approx(0.5)  # each answer 0.5 nats/token likelier under the new policy
    assert drift["nll_base"] == pytest.approx(1.25) and drift["nll_base_own"] == pytest.approx(1.05)
    assert drift["fluency_ratio"] == pytest.approx(round(1.25 / 1.05, 4))
    assert drift["base_p95"] == 1.0 and drift["beyond_p95"] == pytest.approx(0.5)  # 1.5 > 1, 1.0 is not
    assert drift["repetition"] == pytest.approx(0.125) and drift["base_repetition"] == 0.0
    assert (drift["mean_tokens"], drift["stopped"]) == (20.0, 0.5)


def test_breaches_name_each_budget_and_fluency_needs_enough_answers():
    drift = {"answers": FLUENCY_MIN_ANSWERS, "kl": 0.8, "fluency_ratio": 1.5, "nll_base": 3.0,
             "nll_base_own": 2.0, "beyond_p95": 0.4}  # fmt: skip
    reasons = drift_breaches(drift, GUARDS)
    assert len(reasons) == 3 and "KL from its reference 0.800" in reasons[0] and "1.50×" in reasons[1]
    few = drift_breaches({**drift, "answers": 3, "kl": 0.1}, GUARDS)
    assert few == []  # KL within budget; 3 answers are too few to judge fluency or outliers
    assert drift_breaches({"answers": 40, "kl": math.nan}, GUARDS) == []


@pytest.fixture(autouse=True)
def rounds_dir(settings, tmp_path):
    settings.PREFLOOP_ROUNDS_DIR = tmp_path / "rounds"


@pytest.mark.django_db
def test_a_policy_beyond_its_guards_is_held_back_until_staff_promote_it(chat_model_dir, client, staff):
    policy = judged_policy(chat_model_dir)
    PromptFactory(text="answer briefly please")
    for i in range(FLUENCY_MIN_ANSWERS):
        PromptFactory(text=f"held out question {i}?", split=Split.EVAL)
    created = round_create(
        request=RoundRequest(
            policy=policy,
            hyperparameters=FAST,
            min_pairs=1,
            then_generate=1,
            generation={"samples": 2, "max_new_tokens": 4, "backend": "transformers"},
            guards={"fluency_limit": 1e-6},  # any answer is beyond this: the policy must be held back
        )
    )

    finished = round_execute(round_id=created.pk)

    assert finished.status == RoundStatus.SUCCEEDED
    new = Policy.objects.get(pk=finished.output_policy_id)
    assert new.held_back and "NLL under the base" in new.held_back_reason
    assert finished.drift["answers"] == FLUENCY_MIN_ANSWERS and finished.drift["kl"] is not None
    assert (
        Response.objects.filter(policy=new, heldout=True, base_nll__isnull=False).count()
        == FLUENCY_MIN_ANSWERS
    )
    assert not Response.objects.filter(policy=new, heldout=False).exists()  # no follow-up generation
    assert "is held back: no answers to train prompts" in finished.log
    with pytest.raises(NotTrainable, match="held back"):
        round_create(request=RoundRequest(policy=new, min_pairs=1))

    client.force_login(staff)
    page = client.get(reverse("training:round", args=[finished.pk])).content.decode()
    assert "is held back" in page and "Drift on the held-out prompts" in page and "Promote" in page
    leaderboard = client.get(reverse("training:dashboard")).content.decode()
    assert "Held back" in leaderboard
    assert "is within its guards" not in page
    client.post(reverse("training:promote", args=[new.pk]))
    new.refresh_from_db()
    assert not new.held_back and "it was held back: held-out answers' NLL" in new.notes
    promoted = client.get(reverse("training:round", args=[finished.pk])).content.decode()
    assert "is within its guards" not in promoted  # promoted by staff, not within its guards


@pytest.mark.django_db
def test_a_round_within_its_guards_says_so_in_words(chat_model_dir, client, staff):
    policy = judged_policy(chat_model_dir)
    for i in range(FLUENCY_MIN_ANSWERS):
        PromptFactory(text=f"held out question {i}?", split=Split.EVAL)
    created = round_create(
        request=RoundRequest(
            policy=policy,
            hyperparameters=FAST,
            min_pairs=1,
            generation={"max_new_tokens": 4, "backend": "transformers"},
            guards={"kl_budget": 100, "fluency_limit": 100, "outlier_limit": 1},  # nothing is beyond these
        )
    )
    finished = round_execute(round_id=created.pk)
    client.force_login(staff)

    page = client.get(reverse("training:round", args=[finished.pk])).content.decode()

    assert f"{finished.output_policy.name} is within its guards</strong>" in page and "not held back" in page


@pytest.mark.django_db
def test_a_round_past_its_kl_budget_stops_early_and_keeps_the_checkpoint_within_it(
    chat_model_dir, client, staff
):
    from safetensors.torch import load_file

    policy = judged_policy(chat_model_dir)
    hyperparameters = {**FAST, "lr": 0.5, "kl_every": 1}  # one step at lr 0.5 moves the tiny model far
    with pytest.raises(NotTrainable, match="needs held-out prompts"):
        round_create(request=RoundRequest(policy=policy, hyperparameters=hyperparameters, min_pairs=1))
    for i in range(4):
        PromptFactory(text=f"held out question {i}?", split=Split.EVAL)
    created = round_create(
        request=RoundRequest(
            policy=policy,
            hyperparameters=hyperparameters,
            min_pairs=1,
            generation={"max_new_tokens": 8, "backend": "transformers"},
            guards={"kl_budget": 1e-3},
        )
    )

    finished = round_execute(round_id=created.pk)

    assert finished.status == RoundStatus.SUCCEEDED
    stop = finished.stopped_early
    assert stop["step"] == 1 and stop["kept_step"] == 0 and stop["kl"] > 1e-3 and stop["budget"] == 1e-3
    assert finished.kl_checks == [[1, stop["kl"]]]
    assert "stopped early at step 1" in finished.log
    kept = load_file(str(Policy.objects.get(pk=finished.output_policy_id).location) + "/model.safetensors")
    start = load_file(str(chat_model_dir / "model.safetensors"))
    assert all(torch.equal(kept[name], start[name]) for name in start)  # the starting weights, kept
    client.force_login(staff)
    page = client.get(reverse("training:round", args=[finished.pk])).content.decode()
    assert "Stopped early" in page and "checkpoint of step 0" in page and "Early stop" in page


@pytest.fixture
def drifted_round(db):
    """A finished round whose new policy's held-out answers carry their NLL under the base: 20 base
    answers at NLL 1.0 to 1.95 (95th percentile 1.9), the new policy's at 1.2 to 2.15, one of them
    a script tag (model text is untrusted)."""
    base = PolicyFactory(name="base")
    new = PolicyFactory(name="base-round1", parent=base)
    for i in range(20):
        prompt = PromptFactory(text=f"Held-out question {i}?", split=Split.EVAL)
        ResponseFactory(
            prompt=prompt, policy=base, heldout=True, text=f"base answer {i}", base_nll=1.0 + i / 20
        )
        text = "<script>alert('x')</script> broken" if i == 19 else f"new answer {i}"
        ResponseFactory(
            prompt=prompt, policy=new, heldout=True, text=text, base_nll=1.2 + i / 20, finish_reason="length"
        )
    return TrainingRound.objects.create(
        policy=base,
        reference=base,
        output_policy=new,
        status=RoundStatus.SUCCEEDED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        drift={"answers": 20, "base": "base", "reference": "base", "kl": 0.1, "nll_base": 1.68,
               "nll_base_own": 1.48, "fluency_ratio": 1.14, "beyond_p95": 0.25, "base_p95": 1.9},
    )  # fmt: skip


def test_least_likely_answers_come_first_beside_the_base_answer_to_their_prompt(drifted_round):
    unlikely = heldout_least_likely(policy=drifted_round.output_policy, limit=3)
    assert [u.answer.base_nll for u in unlikely] == pytest.approx([2.15, 2.1, 2.05])
    assert [u.base_answer.text for u in unlikely] == ["base answer 19", "base answer 18", "base answer 17"]
    assert all(u.beyond_p95 for u in unlikely)  # all above the base's 95th percentile, 1.9
    assert heldout_least_likely(policy=drifted_round.policy) == []  # the base did not drift from itself


def test_round_page_and_api_show_the_least_likely_answers_as_text(drifted_round, client, api, staff):
    client.force_login(staff)
    page = client.get(reverse("training:round", args=[drifted_round.pk])).content.decode()
    assert "Its least likely answers under the base" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; broken" in page and "<script>alert" not in page
    assert page.count("beyond the base's 95th percentile") == 5 and "base answer 15" in page
    api.force_authenticate(staff)
    shown = api.get(f"/api/rounds/{drifted_round.pk}/").json()["least_likely"]
    assert shown[0] == {
        "prompt_id": drifted_round.output_policy.responses.get(text__startswith="<script>").prompt_id,
        "prompt": "Held-out question 19?",
        "answer": "<script>alert('x')</script> broken",
        "base_nll": pytest.approx(2.15),
        "beyond_p95": True,
        "base_answer": "base answer 19",
        "base_answer_nll": pytest.approx(1.95),
    }
    assert len(shown) == 5
