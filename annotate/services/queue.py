"""Serving comparisons: the next one for an annotator under a lease, and skipping it."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from annotate import sql
from annotate.errors import CampaignNotOpen, NotServed
from annotate.models import Assignment, Campaign, CampaignStatus, Comparison, Judgment, Kind, Side
from annotate.selectors import campaign_closed_reason, campaign_open_sql, unanswered_sql
from generation.models import Prompt, Response

# What serving a comparison shows: loaded with the assignment in one query.
_SHOWN = ("comparison__prompt", "comparison__response_a", "comparison__response_b", "comparison__campaign")


@transaction.atomic
def comparison_assign_next(
    *, annotator: AbstractBaseUser, campaign: Campaign | None = None
) -> Assignment | None:
    """Serve the annotator their next comparison, reserving it with a lease; None when none is left.

    An unexpired, unjudged, unskipped assignment in a campaign still open to them is served again (a
    reload shows the same comparison). Otherwise the campaigns open to the annotator are tried
    highest priority first (or only ``campaign``), each oldest comparison first; at the campaign's
    gold rate a gold comparison is preferred while any is left. On PostgreSQL the candidate row is
    locked with SKIP LOCKED so concurrent annotators do not wait on each other; SQLite serialises
    writers (IMMEDIATE transactions).
    """
    now = timezone.now()
    allowed = _campaigns_open(annotator=annotator, only=campaign)
    if campaign is not None and not allowed:
        raise CampaignNotOpen(
            campaign_closed_reason(campaign=campaign, annotator=annotator), campaign=campaign.pk
        )
    live = (
        Assignment.objects.filter(
            annotator=annotator,
            expires_at__gt=now,
            skipped_at=None,
            comparison__campaign__in=[open_.pk for open_ in allowed],
        )
        .exclude(comparison__in=Judgment.objects.filter(annotator=annotator).values("comparison"))
        .select_related(*_SHOWN)
        .order_by("served_at")
        .first()
        if _holds_live_lease(annotator=annotator, now=now)
        else None
    )
    if live is not None:
        return live
    for candidate_campaign in allowed:
        first = functools.partial(_lock_next_open, annotator=annotator, now=now, campaign=candidate_campaign)
        if candidate_campaign.people_first:  # routed: the pairs its AI judge was unsure of come first
            first = functools.partial(_unsure_first, first)
        if not candidate_campaign.gold_rate:
            comparison = first(gold=None)
        else:  # gold at the campaign's rate while any is left; else whatever is left
            comparison = first(gold=random.random() < candidate_campaign.gold_rate) or first(gold=None)
        if comparison is not None:
            comparison.campaign = candidate_campaign
            lease = Assignment(
                comparison=comparison,
                annotator=annotator,
                left=Side.FIRST
                if comparison.response_b_id is None or comparison.response_c_id
                else random.choice(Side.values),
                order=_shuffled("abcd"[: 4 if comparison.response_d_id else 3])
                if comparison.response_c_id
                else "",
                served_at=now,
                expires_at=now + timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS),
                skipped_at=None,
            )
            _lease_take(lease)
            return lease
    return None


def _campaigns_open(*, annotator: AbstractBaseUser, only: Campaign | None) -> list[Campaign]:
    """The campaigns open to the annotator, highest priority first, by ``campaigns_open_for``'s rule
    (open; open to all, or they are a member), or only ``only`` if it is one of them."""
    params: list[object] = [CampaignStatus.OPEN, annotator.pk]
    if only is not None:
        params.append(only.pk)
    found = sql.rows(
        f"SELECT {sql.columns(Campaign, 'k')} FROM {{campaign}} k WHERE {campaign_open_sql('k')}"
        + (" AND k.id = %s" if only is not None else "")
        + " ORDER BY k.priority DESC, k.id",
        params,
    )
    return [sql.loaded(Campaign, values) for values in found]


def _lease_take(lease: Assignment) -> None:
    """Store ``lease`` in one statement (its id set): a new one, or one served before (lapsed, neither
    judged nor skipped) renewed."""
    renewed = ("left", "order", "served_at", "expires_at", "skipped_at")
    stored = sql.row(
        f"INSERT INTO {{assignment}} (comparison_id, annotator_id, {', '.join(map(sql.name, renewed))})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (comparison_id, annotator_id) DO UPDATE SET "
        + ", ".join(f"{sql.name(column)} = excluded.{sql.name(column)}" for column in renewed)
        + " RETURNING id",
        [
            lease.comparison_id,
            lease.annotator_id,
            lease.left,
            lease.order,
            sql.moment(lease.served_at),
            sql.moment(lease.expires_at),
            None,
        ],
    )
    assert stored is not None
    lease.pk = stored[0]


def _shuffled(letters: str) -> str:
    """A ranking item's answers in a random order for one annotator (position bias averages out)."""
    order = list(letters)
    random.shuffle(order)
    return "".join(order)


