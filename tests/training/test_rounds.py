"""Training rounds end to end on a tiny chat model: export → train → register → generate next."""

import hashlib
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Comparison, Judgment, Kind, Source
from annotate.services.simulation import comparisons_simulate
from benchmarks.loop_sweep import final_row
from generation.models import Policy, Prompt, Response, Split
from generation.services import policy_register
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    PolicyFactory,
    PromptFactory,
    ResponseFactory,
    judged_pairs,
)
from training.errors import NotEnoughPairs, NotTrainable, RoundFinished
from training.execution import round_execute
from training.models import Evaluation, RoundMetric, RoundStatus, TrainingRound
from training.rounds import RoundRequest, round_cancel, round_create

FAST = {"lr": 1e-3, "batch_size": 2, "max_length": 64, "dtype": "fp32"}


@pytest.fixture(autouse=True)
def rounds_dir(settings, tmp_path):
    settings.PREFLOOP_ROUNDS_DIR = tmp_path / "rounds"
    return settings.PREFLOOP_ROUNDS_DIR


def judged_policy(model_dir, *, pairs=4, name="tiny"):
    """A policy on the tiny model with ``pairs`` comparisons of its answers, each judged."""
    policy = policy_register(name=name, location=str(model_dir))
    for i in range(pairs):
        prompt = PromptFactory(text=f"name a colour {i}")
        ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, policy=policy, text="blue."),
            response_b=ResponseFactory(prompt=prompt, policy=policy, text="the quick brown fox " * 3),
            campaign=CampaignFactory(name="r0"),
        )
    comparisons_simulate(oracle_name="shorter", count=100, campaign=CampaignFactory(name="r0"))
    return policy


@pytest.mark.django_db
def test_train_round_trains_registers_and_generates_next(chat_model_dir, rounds_dir):
    policy = judged_policy(chat_model_dir)
    for i in range(3):
        PromptFactory(text=f"answer briefly please {i}")
    PromptFactory(text="what is the capital of france?", split=Split.EVAL)
    out = StringIO()

    call_command(
        "train_round",
        "--policy=tiny",
        "--min-pairs=4",
        "--lr=1e-3",
        "--batch-size=2",
        "--max-length=64",
        "--epochs=2",
        "--then-generate=2",
        "--samples=2",
        "--max-new-tokens=6",
        "--backend=transformers",
        stdout=out,
    )

    training_round = TrainingRound.objects.get()
    assert training_round.status == RoundStatus.SUCCEEDED, training_round.log
    new = training_round.output_policy
    assert new.parent == policy and new.name == f"tiny-round{training_round.pk}"
    assert (Path(new.location) / "model.safetensors").is_file()
    # the data it trained on is on disk, named by its hash, with the counts on the round
    data = Path(training_round.data_file)
    assert hashlib.sha256(data.read_bytes()).hexdigest() == training_round.data_sha256
    assert training_round.pairs == 4 == len(data.read_text().splitlines())
    assert all(json.loads(line)["chosen"][0]["content"] == "blue." for line in data.read_text().splitlines())
    # every optimizer step's metrics, TRL names
    steps = list(training_round.metrics.values_list("step", flat=True))
    assert steps == [1, 2, 3, 4] and training_round.steps_total == 4
    assert {"loss", "rewards/accuracies", "rewards/margins"} <= set(training_round.metrics.first().values)
    # then-generate: the new policy answered 2 fresh train prompts; eval vs its parent is queued
    fresh = Response.objects.filter(policy=new, heldout=False)
    assert fresh.values("prompt").distinct().count() == 2
    assert not fresh.filter(prompt__text__startswith="name a colour").exists()  # least answered first
    assert set(Comparison.objects.filter(response_a__in=fresh).values_list("campaign", flat=True)) <= {
        training_round.campaign_id
    }
    assert training_round.campaign.name == f"Round {training_round.pk} answers"
    eval_queued = Comparison.objects.filter(campaign=training_round.eval_campaign)
    # annotators see the campaign's name: a blind evaluation names neither policy
    assert training_round.eval_campaign.name == f"Round {training_round.pk} blind evaluation"
    assert eval_queued.count() <= 1 and all(c.kind == Kind.EVAL for c in eval_queued)
    assert {r.policy for c in eval_queued for r in (c.response_a, c.response_b)} <= {new, policy}
    for evaluation in Evaluation.objects.filter(comparison__in=eval_queued):
        assert (evaluation.policy, evaluation.opponent, evaluation.training_round) == (
            new,
            policy,
            training_round,
        )
    assert "registered policy" in out.getvalue() and "succeeded" in out.getvalue()
    assert training_round.error == ""


