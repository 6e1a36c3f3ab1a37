"""Campaigns replace round labels: every distinct ``round_label`` becomes a campaign holding the
comparisons that carried it; the global guidelines become each campaign's guidelines."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def labels_to_campaigns(apps, schema_editor):
    Campaign = apps.get_model("annotate", "Campaign")
    Comparison = apps.get_model("annotate", "Comparison")
    Guideline = apps.get_model("annotate", "Guideline")
    latest = Guideline.objects.order_by("-id").first()
    guidelines = latest.text if latest else ""
    gold_rate = getattr(settings, "PREFLOOP_GOLD_RATE", 0.1)
    labels = Comparison.objects.values_list("round_label", flat=True).distinct().order_by("round_label")
    for label in labels:
        overlaps = Comparison.objects.filter(round_label=label).values_list("overlap", flat=True)
        campaign = Campaign.objects.create(
            name=(label or "default")[:100],
            guidelines=guidelines,
            overlap=max(overlaps, default=1),
            gold_rate=gold_rate,
            priority=10 if label.endswith(("-eval", "-vs-base")) else 0,
        )
        Comparison.objects.filter(round_label=label).update(campaign=campaign)


def campaigns_to_labels(apps, schema_editor):
    Comparison = apps.get_model("annotate", "Comparison")
    for comparison in Comparison.objects.select_related("campaign"):
        comparison.round_label = comparison.campaign.name
        comparison.save(update_fields=["round_label"])


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0003_guidelines_revisions_skips"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Campaign",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                ("guidelines", models.TextField(blank=True, help_text="Markdown, shown to annotators above every comparison.")),
                ("overlap", models.PositiveSmallIntegerField(default=1, help_text="Judgments wanted per comparison, unless a comparison says otherwise.")),
                ("gold_rate", models.FloatField(default=0.1, help_text="Share of served comparisons drawn from gold ones.")),
                ("status", models.CharField(choices=[("open", "open"), ("paused", "paused"), ("closed", "closed")], db_index=True, default="open", max_length=6)),
                ("priority", models.IntegerField(default=0, help_text="Higher is served first.")),
                ("open_to_all", models.BooleanField(default=True, help_text="Every annotator may judge it (else: members).")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("members", models.ManyToManyField(blank=True, related_name="campaigns", to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "ordering": ["-priority", "id"],
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("overlap__gte", 1)), name="campaign_overlap_positive"),
                    models.CheckConstraint(condition=models.Q(("gold_rate__gte", 0.0), ("gold_rate__lte", 1.0)), name="campaign_gold_rate_share"),
                    models.CheckConstraint(condition=models.Q(("status__in", ["open", "paused", "closed"])), name="campaign_status_valid"),
                ],
            },
        ),
        migrations.AddField(
            model_name="comparison",
            name="campaign",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="comparisons", to="annotate.campaign"),
        ),
        migrations.RunPython(labels_to_campaigns, campaigns_to_labels),
        migrations.AlterField(
            model_name="comparison",
            name="campaign",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="comparisons", to="annotate.campaign"),
        ),
        migrations.RemoveField(model_name="comparison", name="round_label"),
        migrations.DeleteModel(name="Guideline"),
    ]
