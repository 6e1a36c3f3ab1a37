"""Staff start, watch and cancel rounds in the browser; the work goes to the task queue."""

import json

import pytest
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from tests.factories import ComparisonFactory, PolicyFactory, PromptFactory, ResponseFactory, judged_pairs
from training.models import RoundMetric, RoundStatus, TrainingRound

FORM = {
    "loss": "sigmoid",
    "beta": "0.1",
    "lr": "1e-5",
    "epochs": "1",
    "batch_size": "4",
    "lora_r": "0",
    "max_length": "256",
    "then_generate": "4",
    "samples": "3",
    "max_new_tokens": "64",
    "overlap": "2",
}


@pytest.mark.django_db
def test_training_pages_are_staff_only(client, annotator):
    client.force_login(annotator)
    page = client.get(reverse("training:dashboard"))
    # a 403 in the site's own page, not Django's admin login as if they had to sign in again
    assert (
        page.status_code == 403 and "/training/ is for staff; you are signed in as" in page.content.decode()
    )
    assert 'href="/annotate/"' in page.content.decode()
    assert client.post(reverse("training:start"), {}).status_code == 403
    client.logout()
    assert client.get(reverse("training:dashboard"))["Location"].startswith("/login/")


@pytest.mark.django_db
def test_dashboard_shows_policies_with_their_ready_pairs(client, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 3)
    client.force_login(staff)
    page = client.get(reverse("training:dashboard")).content.decode()
    assert "smol — 3 pairs ready (8 needed)" in page
    prompt = PromptFactory()
    ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, policy=policy),
        response_b=ResponseFactory(prompt=prompt, policy=policy),
    )  # not judged yet
    page = client.get(reverse("training:dashboard")).content.decode()
    assert "smol — 3 pairs ready (8 needed) (left out: not judged 1)" in page
    assert "Leaderboard" in page and "Start round" in page


@pytest.mark.django_db
def test_start_round_enqueues_a_task_and_shows_the_round(client, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 8)
    client.force_login(staff)

    response = client.post(reverse("training:start"), {**FORM, "policy": policy.pk})

    training_round = TrainingRound.objects.get()
    assert response.status_code == 302 and response.url == reverse("training:round", args=[training_round.pk])
    assert training_round.status == RoundStatus.QUEUED and training_round.started_by == staff
    assert training_round.hyperparameters["lr"] == 1e-5 and training_round.then_generate == 4
    task = DBTaskResult.objects.get()
    assert str(task.id) == training_round.task_id
    assert task.task_path == "training.tasks.round_run_task" and task.args_kwargs["kwargs"] == {
        "round_id": training_round.pk
    }
    page = client.get(response.url).content.decode()
    assert "Queued" in page and "Waiting for a worker" in page and 'hx-trigger="every 2s"' in page


@pytest.mark.django_db
def test_start_round_with_too_few_pairs_says_how_many(client, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 2)
    client.force_login(staff)
    response = client.post(reverse("training:start"), {**FORM, "policy": policy.pk})
    assert response.status_code == 400
    assert "has 2 preference pairs" in response.content.decode()
    assert not TrainingRound.objects.exists() and not DBTaskResult.objects.exists()


@pytest.mark.django_db
def test_live_fragment_draws_the_curves_and_stops_polling_when_finished(client, staff):
    policy = PolicyFactory()
    training_round = TrainingRound.objects.create(policy=policy, reference=policy, status=RoundStatus.RUNNING)
    for step, loss in [(1, 0.69), (2, 0.5), (3, 0.4)]:
        RoundMetric.objects.create(
            round=training_round,
            step=step,
            values={
                "step": step,
                "loss": loss,
                "rewards/accuracies": 0.5 + step / 10,
                "rewards/margins": step / 100,
            },
        )
    client.force_login(staff)
    live = reverse("training:round-live", args=[training_round.pk])

    running = client.get(live, headers={"HX-Request": "true"})
    assert running.status_code == 200
    body = running.content.decode()
    assert body.count("<polyline") == 3 and "0.4000" in body and "every 2s" in body

    TrainingRound.objects.filter(pk=training_round.pk).update(
        status=RoundStatus.FAILED, error="boom <b>", finished_at="2026-01-01T00:00Z"
    )
    finished = client.get(live, headers={"HX-Request": "true"})
    assert finished.status_code == 286  # htmx stops polling
    assert "boom &lt;b&gt;" in finished.content.decode() and "every 2s" not in finished.content.decode()


@pytest.mark.django_db
def test_cancel_from_the_page(client, staff):
    policy = PolicyFactory()
    training_round = TrainingRound.objects.create(policy=policy, reference=policy)
    client.force_login(staff)
    response = client.post(reverse("training:cancel", args=[training_round.pk]))
    assert response.status_code == 302
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.CANCELLED
    again = client.post(reverse("training:cancel", args=[training_round.pk]))
    assert again.status_code == 409


