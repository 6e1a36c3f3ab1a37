from django.db import migrations, models
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce


def counts(apps, schema_editor):
    Comparison = apps.get_model("annotate", "Comparison")
    Judgment = apps.get_model("annotate", "Judgment")
    counted = Judgment.objects.filter(comparison=OuterRef("pk")).values("comparison").annotate(n=Count("*")).values("n")
    Comparison.objects.update(judgment_count=Coalesce(Subquery(counted), 0))
    Comparison.objects.filter(~Q(kind="gold"), judgment_count__gte=models.F("overlap")).update(needs_judgments=False)


class Migration(migrations.Migration):
    dependencies = [("annotate", "0006_judgment_first_choice")]

    operations = [
        migrations.AddField(
            model_name="comparison",
            name="judgment_count",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="comparison",
            name="needs_judgments",
            field=models.BooleanField(
                default=True, editable=False, help_text="Fewer judgments than its overlap (gold: always)."
            ),
        ),
        migrations.RunPython(counts, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="comparison",
            index=models.Index(
                condition=models.Q(("needs_judgments", True)),
                fields=["campaign", "id"],
                name="comparison_wanting_by_campaign",
            ),
        ),
    ]
