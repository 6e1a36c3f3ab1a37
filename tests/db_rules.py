"""Which database rule a write broke: named, on SQLite and PostgreSQL alike."""

from contextlib import contextmanager

import pytest
from django.apps import apps
from django.db import IntegrityError, models, transaction


def _unique_columns(name: str) -> str | None:
    """How SQLite names a broken unique constraint: ``table.column, table.column`` (not its name)."""
    for model in apps.get_models():
        for constraint in model._meta.constraints:
            if constraint.name == name and isinstance(constraint, models.UniqueConstraint):
                table = model._meta.db_table
                return ", ".join(f"{table}.{model._meta.get_field(f).column}" for f in constraint.fields)
    return None


@contextmanager
def violates(name: str):
    """The block must break the database rule called ``name``: a constraint or the same-prompt
    trigger, whichever database runs it; an IntegrityError from another rule fails the test."""
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        yield
    message = str(caught.value)
    assert name in message or (_unique_columns(name) or name) in message, message
