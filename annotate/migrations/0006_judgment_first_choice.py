from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def first_choices(apps, schema_editor):
    """The choice as first given: the oldest revision's, where the judgment was changed since."""
    Judgment = apps.get_model("annotate", "Judgment")
    JudgmentRevision = apps.get_model("annotate", "JudgmentRevision")
    oldest = JudgmentRevision.objects.filter(judgment=OuterRef("pk")).order_by("id").values("choice")[:1]
    Judgment.objects.filter(pk__in=JudgmentRevision.objects.values("judgment")).update(first_choice=Subquery(oldest))
    Judgment.objects.filter(first_choice="").update(first_choice=models.F("choice"))


class Migration(migrations.Migration):
    dependencies = [("annotate", "0005_campaign_adjudicate")]

    operations = [
        migrations.AddField(
            model_name="judgment",
            name="first_choice",
            field=models.CharField(
                choices=[
                    ("first", "first is better"),
                    ("second", "second is better"),
                    ("tie", "tie"),
                    ("both_bad", "both bad"),
                ],
                default="",
                editable=False,
                help_text="The choice as first given; a later change leaves it (gold accuracy counts it).",
                max_length=8,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(first_choices, migrations.RunPython.noop),
    ]
