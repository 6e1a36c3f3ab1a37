"""Rounds point at the campaigns they queue into; every blind eval comparison between two policies
gets an Evaluation row (which policy is evaluated, against which, asked for by which round)."""

import django.db.models.deletion
from django.db import migrations, models


def link(apps, schema_editor):
    Campaign = apps.get_model("annotate", "Campaign")
    Comparison = apps.get_model("annotate", "Comparison")
    Evaluation = apps.get_model("training", "Evaluation")
    TrainingRound = apps.get_model("training", "TrainingRound")
    by_name = {c.name: c for c in Campaign.objects.all()}
    for training_round in TrainingRound.objects.all():
        training_round.campaign = by_name.get(f"round-{training_round.pk}")
        training_round.eval_campaign = by_name.get(f"round-{training_round.pk}-eval")
        training_round.save(update_fields=["campaign", "eval_campaign"])
    trained_by = {r.output_policy_id: r for r in TrainingRound.objects.exclude(output_policy=None)}
    eval_comparisons = Comparison.objects.filter(
        kind="eval", response_a__policy__isnull=False, response_b__policy__isnull=False
    ).select_related("response_a__policy", "response_b__policy")
    for comparison in eval_comparisons:
        a, b = comparison.response_a.policy, comparison.response_b.policy
        if a.pk == b.pk:
            continue
        # The evaluated policy is the child of the other, else the newer one.
        policy, opponent = (a, b) if a.parent_id == b.pk or (b.parent_id != a.pk and a.pk > b.pk) else (b, a)
        Evaluation.objects.create(
            comparison=comparison, policy=policy, opponent=opponent, training_round=trained_by.get(policy.pk)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0004_campaigns"),
        ("generation", "0003_response_heldout"),
        ("training", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="traininground",
            name="campaign",
            field=models.ForeignKey(blank=True, help_text="Where the comparisons of the new policy's answers to train prompts are queued.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="rounds_feeding", to="annotate.campaign"),
        ),
        migrations.AddField(
            model_name="traininground",
            name="eval_campaign",
            field=models.ForeignKey(blank=True, help_text="Where the blind held-out comparisons of the new policy against its parent are queued.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="rounds_evaluating", to="annotate.campaign"),
        ),
        migrations.CreateModel(
            name="Evaluation",
            fields=[
                ("comparison", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name="evaluation", serialize=False, to="annotate.comparison")),
                ("policy", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="evaluations", to="generation.policy")),
                ("opponent", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="evaluations_as_opponent", to="generation.policy")),
                ("training_round", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="evaluations", to="training.traininground")),
            ],
            options={
                "ordering": ["comparison"],
                "constraints": [models.CheckConstraint(condition=models.Q(("policy", models.F("opponent")), _negated=True), name="evaluation_two_policies")],
            },
        ),
        migrations.RunPython(link, migrations.RunPython.noop),
    ]