@pytest.mark.django_db
def test_round_with_too_few_pairs_refuses_and_says_how_many():
    policy = PolicyFactory(name="small")
    judged_pairs(policy, 1)
    with pytest.raises(NotEnoughPairs, match=r"has 1 preference pairs .* needs at least 8"):
        round_create(request=RoundRequest(policy=policy))
    with pytest.raises(CommandError, match="has 1 preference pairs"):
        call_command("train_round", "--policy=small")
    assert not TrainingRound.objects.exists()


@pytest.mark.django_db
def test_bad_settings_and_untrainable_policies_are_refused():
    policy = PolicyFactory(name="p")
    with pytest.raises(NotTrainable, match=r"beta must be a number from 0\.0001 to 100"):
        round_create(request=RoundRequest(policy=policy, hyperparameters={"beta": -1}, min_pairs=1))
    with pytest.raises(NotTrainable, match="unknown training option 'momentum'"):
        round_create(request=RoundRequest(policy=policy, hyperparameters={"momentum": 0.9}, min_pairs=1))
    with pytest.raises(NotTrainable, match="GGUF"):
        round_create(
            request=RoundRequest(policy=PolicyFactory(location="/m.gguf", location_kind="gguf"), min_pairs=1)
        )
    with pytest.raises(CommandError, match="no policy named 'nope'"):
        call_command("train_round", "--policy=nope")


