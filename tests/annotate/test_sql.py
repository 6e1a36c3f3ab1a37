"""The judging loop's SQL written out (``annotate/sql.py``) loads rows as the ORM does, on both
databases: every field's value and type, JSON, booleans and dates included (SQLite stores them as
text and integers, which the ORM converts)."""

import pytest
from django.db.models import Model

from annotate import sql
from annotate.models import Assignment, Campaign, Comparison
from annotate.services.queue import comparison_assign_next
from generation.models import Prompt, Response
from tests.factories import CampaignFactory, ComparisonFactory, UserFactory


def _values(instance: Model) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def _same(ours: Model, orms: Model) -> None:
    assert _values(ours) == _values(orms)
    for name, value in _values(orms).items():
        assert type(_values(ours)[name]) is type(value), name
    assert not ours._state.adding and ours._state.db == orms._state.db


@pytest.mark.django_db
def test_rows_read_through_sql_are_the_orms_instances():
    annotator = UserFactory()
    campaign = CampaignFactory(open_to_all=False, adjudicate=True, gold_rate=0)
    campaign.members.add(annotator)
    comparison = ComparisonFactory(campaign=campaign)
    comparison.response_a.sampling = {"temperature": 0.7, "seed": [1, 2]}
    comparison.response_a.save()
    served = comparison_assign_next(annotator=annotator)
    assert served is not None and served.comparison_id == comparison.pk

    values = sql.row(
        f"SELECT {sql.columns(Assignment, 'a')}, {sql.columns(Comparison, 'c')}, {sql.columns(Campaign, 'k')},"
        f" {sql.columns(Prompt, 'p')}, {sql.columns(Response, 'r')}, 42"
        " FROM {assignment} a JOIN {comparison} c ON c.id = a.comparison_id"
        " JOIN {campaign} k ON k.id = c.campaign_id JOIN {prompt} p ON p.id = c.prompt_id"
        " JOIN {response} r ON r.id = c.response_a_id WHERE a.id = %s",
        [Assignment.objects.get(comparison=comparison).pk],
    )
    assert values is not None
    row = sql.Row(values)
    _same(row.take(Assignment), Assignment.objects.get(comparison=comparison))
    _same(row.take(Comparison), Comparison.objects.get(pk=comparison.pk))
    _same(row.take(Campaign), Campaign.objects.get(pk=campaign.pk))
    _same(row.take(Prompt), Prompt.objects.get(pk=comparison.prompt_id))
    response = row.take(Response)
    _same(response, Response.objects.get(pk=comparison.response_a_id))
    assert response.sampling == {"temperature": 0.7, "seed": [1, 2]}
    assert list(row.rest()) == [42]
    assert sql.row("SELECT 1 FROM {comparison} c WHERE c.id = %s", [comparison.pk + 1000]) is None


@pytest.mark.parametrize(
    ("posted", "expected"),
    [
        ("12", 12),
        (12, 12),
        (" 7", 7),
        ("0", None),
        ("-3", None),
        ("1.5", None),
        ("abc", None),
        ("", None),
        (None, None),
        (str(2**63), None),
        (2**63 - 1, 2**63 - 1),
    ],
)
def test_only_ids_a_bigint_column_holds_reach_sql(posted, expected):
    assert sql.as_id(posted) == expected
