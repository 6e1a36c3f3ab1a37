"""The judging loop's statements written out in SQL: those asked on every judgment and every serve,
where the ORM took longer to build and compile a query than the database took to answer it
(``benchmarks/judging_cost.py --profile api``). Rows come back as model instances through
``Model.from_db``, as the ORM's own would. Everything else uses the ORM.

Table names are written ``{comparison}``, ``{judgment}``, ``{assignment}``, ``{campaign}``,
``{campaign_member}``, ``{prompt}``, ``{response}``; a model's columns ``columns(Model, alias)``.
Parameters are the driver's (``%s``), never formatted into the text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Model
from django.db.models.expressions import Col

M = TypeVar("M", bound=Model)


@functools.cache
def _tables() -> dict[str, str]:
    from annotate.models import Assignment, Campaign, Comparison, Judgment
    from generation.models import Prompt, Response

    models = {
        "campaign_member": Campaign.members.through,  # (campaign_id, user_id)
        "comparison": Comparison,
        "judgment": Judgment,
        "assignment": Assignment,
        "campaign": Campaign,
        "prompt": Prompt,
        "response": Response,
    }
    return {name: connection.ops.quote_name(model._meta.db_table) for name, model in models.items()}


@functools.cache
def _fields(model: type[Model]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[int, list, Col], ...]]:
    """The model's concrete fields: their attribute names, their quoted columns, and the converters
    the ORM applies to a value read (a JSON text, SQLite's dates and booleans) by position."""
    fields = model._meta.concrete_fields
    converting = []
    for i, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if converters:
            converting.append((i, converters, col))
    return (
        tuple(f.attname for f in fields),
        tuple(connection.ops.quote_name(f.column) for f in fields),
        tuple(converting),
    )


def columns(model: type[Model], alias: str) -> str:
    """Every column of ``model`` under the table alias ``alias``, in ``loaded``'s order."""
    return ", ".join(f"{alias}.{column}" for column in _fields(model)[1])


def loaded(model: type[M], values: Sequence[object]) -> M:
    """An instance of ``model`` from the values of ``columns(model, ...)``, as the ORM loads one."""
    names, _, converting = _fields(model)
    if converting:
        values = list(values)
        for i, converters, col in converting:
            for convert in converters:
                values[i] = convert(values[i], col, connection)
    return model.from_db(connection.alias, list(names), values)


class Row:
    """A row selecting ``columns`` of several models in turn, read back model by model."""

    def __init__(self, values: Sequence[object]) -> None:
        self.values, self.at = values, 0

    def take(self, model: type[M]) -> M:
        """The next model's instance."""
        end = self.at + len(_fields(model)[0])
        instance = loaded(model, self.values[self.at : end])
        self.at = end
        return instance

    def rest(self) -> Sequence[object]:
        """The values selected after the models'."""
        return self.values[self.at :]


def _execute(cursor: CursorWrapper, text: str, params: Sequence[object]) -> None:
    cursor.execute(text.format(**_tables()), params)


def row(text: str, params: Sequence[object]) -> tuple | None:
    """The first row ``text`` returns (table names filled in), or None."""
    with connection.cursor() as cursor:
        _execute(cursor, text, params)
        return cursor.fetchone()


def rows(text: str, params: Sequence[object]) -> list[tuple]:
    """Every row ``text`` returns (table names filled in)."""
    with connection.cursor() as cursor:
        _execute(cursor, text, params)
        return cursor.fetchall()


def execute(text: str, params: Sequence[object]) -> int:
    """Run a statement that returns no rows (table names filled in): the rows it changed."""
    with connection.cursor() as cursor:
        _execute(cursor, text, params)
        return cursor.rowcount


def name(column: str) -> str:
    """A column's name quoted (``left`` and ``order`` are SQL keywords)."""
    return connection.ops.quote_name(column)


def moment(value: datetime) -> object:
    """A date and time as the database takes it (SQLite: text in UTC)."""
    return connection.ops.adapt_datetimefield_value(value)


def lock(alias: str) -> str:
    """The clause that locks the rows of ``alias`` that a SELECT returns: PostgreSQL's ``FOR UPDATE
    OF``; nothing on SQLite, whose IMMEDIATE transactions hold the database's write lock already."""
    return f" FOR UPDATE OF {alias}" if connection.features.has_select_for_update_of else ""


def as_id(value: object) -> int | None:
    """``value`` as a row id a query may be given (a bigint above zero), else None: an id as posted
    ("12", 12) is checked here before it reaches SQL."""
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if 0 < number < 2**63 else None
