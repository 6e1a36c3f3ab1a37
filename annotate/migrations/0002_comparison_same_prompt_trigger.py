"""Formerly installed the same-prompt trigger; annotate/triggers.py now does it after every migrate
(a trigger inside migrations breaks SQLite's table rebuilds). Kept so migration history matches."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("annotate", "0001_initial")]

    operations = []