def _unsure_first(first: functools.partial, *, gold: bool | None) -> Comparison | None:
    """A routed campaign's next pair: one its AI judge was unsure of while any is open (never when
    gold was asked for), else ``first``'s."""
    return (None if gold else first(gold=False, unsure=True)) or first(gold=gold)


def _lock_next_open(
    *, annotator: AbstractBaseUser, now: datetime, campaign: Campaign, gold: bool | None, unsure: bool = False
) -> Comparison | None:
    """Lock the first comparison of ``campaign`` open to the annotator (``_first_open``; ``gold``: only
    gold ones, none, or either), make sure it is still open once locked, and load what is shown.

    First pass: SKIP LOCKED, so concurrent annotators take different rows without waiting. Only if
    every candidate is held by someone else, a second pass waits for a lock (a few milliseconds:
    the holders' transactions are short) rather than report an empty queue that is not empty.
    The candidate query counts leases as of its snapshot; a lease committed by the previous lock
    holder after that snapshot is counted again here while we hold the lock. (Only the leases: the
    locked row itself is its latest version, its counts rechecked by PostgreSQL on locking, and the
    annotator's own judgments and skips are not anyone else's to add. SQLite needs no second look:
    the transaction took the write lock first, so its reads are current.)
    """
    find = functools.partial(
        _first_open, annotator=annotator, now=now, campaign=campaign, gold=gold, unsure=unsure
    )
    found: int | None = None
    if connection.vendor == "sqlite":
        row = find(passed=(), lock="")
        found = row[0] if row is not None else None
    else:
        passed: list[int] = []
        for lock in ("FOR UPDATE OF c SKIP LOCKED", "FOR UPDATE OF c"):
            while found is None and (row := find(passed=passed, lock=lock)) is not None:
                pk, kind, judgment_count, overlap = row
                if kind == Kind.GOLD or judgment_count + _leased_by_others(pk, annotator, now) < overlap:
                    found = pk
                else:
                    passed.append(pk)
    if found is None:
        return None
    return _shown(found)


def _shown(comparison_id: int) -> Comparison:
    """The comparison with what serving it shows: its prompt and first two answers (a ranking's
    others are loaded when shown)."""
    values = sql.row(
        f"SELECT {sql.columns(Comparison, 'c')}, {sql.columns(Prompt, 'p')},"
        f" {sql.columns(Response, 'a')}, {sql.columns(Response, 'b')} FROM {{comparison}} c"
        " JOIN {prompt} p ON p.id = c.prompt_id JOIN {response} a ON a.id = c.response_a_id"
        " LEFT JOIN {response} b ON b.id = c.response_b_id WHERE c.id = %s",
        [comparison_id],
    )
    assert values is not None  # locked by the caller
    row = sql.Row(values)
    comparison = row.take(Comparison)
    comparison.prompt, comparison.response_a = row.take(Prompt), row.take(Response)
    second = row.take(Response)  # (all null for a thumbs item)
    comparison.response_b = second if comparison.response_b_id is not None else None
    return comparison


# The queue's questions, asked on every serve, are written out in SQL (``annotate/sql.py``).
# tests/annotate/test_services.py, test_views.py and test_integrity.py hold the serving rules, on
# both databases and concurrently.