@pytest.mark.django_db
def test_rounds_over_the_api(api, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 2)
    api.force_authenticate(staff)

    refused = api.post("/api/rounds/", {"policy": "smol"}, format="json")
    assert refused.status_code == 400 and refused.json()["error"] == "not_enough_pairs"
    assert refused.json()["pairs"] == 2 and refused.json()["needed"] == 8

    started = api.post(
        "/api/rounds/",
        {"policy": "smol", "min_pairs": 2, "hyperparameters": {"lr": 1e-5}, "then_generate": 3},
        format="json",
    )
    assert started.status_code == 201, started.json()
    body = started.json()
    assert body["status"] == "queued" and body["policy"] == "smol" and body["task_id"]
    training_round = TrainingRound.objects.get(pk=body["id"])
    RoundMetric.objects.create(round=training_round, step=1, values={"step": 1, "loss": 0.69})

    detail = api.get(f"/api/rounds/{training_round.pk}/").json()
    assert detail["metrics"] == [{"step": 1, "loss": 0.69}]
    assert api.get("/api/rounds/").json()["results"][0]["id"] == training_round.pk
    cancelled = api.post(f"/api/rounds/{training_round.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    bad = api.post(
        "/api/rounds/", {"policy": "smol", "hyperparameters": {"beta": 0}, "min_pairs": 1}, format="json"
    )
    assert bad.status_code == 400 and "beta must be a number from 0.0001 to 100" in bad.json()["detail"]


@pytest.mark.django_db
def test_the_follow_up_is_its_own_phase_with_progress_and_cancel(client, staff):
    policy = PolicyFactory(name="parent")
    training_round = TrainingRound.objects.create(
        policy=policy,
        reference=policy,
        status=RoundStatus.SUCCEEDED,
        output_policy=PolicyFactory(name="child"),
        finished_at="2026-01-01T00:00Z",
        following_up=True,
        then_generate=8,
        pairs=12,
        data_sha256="ab" * 32,
        log="12:00:00 registered policy child\n12:00:05 child answering: 640 tokens, 41 tokens/s\n",
    )
    client.force_login(staff)
    live = reverse("training:round-live", args=[training_round.pk])

    body = client.get(live, headers={"HX-Request": "true"}).content.decode()
    assert "follow-up: the new policy is answering" in body and "640 tokens, 41 tokens/s" in body
    assert "Cancel follow-up" in body and "every 2s" in body  # still polled
    assert "12 pairs, sha256" in body  # the data row changes during a round: it is in the polled part

    cancelled = client.post(
        reverse("training:cancel", args=[training_round.pk]), headers={"HX-Request": "true"}
    )
    assert (
        cancelled.status_code == 200
        and "cancelling at the next progress report" in cancelled.content.decode()
    )
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.SUCCEEDED and training_round.cancel_requested

    TrainingRound.objects.filter(pk=training_round.pk).update(
        following_up=False, heartbeat_at="2026-01-01T00:21:07Z"
    )
    settled = client.get(live, headers={"HX-Request": "true"})
    assert settled.status_code == 286 and "Cancel" not in settled.content.decode()
    # training's end and the follow-up's, each named (it said "finished" at training's end alone)
    status = " ".join(settled.content.decode().split())
    assert "· trained 00:00:00 · follow-up ended 00:21:07" in status, status[:600]


@pytest.mark.django_db
def test_guards_are_set_from_the_form_and_the_api_and_promotion_over_the_api(client, api, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 8)
    client.force_login(staff)
    client.post(reverse("training:start"), {**FORM, "policy": policy.pk, "kl_budget": "0.3"})
    assert TrainingRound.objects.get().guards == {
        "kl_budget": 0.3,
        "fluency_limit": 1.2,
        "outlier_limit": 0.15,
    }
    api.force_authenticate(staff)
    refused = api.post("/api/rounds/", {"policy": "smol", "guards": {"kl_budget": -1}}, format="json")
    assert (
        refused.status_code == 400
        and "kl_budget must be a number from 1e-09 to 100" in refused.json()["detail"]
    )
    assert api.post(f"/api/policies/{policy.pk}/promote/").json()["error"] == "conflict"
    PolicyFactory(name="wild", held_back=True, held_back_reason="KL 2.0 > budget 0.5")
    wild = api.get("/api/policies/").json()["results"][-1]
    assert wild["held_back"] and api.post(f"/api/policies/{wild['id']}/promote/").json()["held_back"] is False


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["kto", "sft"])
def test_the_start_form_starts_a_kto_or_sft_round_without_rpo(client, staff, method):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 8)
    client.force_login(staff)
    page = client.get(reverse("training:dashboard")).content.decode()
    assert f'<option value="{method}">{method}</option>' in page

    client.post(reverse("training:start"), {**FORM, "policy": policy.pk, "loss": method, "rpo_alpha": "1.0"})

    training_round = TrainingRound.objects.get()
    assert (
        training_round.hyperparameters["loss"] == method
        and training_round.hyperparameters["rpo_alpha"] == 0.0
    )


