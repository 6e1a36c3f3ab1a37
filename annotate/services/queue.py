"""Serving comparisons: the next one for an annotator under a lease, and skipping it."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotate.errors import CampaignNotOpen, NotServed
from annotate.models import Assignment, Campaign, Comparison, Judgment, Kind, Side
from annotate.selectors import campaign_closed_reason, campaigns_open_for, comparisons_open_for

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
    allowed = campaigns_open_for(annotator=annotator)
    if campaign is not None:
        if not allowed.filter(pk=campaign.pk).exists():
            raise CampaignNotOpen(
                campaign_closed_reason(campaign=campaign, annotator=annotator), campaign=campaign.pk
            )
        allowed = allowed.filter(pk=campaign.pk)
    live = (
        Assignment.objects.filter(
            annotator=annotator, expires_at__gt=now, skipped_at=None, comparison__campaign__in=allowed
        )
        .exclude(comparison__in=Judgment.objects.filter(annotator=annotator).values("comparison"))
        .select_related(*_SHOWN)
        .order_by("served_at")
        .first()
    )
    if live is not None:
        return live
    for candidate_campaign in list(allowed):
        candidates = (
            comparisons_open_for(annotator=annotator, now=now, campaign=candidate_campaign, known_open=True)
            .select_related("prompt", "response_a", "response_b")  # what is shown, with the lock
            .order_by("id")
        )
        if not candidate_campaign.gold_rate:
            comparison = _lock_open(candidates, annotator=annotator, now=now, campaign=candidate_campaign)
        else:
            preferred = (
                candidates.filter(kind=Kind.GOLD)
                if random.random() < candidate_campaign.gold_rate
                else candidates.exclude(kind=Kind.GOLD)
            )
            comparison = _lock_open(
                preferred, annotator=annotator, now=now, campaign=candidate_campaign
            ) or _lock_open(candidates, annotator=annotator, now=now, campaign=candidate_campaign)
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
            # One statement: a new lease, or one served before (lapsed, neither judged nor skipped) renewed.
            Assignment.objects.bulk_create(
                [lease],
                update_conflicts=True,
                unique_fields=["comparison", "annotator"],
                update_fields=["left", "order", "served_at", "expires_at", "skipped_at"],
            )
            return lease
    return None


def _shuffled(letters: str) -> str:
    """A ranking item's answers in a random order for one annotator (position bias averages out)."""
    order = list(letters)
    random.shuffle(order)
    return "".join(order)


def _lock_open(
    candidates: QuerySet[Comparison], *, annotator: AbstractBaseUser, now: datetime, campaign: Campaign
) -> Comparison | None:
    """Lock the first open candidate, and make sure it is still open once locked.

    First pass: SKIP LOCKED, so concurrent annotators take different rows without waiting. Only if
    every candidate is held by someone else, a second pass waits for a lock (a few milliseconds:
    the holders' transactions are short) rather than report an empty queue that is not empty.
    The candidate query counts leases as of its snapshot; a lease committed by the previous lock
    holder after that snapshot is seen by the fresh query made here while we hold the lock. (SQLite
    needs no second look: the transaction took the write lock first, so its reads are current.)
    """
    if connection.vendor == "sqlite":
        return candidates.first()
    passed: list[int] = []
    for skip_locked in (True, False):
        while True:
            comparison = (
                candidates.exclude(pk__in=passed)
                .select_for_update(skip_locked=skip_locked, of=("self",))
                .first()
            )
            if comparison is None:
                break
            fresh = comparisons_open_for(annotator=annotator, now=now, campaign=campaign, known_open=True)
            if fresh.filter(pk=comparison.pk).exists():
                return comparison
            passed.append(comparison.pk)
    return None


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
