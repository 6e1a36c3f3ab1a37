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


@pytest.mark.django_db
def test_the_queues_campaigns_are_campaigns_open_for_in_the_same_order():
    from annotate.models import CampaignStatus
    from annotate.selectors import campaigns_open_for
    from annotate.services.queue import _campaigns_open

    member, outsider = UserFactory(), UserFactory()
    campaigns = []
    for i, (status, open_to_all, priority) in enumerate(
        [
            (CampaignStatus.OPEN, True, 0),
            (CampaignStatus.OPEN, False, 5),
            (CampaignStatus.PAUSED, True, 9),
            (CampaignStatus.CLOSED, False, 9),
            (CampaignStatus.OPEN, True, 5),
            (CampaignStatus.OPEN, False, -1),
        ]
    ):
        campaign = CampaignFactory(name=f"c{i}", status=status, open_to_all=open_to_all, priority=priority)
        if not open_to_all and i != 5:  # c5: members-only, with no members
            campaign.members.add(member)
        campaigns.append(campaign)
    for annotator in (member, outsider):
        expected = list(campaigns_open_for(annotator=annotator))
        assert _campaigns_open(annotator=annotator, only=None) == expected
        assert [c.name for c in expected] == (["c1", "c4", "c0"] if annotator == member else ["c4", "c0"])
        for campaign in campaigns:
            only = _campaigns_open(annotator=annotator, only=campaign)
            assert only == [c for c in expected if c.pk == campaign.pk]
            if only:
                _same(only[0], Campaign.objects.get(pk=campaign.pk))


@pytest.mark.django_db
def test_the_progress_line_counts_by_the_queues_rules():
    from datetime import timedelta

    from django.utils import timezone

    from annotate.models import CampaignStatus, Judgment
    from annotate.selectors import annotator_progress
    from annotate.services.queue import assignment_skip
    from tests.factories import JudgmentFactory

    annotator, other = UserFactory(), UserFactory()
    open_ = CampaignFactory(name="open", gold_rate=0)
    members_only = CampaignFactory(name="members", open_to_all=False, gold_rate=0)
    theirs = CampaignFactory(name="theirs", open_to_all=False, gold_rate=0)
    paused = CampaignFactory(name="paused", status=CampaignStatus.PAUSED, gold_rate=0)
    members_only.members.add(annotator)
    theirs.members.add(other)
    left = [ComparisonFactory(campaign=c) for c in (open_, open_, open_, members_only)]
    for campaign in (theirs, paused):
        ComparisonFactory(campaign=campaign)  # not open to the annotator: never counted
    complete = ComparisonFactory(campaign=open_, overlap=1)
    JudgmentFactory(comparison=complete, annotator=other)  # its one judgment: complete
    assert annotator_progress(annotator=annotator).remaining == 4

    JudgmentFactory(comparison=left[0], annotator=annotator)  # judged by them (and complete: overlap 1)
    yesterday = JudgmentFactory(comparison=ComparisonFactory(campaign=paused), annotator=annotator)
    Judgment.objects.filter(pk=yesterday.pk).update(created_at=timezone.now() - timedelta(days=1))
    served = comparison_assign_next(annotator=annotator)
    assert served is not None
    assignment_skip(comparison=served.comparison, annotator=annotator)  # skipped: not left either
    progress = annotator_progress(annotator=annotator)
    assert (progress.judged_today, progress.remaining, progress.remaining_more) == (1, 2, False)
    assert annotator_progress(annotator=other).remaining == 3  # open_'s two still wanting one, and theirs