@pytest.mark.django_db
def test_a_failed_round_records_the_error_and_registers_nothing(chat_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in chat_model_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    policy = judged_policy(broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    training_round = round_create(request=RoundRequest(policy=policy, hyperparameters=FAST, min_pairs=1))

    finished = round_execute(round_id=training_round.pk)

    assert finished.status == RoundStatus.FAILED
    assert finished.error and finished.finished_at is not None
    assert "failed:" in finished.log
    assert Policy.objects.count() == 1


@pytest.mark.django_db
def test_cancelling_a_queued_round_stops_it_before_it_starts(chat_model_dir):
    policy = judged_policy(chat_model_dir)
    training_round = round_create(request=RoundRequest(policy=policy, hyperparameters=FAST, min_pairs=1))

    round_cancel(training_round=training_round)
    finished = round_execute(round_id=training_round.pk)

    assert finished.status == RoundStatus.CANCELLED and finished.started_at is None
    with pytest.raises(RoundFinished):
        round_cancel(training_round=finished)


@pytest.mark.django_db
def test_cancelling_a_running_round_stops_it_at_the_next_step(chat_model_dir):
    policy = judged_policy(chat_model_dir)
    training_round = round_create(request=RoundRequest(policy=policy, hyperparameters=FAST, min_pairs=1))
    TrainingRound.objects.filter(pk=training_round.pk).update(cancel_requested=True)  # as if staff pressed it

    finished = round_execute(round_id=training_round.pk)

    assert finished.status == RoundStatus.CANCELLED
    assert finished.output_policy is None and Policy.objects.count() == 1
    assert RoundMetric.objects.filter(round=finished).count() <= 1


@pytest.mark.django_db
def test_training_data_is_the_policys_own_judged_comparisons(chat_model_dir):
    policy = judged_policy(chat_model_dir, pairs=2)
    judged_pairs(PolicyFactory(), 1)  # another policy's pair: not this policy's data
    training_round = round_create(request=RoundRequest(policy=policy, hyperparameters=FAST, min_pairs=1))
    finished = round_execute(round_id=training_round.pk)
    assert finished.status == RoundStatus.SUCCEEDED
    assert finished.pairs == 2
    assert Judgment.objects.filter(source=Source.SIMULATED).count() == 2


# run_loop on loop_scene: the base answers its train prompts three times each, 8 tokens an answer
TINY_LOOP = (
    "--policy=base",
    "--prompts=3",
    "--samples=3",
    "--pairs=all",
    "--max-new-tokens=8",
    "--backend=transformers",
)


def loop_scene(model_dir, *, held_out):
    """A base policy on the tiny model, 6 train prompts and ``held_out`` eval prompts for run_loop."""
    policy_register(name="base", location=str(model_dir))
    for i in range(6):
        PromptFactory(text=f"answer briefly please {i}")
    for i in range(held_out):
        PromptFactory(text=f"what is the capital of country {i}?", split=Split.EVAL)


@pytest.mark.django_db
def test_run_loop_reports_win_rates_each_round(chat_model_dir, tmp_path):
    loop_scene(chat_model_dir, held_out=3)
    report = tmp_path / "loop.json"
    out = StringIO()

    call_command(
        "run_loop",
        "--rounds=2",
        "--oracle=shorter",
        *TINY_LOOP,
        "--lr=1e-3",
        "--batch-size=4",
        "--max-length=64",
        "--check-oracle=fluency",
        "--reference-mode=base",
        "--rpo-alpha=0.5",
        f"--report={report}",
        stdout=out,
    )

    results = json.loads(report.read_text())["rounds"]
    assert [r["round"] for r in results] == [1, 2]
    assert all(sum(r["verdicts"].values()) == r["judgments"] > 0 for r in results)
    assert set().union(*(r["verdicts"] for r in results)) <= {"first", "second", "tie", "both_bad"}
    second = Policy.objects.get(name=results[1]["policy"])
    assert second.parent.name == results[0]["policy"] and second.parent.parent.name == "base"
    assert results[1]["vs_previous"]["opponent"] == results[0]["policy"]
    assert results[1]["vs_base"]["opponent"] == "base"
    for row in results:
        for key in ("vs_previous", "vs_base"):
            rate = row[key]
            if rate is not None:  # no games when every held-out answer came out identical
                assert rate["low"] <= rate["rate"] <= rate["high"]
                assert rate["wins"] + rate["ties"] + rate["losses"] <= 3
                controlled = rate["length_controlled"]  # the same games with length taken out
                assert controlled["low"] - 1e-9 <= controlled["rate"] <= controlled["high"] + 1e-9
    # every held-out answer, the last round's included, was sampled with the loop's settings
    assert set(Response.objects.filter(heldout=True).values_list("sampling__max_new_tokens", flat=True)) == {
        8
    }
    assert all(r["heldout_answers"]["count"] == 3 for r in results)
    printed = out.getvalue()
    assert "round 2/2" in printed and "on held-out prompts:" in printed
    # drift every round, the second judge beside the first, the reference anchored at the base
    for row in results:
        assert {"kl", "nll_base", "fluency_ratio", "beyond_p95", "repetition"} <= set(row["drift"])
        assert row["check"]["judge"] == "fluency" and row["held_back"] is None
    assert "drift: KL" in printed and "judged by fluency instead:" in printed
    # and the answers behind the drift figures, least likely under the base first, to be read
    for row in results:
        nlls = [item["base_nll"] for item in row["least_likely"]]
        assert len(nlls) == 3 and nlls == sorted(nlls, reverse=True)
        texts = set(
            Response.objects.filter(policy__name=row["policy"], heldout=True).values_list("text", flat=True)
        )
        assert {item["answer"] for item in row["least_likely"]} == texts
    assert "least likely held-out answers under base (NLL per token):" in printed
    assert {r.reference.name for r in TrainingRound.objects.all()} == {"base"}
    assert all(r.hyperparameters["rpo_alpha"] == 0.5 for r in TrainingRound.objects.all())
    # three train prompts fresh in each round: the second round did not re-answer the first's
    assert Prompt.objects.filter(split=Split.TRAIN, responses__isnull=True).count() == 0
    # the sweep script reads the final round's figures from this report
    row = final_row(json.loads(report.read_text()))
    versus = results[1]["vs_base"] or {}
    assert row["round"] == 2 and row["rate"] == versus.get("rate")
    assert row["fluency_ratio"] == results[1]["drift"]["fluency_ratio"]
    assert row["beyond_p95"] == results[1]["drift"]["beyond_p95"] and row["held_back"] is None
    assert row["check"] == ((results[1]["check"]["vs_base"] or {}).get("rate"))


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_on_the_embedded_smollm2_trains_registers_and_the_new_policy_answers():
    from generation.services import policy_register_embedded

    base = policy_register_embedded()
    for i, (short, long) in enumerate(
        [("4.", "It is four, I believe, but let me explain."), ("Red.", "Red is one of the primary colours.")]
    ):
        prompt = PromptFactory(text=["What is 2 + 2?", "Name a primary colour."][i])
        ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, policy=base, text=long),
            response_b=ResponseFactory(prompt=prompt, policy=base, text=short),
        )
    comparisons_simulate(oracle_name="shorter", count=10)
    PromptFactory(text="Say hello.")
    PromptFactory(text="Name a fruit.", split=Split.EVAL)
    training_round = round_create(
        request=RoundRequest(
            policy=base,
            hyperparameters={"lr": 1e-5, "batch_size": 2, "max_length": 96, "dtype": "fp32"},
            min_pairs=2,
            then_generate=1,
            generation={"samples": 2, "max_new_tokens": 12, "backend": "transformers"},
        )
    )

    finished = round_execute(round_id=training_round.pk)

    assert finished.status == RoundStatus.SUCCEEDED, finished.log
    assert finished.pairs == 2 and finished.metrics.count() == 1
    assert finished.output_policy.parent == base
    answers = Response.objects.filter(policy=finished.output_policy)
    assert answers.filter(heldout=False, prompt__text="Say hello.").count() >= 1
    assert answers.filter(heldout=True, prompt__text="Name a fruit.").exclude(text="").exists()
    assert not finished.following_up and finished.error == ""


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["kto", "sft"])
def test_a_round_trains_kto_or_sft_on_what_the_judges_said(method, chat_model_dir, rounds_dir):
    policy = judged_policy(chat_model_dir)
    out = StringIO()

    call_command(
        "train_round", "--policy=tiny", "--min-pairs=4", f"--method={method}", "--lr=1e-3", "--batch-size=2",
        "--max-length=64", stdout=out,
    )  # fmt: skip

    training_round = TrainingRound.objects.get()
    assert training_round.status == RoundStatus.SUCCEEDED, training_round.log
    assert training_round.hyperparameters["loss"] == method
    assert training_round.hyperparameters["rpo_alpha"] == 0.0  # RPO is for pairs
    rows = [json.loads(line) for line in Path(training_round.data_file).read_text().splitlines()]
    if method == "kto":  # each judged pair: its chosen answer desirable, its rejected one not
        assert len(rows) == 8 and sorted(r["label"] for r in rows) == [False] * 4 + [True] * 4
        assert {r["completion"][0]["content"] for r in rows if r["label"]} == {"blue."}
        assert "kl" in training_round.metrics.first().values
    else:  # the chosen answers alone
        assert len(rows) == 4 and {r["completion"][0]["content"] for r in rows} == {"blue."}
        assert "num_tokens" in training_round.metrics.first().values
    assert training_round.output_policy.parent == policy
    # the data card travels with the round: beside its data and on the round itself
    card = (Path(training_round.data_file).parent / "README.md").read_text()
    assert card == training_round.data_card and "prefloop data card" in card
    assert f'- "{method}"' in card and "simulated: 4 judgments" in card
    assert {"prefloop data card", "Data card"} & set(call_round_page(training_round))


