"""A database built with the schema before campaigns migrates without losing a row: round labels
become campaigns, "heldout" becomes a field, eval comparisons get their Evaluation rows."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from annotate.triggers import triggers_install, triggers_remove

BEFORE = [
    ("annotate", "0003_guidelines_revisions_skips"),
    ("generation", "0002_response_round_label"),
    ("training", "0001_initial"),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def old_database(apps):
    """Rows as the old code wrote them: labels for campaigns, rounds and held-out answers."""
    User = apps.get_model("auth", "User")
    Prompt = apps.get_model("generation", "Prompt")
    Policy = apps.get_model("generation", "Policy")
    Response = apps.get_model("generation", "Response")
    Comparison = apps.get_model("annotate", "Comparison")
    Judgment = apps.get_model("annotate", "Judgment")
    JudgmentRevision = apps.get_model("annotate", "JudgmentRevision")
    Assignment = apps.get_model("annotate", "Assignment")
    Guideline = apps.get_model("annotate", "Guideline")
    TrainingRound = apps.get_model("training", "TrainingRound")
    now = timezone.now()

    ann = User.objects.create(username="ann")
    train = Prompt.objects.create(text="Name a colour.", content_hash="h-train")
    held = Prompt.objects.create(text="Name a fruit.", split="eval", content_hash="h-eval")
    base = Policy.objects.create(name="base", location="/m/base")
    child = Policy.objects.create(name="base-round1", location="/m/child", parent=base)
    training_round = TrainingRound.objects.create(
        policy=base, reference=base, output_policy=child, status="succeeded", finished_at=now
    )
    label = f"round-{training_round.pk}"  # the old convention (ids are not 1 on PostgreSQL here)
    r1, r2 = (Response.objects.create(prompt=train, policy=base, text=t, round_label="demo") for t in "ab")
    r3, r4 = (Response.objects.create(prompt=train, policy=child, text=t, round_label=label) for t in "cd")
    hb = Response.objects.create(prompt=held, policy=base, text="apple", round_label="heldout")
    hc = Response.objects.create(prompt=held, policy=child, text="pear", round_label="heldout")
    demo = Comparison.objects.create(
        prompt=train, response_a=r1, response_b=r2, round_label="demo", overlap=2
    )
    Comparison.objects.create(prompt=train, response_a=r3, response_b=r4, round_label=label)
    Comparison.objects.create(
        prompt=held, response_a=hb, response_b=hc, round_label=f"{label}-eval", kind="eval"
    )
    judgment = Judgment.objects.create(comparison=demo, annotator=ann, choice="first", left="second")
    JudgmentRevision.objects.create(judgment=judgment, choice="second")
    Assignment.objects.create(comparison=demo, annotator=ann, left="second", served_at=now, expires_at=now)
    Guideline.objects.create(text="Prefer *correct* answers.")


@pytest.mark.django_db(transaction=True)
def test_a_database_with_round_labels_migrates_to_campaigns_without_losing_a_row():
    triggers_remove(connection=connection)
    try:
        old_database(migrate(BEFORE))
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
        triggers_install(connection=connection)

    from annotate.models import Assignment, Campaign, Comparison, Judgment, JudgmentRevision
    from generation.models import Response
    from training.models import Evaluation, TrainingRound

    training_round = TrainingRound.objects.get()
    label = f"round-{training_round.pk}"
    campaigns = {c.name: c for c in Campaign.objects.all()}
    assert set(campaigns) == {"demo", label, f"{label}-eval"}
    assert all(c.guidelines == "Prefer *correct* answers." for c in campaigns.values())
    assert campaigns["demo"].overlap == 2 and campaigns[f"{label}-eval"].priority > campaigns["demo"].priority
    assert Comparison.objects.count() == 3 and Judgment.objects.count() == 1
    assert JudgmentRevision.objects.count() == 1 and Assignment.objects.count() == 1
    assert Judgment.objects.get().comparison.campaign.name == "demo"
    assert Judgment.objects.get().first_choice == "second"  # as first given: the oldest revision's
    demo = Comparison.objects.get(campaign__name="demo")
    assert (demo.judgment_count, demo.needs_judgments) == (1, True)  # 1 of its overlap 2
    assert set(Response.objects.filter(heldout=True).values_list("text", flat=True)) == {"apple", "pear"}
    assert Response.objects.filter(heldout=False).count() == 4
    assert (training_round.campaign.name, training_round.eval_campaign.name) == (label, f"{label}-eval")
    evaluation = Evaluation.objects.get()
    assert evaluation.comparison.campaign.name == f"{label}-eval"
    assert (evaluation.policy.name, evaluation.opponent.name) == ("base-round1", "base")
    assert evaluation.training_round == training_round
