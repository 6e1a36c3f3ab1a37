"""What follows training: the follow-up as its own phase, cancellable, and rounds whose process died."""

import itertools

import pytest

from annotate.models import Comparison
from generation.backends import ModelSpec
from generation.backends.transformers import TransformersBackend
from generation.models import Response
from generation.services import TokenMeter, responses_score
from tests.factories import PolicyFactory, PromptFactory
from tests.training.test_rounds import FAST, judged_policy
from training.errors import RoundCancelled
from training.models import RoundStatus, TrainingRound
from training.recorder import Recorder
from training.round_follow_up import round_follow_up
from training.round_training import round_train
from training.rounds import RoundRequest, round_abandon, round_cancel, round_create


@pytest.fixture(autouse=True)
def rounds_dir(settings, tmp_path):
    settings.PREFLOOP_ROUNDS_DIR = tmp_path / "rounds"


@pytest.mark.django_db
def test_cancel_during_the_follow_up_stops_it_and_keeps_the_round_succeeded(chat_model_dir):
    policy = judged_policy(chat_model_dir)
    PromptFactory(text="answer briefly please")
    created = round_create(
        request=RoundRequest(
            policy=policy,
            hyperparameters=FAST,
            min_pairs=1,
            then_generate=1,
            generation={"samples": 2, "max_new_tokens": 4, "backend": "transformers"},
        )
    )
    trained = round_train(round_id=created.pk)
    assert trained.status == RoundStatus.SUCCEEDED and trained.following_up  # the follow-up is next

    cancelled = round_cancel(training_round=trained)  # allowed while following up; stays succeeded
    assert cancelled.cancel_requested and cancelled.status == RoundStatus.SUCCEEDED
    round_follow_up(trained, Recorder(trained))

    trained.refresh_from_db()
    assert trained.status == RoundStatus.SUCCEEDED and not trained.following_up
    assert "follow-up cancelled by staff" in trained.log
    assert not Response.objects.filter(policy=trained.output_policy).exists()


@pytest.mark.django_db
def test_the_follow_ups_progress_reports_check_for_cancellation():
    policy = PolicyFactory()
    training_round = TrainingRound.objects.create(policy=policy, reference=policy, status=RoundStatus.RUNNING)
    recorder = Recorder(training_round)
    meter = recorder.meter("answering")
    meter.every = 0.0
    meter(10)
    assert "answering: 10 tokens" in TrainingRound.objects.get().log
    TrainingRound.objects.update(cancel_requested=True)
    with pytest.raises(RoundCancelled):
        meter(5)


def test_token_meter_reports_at_most_every_interval():
    seen = []
    meter = TokenMeter(lambda tokens, rate: seen.append(tokens), every=3600)
    meter(5)
    meter(7)
    assert seen == []  # not yet an interval
    meter.last -= 3600
    meter(1)
    assert seen == [13]


@pytest.mark.django_db
def test_a_round_whose_process_died_is_failed_or_its_follow_up_stopped():
    policy = PolicyFactory()
    running = TrainingRound.objects.create(policy=policy, reference=policy, status=RoundStatus.RUNNING)
    round_abandon(training_round=running, why="its process exited with status -9")
    running.refresh_from_db()
    assert running.status == RoundStatus.FAILED and "status -9" in running.error and running.finished_at
    done = TrainingRound.objects.create(
        policy=policy,
        reference=policy,
        status=RoundStatus.SUCCEEDED,
        output_policy=PolicyFactory(),
        finished_at=running.finished_at,
        following_up=True,
    )
    round_abandon(training_round=done, why="killed")
    done.refresh_from_db()
    assert done.status == RoundStatus.SUCCEEDED and not done.following_up and "killed" in done.error


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_queues_its_new_policys_least_certain_pairs_within_its_budget(chat_model_dir):
    policy = judged_policy(chat_model_dir)
    prompts = [PromptFactory(text=f"answer briefly please {i}") for i in range(2)]
    created = round_create(
        request=RoundRequest(
            policy=policy,
            hyperparameters=FAST,
            min_pairs=1,
            then_generate=2,
            generation={
                "samples": 3,
                "max_new_tokens": 6,
                "temperature": 1.5,
                "backend": "transformers",
                "pairs": "uncertain",
                "budget": 2,
            },
        )
    )
    trained = round_train(round_id=created.pk)
    round_follow_up(trained, Recorder(trained))
    trained.refresh_from_db()

    new = trained.output_policy
    assert trained.campaign.pair_budget == 2 and "uncertain pairs" in trained.log
    queued = Comparison.objects.filter(campaign=trained.campaign)
    assert queued.count() == 2
    # The margins, recomputed here from both models' sequence log-probs: the queued pairs are the
    # two smallest of every pair of the new policy's answers.
    answers = list(Response.objects.filter(policy=new, prompt__in=prompts).select_related("prompt"))
    rewards = {
        r.pk: mine - theirs
        for r, mine, theirs in zip(
            answers,
            responses_score(TransformersBackend(ModelSpec(new.location)), answers, total=True),
            responses_score(TransformersBackend(ModelSpec(policy.location)), answers, total=True),
            strict=True,
        )
    }
    margins = sorted(
        abs(rewards[a.pk] - rewards[b.pk])
        for rs in [[r for r in answers if r.prompt_id == p.pk] for p in prompts]
        for a, b in itertools.combinations(rs, 2)
    )
    chosen = sorted(abs(rewards[c.response_a_id] - rewards[c.response_b_id]) for c in queued)
    assert len(margins) > 2 and chosen == pytest.approx(margins[:2], abs=1e-4)