def call_round_page(training_round):
    from django.test import Client

    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(is_staff=True))
    page = client.get(f"/training/rounds/{training_round.pk}/").content.decode()
    return {marker for marker in ("prefloop data card", "Data card") if marker in page}


@pytest.mark.django_db
def test_method_and_loss_that_disagree_are_refused(chat_model_dir):
    judged_policy(chat_model_dir)
    with pytest.raises(CommandError, match="--method sft trains with its own loss, not --loss ipo"):
        call_command("train_round", "--policy=tiny", "--method=sft", "--loss=ipo")
    assert not TrainingRound.objects.exists()


@pytest.mark.django_db
def test_run_loop_warns_of_a_judge_that_ties_on_everything_and_the_round_says_why_it_cannot_train(
    chat_model_dir,
):
    # the tiny model's 8 seeded tokens never say the prompts' key word ("answer"): key-noun ties every pair
    loop_scene(chat_model_dir, held_out=2)
    out = StringIO()

    with pytest.raises(CommandError, match=r"0 preference pairs .*left out: tie: 9"):
        call_command(
            "run_loop",
            "--rounds=1",
            "--oracle=key-noun",
            *TINY_LOOP,
            "--batch-size=4",
            "--max-length=64",
            stdout=out,
        )

    printed = out.getvalue()
    assert "simulated key-noun: 9 judgments" in printed and "(tie 9)" in printed
    assert "warning: key-noun tied 9 of 9 judgments (100%)" in printed
    assert not TrainingRound.objects.filter(status=RoundStatus.SUCCEEDED).exists()