@pytest.mark.django_db
def test_the_start_form_keeps_an_rpo_weight_of_zero_and_takes_confidence_smoothing(client, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 8)
    client.force_login(staff)
    form = {**FORM, "policy": policy.pk, "loss": "robust", "rpo_alpha": "0", "confidence_smoothing": "on"}

    client.post(reverse("training:start"), form)

    settings = TrainingRound.objects.get().hyperparameters
    assert settings["rpo_alpha"] == 0.0 and settings["confidence_smoothing"] is True


@pytest.mark.django_db
def test_the_start_form_and_the_api_take_uncertain_pairs_a_budget_and_reliability_weighted_labels(
    client, staff, api
):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 8)
    client.force_login(staff)
    page = client.get(reverse("training:dashboard")).content.decode()
    assert '<option value="uncertain">uncertain</option>' in page and 'name="budget"' in page
    assert '<option value="dawid-skene">' in page

    form = {**FORM, "policy": policy.pk, "pairs": "uncertain", "budget": "20", "aggregation": "dawid-skene"}
    client.post(reverse("training:start"), form)

    started = TrainingRound.objects.get()
    assert started.generation["pairs"] == "uncertain" and started.generation["budget"] == 20
    assert started.aggregation == "dawid-skene"
    assert (
        "weighted by annotator reliability"
        in client.get(reverse("training:round", args=[started.pk])).content.decode()
    )

    api.force_authenticate(staff)
    refused = api.post("/api/rounds/", {"policy": "smol", "generation": {"budget": 0}}, format="json")
    assert (
        refused.status_code == 400
        and "budget must be a whole number from 1 to 10000000" in refused.json()["detail"]
    )
    refused = api.post("/api/rounds/", {"policy": "smol", "aggregation": "mace"}, format="json")
    assert refused.status_code == 400 and "aggregation" in str(refused.json())
    body = api.post(
        "/api/rounds/",
        {"policy": "smol", "aggregation": "dawid-skene", "generation": {"pairs": "uncertain", "budget": 5}},
        format="json",
    ).json()
    assert body["aggregation"] == "dawid-skene" and body["generation"]["budget"] == 5


REVIEWED_SETTINGS = [  # each accepted before and failed late in the worker, or held it for ever
    ({"hyperparameters": {"lr": "abc"}}, "lr must be a number from 1e-09 to 1 (got 'abc')"),
    ({"hyperparameters": {"lr": -1}}, "lr must be a number from 1e-09 to 1 (got -1)"),
    (
        {"hyperparameters": {"epochs": 1e12}},
        "epochs must be a whole number from 1 to 1000 (got 1000000000000.0)",
    ),
    ({"hyperparameters": {"lora_r": 1e9}}, "lora_r must be a whole number from 0 to 1024"),
    ({"hyperparameters": {"max_steps": -7}}, "max_steps must be a whole number from 0 to 10000000 (got -7)"),
    ({"hyperparameters": {"warmup_ratio": 1e9}}, "warmup_ratio must be a number from 0 to 1"),
    ({"hyperparameters": {"epochs": 1.5}}, "epochs must be a whole number from 1 to 1000 (got 1.5)"),
    ({"generation": {"max_new_tokens": 1e12}}, "max_new_tokens must be a whole number from 1 to 32768"),
    ({"generation": {"temperature": 1e308}}, "temperature must be a number from 0 to 5 (got 1e+308)"),
    ({"guards": {"kl_budget": "inf"}}, "kl_budget must be a number from 1e-09 to 100 (got 'inf')"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("asked", "message"), REVIEWED_SETTINGS)
def test_round_settings_out_of_their_type_or_range_are_refused_when_asked(api, staff, asked, message):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 2)
    api.force_authenticate(staff)

    refused = api.post("/api/rounds/", {"policy": "smol", "min_pairs": 1, **asked}, format="json")

    assert refused.status_code == 400 and message in refused.json()["detail"]
    assert not TrainingRound.objects.exists()


@pytest.mark.django_db
def test_the_command_refuses_a_bad_setting_with_the_same_message():
    from django.core.management import CommandError, call_command

    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 2)

    with pytest.raises(CommandError, match=r"lr must be a number from 1e-09 to 1 \(got -1"):
        call_command("train_round", "--policy", "smol", "--lr", "-1", "--min-pairs", "1", "--enqueue")
    assert not TrainingRound.objects.exists()


@pytest.mark.django_db
def test_staff_export_from_the_dashboard_with_its_form_defaults(client, staff):
    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 3)
    client.force_login(staff)

    page = client.get(reverse("training:dashboard")).content.decode()
    assert '<form method="get" action="/api/export/"' in page and 'formaction="/api/export/card/"' in page

    query = {
        "campaign": "",
        "type": "preference",
        "aggregation": "majority",
        "split": "train",
        "min_agreement": "0",
    }
    exported = client.get("/api/export/", query)
    rows = [json.loads(line) for line in b"".join(exported.streaming_content).decode().splitlines()]
    assert exported.status_code == 200 and "attachment" in exported["Content-Disposition"]
    assert len(rows) == 3 and {"prompt", "chosen", "rejected"} <= set(rows[0])
    card = client.get("/api/export/card/", query)
    assert card.status_code == 200 and b"3" in card.content
