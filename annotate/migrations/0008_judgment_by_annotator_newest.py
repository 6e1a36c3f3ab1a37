from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("annotate", "0007_comparison_judgment_count")]

    operations = [
        migrations.AddIndex(
            model_name="judgment",
            index=models.Index(fields=["annotator", "-id"], name="judgment_by_annotator_newest"),
        ),
    ]