@pytest.mark.django_db
def test_run_loop_sft_first_takes_the_base_through_sft_then_preference_rounds(chat_model_dir, tmp_path):
    loop_scene(chat_model_dir, held_out=2)
    report = tmp_path / "loop.json"
    out = StringIO()

    call_command(
        "run_loop", "--rounds=1", "--sft-first", "--oracle=shorter", "--policy=base", "--prompts=3",
        "--samples=3", "--pairs=all", "--max-new-tokens=8", "--backend=transformers", "--lr=1e-3",
        "--batch-size=4", "--max-length=64", "--rpo-alpha=0.5", f"--report={report}", stdout=out,
    )  # fmt: skip

    results = json.loads(report.read_text())["rounds"]
    assert [(r["round"], r["method"]) for r in results] == [(1, "sft"), (2, "sigmoid")]
    sft_round, dpo_round = TrainingRound.objects.order_by("pk")
    assert sft_round.hyperparameters["loss"] == "sft" and sft_round.hyperparameters["rpo_alpha"] == 0.0
    assert dpo_round.policy == sft_round.output_policy  # DPO starts from the SFT policy
    assert dpo_round.hyperparameters["rpo_alpha"] == 0.5
    assert "round 1/2 (SFT on the chosen answers)" in out.getvalue()


@pytest.mark.django_db
def test_a_robust_round_smooths_each_pair_by_its_confidence(chat_model_dir, rounds_dir):
    judged_policy(chat_model_dir)
    call_command(
        "train_round", "--policy=tiny", "--min-pairs=4", "--loss=robust", "--confidence-smoothing", "--lr=1e-3",
        "--batch-size=2", "--max-length=64", stdout=StringIO(),
    )  # fmt: skip
    training_round = TrainingRound.objects.get()
    assert training_round.status == RoundStatus.SUCCEEDED, training_round.log
    assert training_round.hyperparameters["confidence_smoothing"] is True
    rows = [json.loads(line) for line in Path(training_round.data_file).read_text().splitlines()]
    assert all(0.0 <= row["confidence"] <= 1.0 for row in rows)  # what the smoothing is made of


@pytest.mark.django_db
def test_confidence_smoothing_needs_the_robust_loss(chat_model_dir):
    judged_policy(chat_model_dir)
    with pytest.raises(CommandError, match="label_smoothing applies to the 'robust' loss only"):
        call_command("train_round", "--policy=tiny", "--min-pairs=4", "--confidence-smoothing")