def _first_open(
    *,
    annotator: AbstractBaseUser,
    now: datetime,
    campaign: Campaign,
    gold: bool | None,
    passed: Sequence[int],
    lock: str,
    unsure: bool = False,
) -> tuple[int, str, int, int] | None:
    """The first comparison of ``campaign`` (oldest first) the annotator may be served, locked with
    ``lock``: its id, kind, judgment count and overlap. May be served: not judged or skipped by them,
    and (gold excepted, which every annotator sees once) with judgments plus other annotators' live
    leases below its overlap. The caller has checked that the campaign is open to them.

    ``needs_judgments`` first: the partial index holds only the comparisons still wanting judgments,
    so a campaign's complete ones cost nothing however many there are; the rest is read per
    candidate, by index."""
    where, params = ["c.campaign_id = %s"], [campaign.pk]
    if gold is not None:
        where.append("c.kind = %s" if gold else "c.kind <> %s")
        params.append(Kind.GOLD)
    if unsure:  # a routed campaign's pairs its AI judge was unsure of
        where.append("c.people_first")
    if passed:
        where.append(f"c.id NOT IN ({', '.join(['%s'] * len(passed))})")
        params.extend(passed)
    row = sql.row(
        "SELECT c.id, c.kind, c.judgment_count, c.overlap FROM {comparison} c"
        f" WHERE c.needs_judgments AND {' AND '.join(where)} AND {unanswered_sql('c')}"
        f" AND (c.kind = %s OR c.judgment_count < c.overlap - ({_others_leases('c.id')}))"
        f" ORDER BY c.id LIMIT 1 {lock}",
        [
            *params,
            annotator.pk,
            annotator.pk,
            Kind.GOLD,
            sql.moment(now),
            annotator.pk,
        ],
    )
    return None if row is None else (row[0], row[1], row[2], row[3])


def _leased_by_others(comparison_id: int, annotator: AbstractBaseUser, now: datetime) -> int:
    """Live leases of the comparison held by annotators other than ``annotator`` (as ``_first_open``
    counts them), read now."""
    row = sql.row(_others_leases("%s"), [comparison_id, sql.moment(now), annotator.pk])
    return int(row[0]) if row else 0


def _others_leases(comparison: str) -> str:
    """SQL counting the live leases of ``comparison`` (an SQL expression) held by annotators other
    than the one served; its parameters: now, then that annotator's id. The one lease rule of
    ``_first_open`` and ``_leased_by_others``."""
    return (
        "SELECT COUNT(*) FROM {assignment} l"
        f" WHERE l.comparison_id = {comparison} AND l.expires_at > %s AND l.skipped_at IS NULL"
        " AND l.annotator_id <> %s"
    )


def _holds_live_lease(*, annotator: AbstractBaseUser, now: datetime) -> bool:
    """Whether the annotator holds any lease that is unexpired, unskipped and unjudged, in any
    campaign: nearly always no, which spares the query that loads what is shown. A read of the
    (annotator, expires_at) index: judged and skipped leases have expired."""
    return (
        sql.row(
            "SELECT 1 FROM {assignment} a"
            " WHERE a.annotator_id = %s AND a.expires_at > %s AND a.skipped_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM {judgment} j"
            "  WHERE j.comparison_id = a.comparison_id AND j.annotator_id = a.annotator_id)"
            " LIMIT 1",
            [annotator.pk, sql.moment(now)],
        )
        is not None
    )


@transaction.atomic
def assignment_skip(*, comparison: Comparison, annotator: AbstractBaseUser) -> None:
    """Pass on a served comparison: its lease ends and it is not served to this annotator again."""
    now = timezone.now()
    updated = Assignment.objects.filter(comparison=comparison, annotator=annotator).update(
        skipped_at=now, expires_at=now
    )
    if not updated:
        raise NotServed("this comparison was not served to you", comparison=comparison.pk)


def assignment_unskip(*, comparison: Comparison, annotator: AbstractBaseUser) -> None:
    """Take a skip back: the comparison is served to this annotator again, before the one served after
    the skip (its first serving time is kept: the oldest live lease is served first), under a new
    lease; judging it still needs room in it and its campaign open to them."""
    now = timezone.now()
    updated = Assignment.objects.filter(
        comparison=comparison, annotator=annotator, skipped_at__isnull=False
    ).update(skipped_at=None, expires_at=now + timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS))
    if not updated:
        raise NotServed("you have not skipped this comparison", comparison=comparison.pk)
