"""Held-out answers are marked by a field, no longer by the label "heldout"."""

from django.db import migrations, models


def label_to_field(apps, schema_editor):
    Response = apps.get_model("generation", "Response")
    Response.objects.filter(round_label="heldout").update(heldout=True)


def field_to_label(apps, schema_editor):
    Response = apps.get_model("generation", "Response")
    Response.objects.filter(heldout=True).update(round_label="heldout")


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0002_response_round_label"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="response", name="response_policy_round"),
        migrations.AddField(
            model_name="response",
            name="heldout",
            field=models.BooleanField(default=False, help_text="The policy's one answer to a held-out prompt, compared blind with others'."),
        ),
        migrations.RunPython(label_to_field, field_to_label),
        migrations.RemoveField(model_name="response", name="round_label"),
        migrations.AddIndex(
            model_name="response",
            index=models.Index(fields=["policy", "heldout", "prompt"], name="response_policy_heldout"),
        ),
    ]