@pytest.mark.django_db
def test_run_loop_with_uncertain_pairs_a_budget_and_noisy_judges_weighted_by_reliability(
    chat_model_dir, tmp_path
):
    loop_scene(chat_model_dir, held_out=2)
    report = tmp_path / "loop.json"
    out = StringIO()

    call_command(
        "run_loop",
        "--rounds=2",
        "--oracle=shorter",
        "--policy=base",
        "--prompts=3",
        "--samples=3",
        "--pairs=uncertain",
        "--budget=2",
        "--overlap=3",
        "--judge-flips=0,0,0.35,0.35,0.35",
        "--aggregation=dawid-skene",
        "--max-new-tokens=8",
        "--temperature=1.5",
        "--backend=transformers",
        "--lr=1e-3",
        "--batch-size=4",
        "--max-length=64",
        f"--report={report}",
        stdout=out,
    )

    rounds = json.loads(report.read_text())["rounds"]
    first, second = TrainingRound.objects.order_by("id")
    assert first.aggregation == second.aggregation == "dawid-skene"
    assert all(r["aggregation"] == "dawid-skene" for r in rounds)
    assert "Dawid-Skene" in first.data_card
    # the base has no parent: its answers were paired at random; the round-1 policy's by uncertainty,
    # each campaign within the budget of 2 comparisons, each judged by 3 of the 5 judges (or one more)
    printed = out.getvalue()
    assert "paired at random (uncertain: the policy has no parent): 3" in printed
    assert "answers scored for uncertainty" in first.log
    for campaign in Comparison.objects.filter(kind="train").values_list("campaign", flat=True).distinct():
        queued = Comparison.objects.filter(campaign=campaign, kind="train")
        assert queued.count() <= 2
        assert all(3 <= c.judgments.count() <= 5 for c in queued)
    judges = set(
        Judgment.objects.filter(comparison__kind="train").values_list("annotator__username", flat=True)
    )
    assert judges <= {f"sim:shorter:{i}" for i in range(1, 6)} and len(judges) >= 3
    assert rounds[0]["judgments"] >= 3 and "reversed by the judges' flip rates" in printed


@pytest.mark.django_db
def test_a_kto_round_trains_on_thumbs_and_pairs_together(chat_model_dir, rounds_dir, annotator):
    from annotate.models import Task
    from annotate.services.judgments import judgment_submit
    from annotate.services.queue import comparison_assign_next

    policy = judged_policy(chat_model_dir, pairs=2)
    thumbs = CampaignFactory(name="thumbs", task=Task.THUMBS)
    for i, (text, verdict) in enumerate((("green.", "good"), ("a banana phone", "bad"), ("red.", "good"))):
        prompt = PromptFactory(text=f"name a colour {i + 10}")
        ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, policy=policy, text=text),
            response_b=None,
            campaign=thumbs,
        )
        served = comparison_assign_next(annotator=annotator, campaign=thumbs)
        judgment_submit(comparison=served.comparison, annotator=annotator, verdict=verdict)
    with pytest.raises(
        CommandError, match=r"has 2 preference pairs.*thumbs \(one answer"
    ):  # DPO: pairs alone
        call_command("train_round", "--policy=tiny", "--min-pairs=5", "--max-length=64", stdout=StringIO())

    call_command(
        "train_round", "--policy=tiny", "--min-pairs=7", "--method=kto", "--lr=1e-3", "--batch-size=2",
        "--max-length=64", stdout=StringIO(),
    )  # fmt: skip

    training_round = TrainingRound.objects.get()
    assert training_round.status == RoundStatus.SUCCEEDED, training_round.log
    rows = [json.loads(line) for line in Path(training_round.data_file).read_text().splitlines()]
    labelled = sorted((r["completion"][0]["content"], r["label"]) for r in rows)
    assert labelled == sorted(
        [("blue.", True)] * 2 + [("the quick brown fox " * 3, False)] * 2
        + [("green.", True), ("a banana phone", False), ("red.", True)]
    )  # fmt: skip
    assert "kl" in training_round.metrics.first().values
