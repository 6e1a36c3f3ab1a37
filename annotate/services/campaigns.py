"""Campaigns: a named set of comparisons with its guidelines, annotators and serving rules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotate.errors import CampaignNotFound
from annotate.models import Campaign, CampaignStatus, Task
from config.errors import Conflict, Invalid
from generation.models import Policy

EDITABLE = (
    "name",
    "task",
    "guidelines",
    "overlap",
    "gold_rate",
    "pair_budget",
    "priority",
    "open_to_all",
    "adjudicate",
    "status",
    "suggest_judge",
)


def _validate(values: dict[str, Any]) -> None:
    if "name" in values and not str(values["name"]).strip():
        raise Invalid("a campaign needs a name")
    if "overlap" in values and int(values["overlap"]) < 1:
        raise Invalid(f"overlap must be at least 1 (got {values['overlap']})")
    if "gold_rate" in values and not 0.0 <= float(values["gold_rate"]) <= 1.0:
        raise Invalid(f"gold rate must be between 0 and 1 (got {values['gold_rate']})")
    if values.get("pair_budget") is not None and int(values["pair_budget"]) < 0:
        raise Invalid(f"pair budget must be 0 or more (got {values['pair_budget']})")
    if "task" in values and values["task"] not in Task.values:
        raise Invalid(f"task must be one of {', '.join(Task.values)} (got {values['task']!r})")
    if "status" in values and values["status"] not in CampaignStatus.values:
        raise Invalid(f"status must be one of {', '.join(CampaignStatus.values)} (got {values['status']!r})")


def campaign_named(name: str) -> Campaign:
    """The campaign called ``name``; CampaignNotFound names it."""
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is None:
        raise CampaignNotFound(f"no campaign named {name!r} (create it on the Campaigns page)")
    return campaign


@transaction.atomic
def campaign_create(
    *,
    name: str,
    members: Iterable[AbstractBaseUser] = (),
    arena_policies: Iterable[Policy] = (),
    **values: Any,
) -> Campaign:
    """A new campaign with its ``members`` (one transaction: never a members-only campaign without
    them) and, for an arena, its pool of policies; ``values`` are any of the editable fields (gold
    rate: PREFLOOP_GOLD_RATE)."""
    unknown = sorted(set(values) - set(EDITABLE))
    if unknown:
        raise Invalid(f"unknown campaign field {unknown[0]!r}")
    values = {"gold_rate": settings.PREFLOOP_GOLD_RATE, **values}
    _validate({"name": name, **values})
    if Campaign.objects.filter(name=name.strip()).exists():
        raise Conflict(f"a campaign named {name.strip()!r} already exists")
    campaign = Campaign.objects.create(name=name.strip(), **values)
    if arena_policies:
        campaign_arena_pool_set(campaign=campaign, policies=arena_policies)
    return campaign_members_set(campaign=campaign, members=members) if members else campaign


def campaign_get_or_create(*, name: str, **defaults: Any) -> Campaign:
    """The campaign called ``name``, created with ``defaults`` when it does not exist yet."""
    existing = Campaign.objects.filter(name=name).first()
    return existing or campaign_create(name=name, **defaults)


@transaction.atomic
def campaign_update(*, campaign: Campaign, **values: Any) -> Campaign:
    """Change a campaign's settings (any of the editable fields): pausing or closing it stops serving
    it at once; comparisons already queued keep the overlap they were queued with."""
    unknown = sorted(set(values) - set(EDITABLE))
    if unknown:
        raise Invalid(f"unknown campaign field {unknown[0]!r}")
    _validate(values)
    if values.get("task", campaign.task) != campaign.task and campaign.comparisons.exists():
        raise Conflict(f"campaign {campaign.name!r} has comparisons: its task ({campaign.task}) stays")
    if "name" in values:
        values["name"] = values["name"].strip()
        if Campaign.objects.filter(name=values["name"]).exclude(pk=campaign.pk).exists():
            raise Conflict(f"a campaign named {values['name']!r} already exists")
    for name, value in values.items():
        setattr(campaign, name, value)
    campaign.save()
    return campaign


@transaction.atomic
def campaign_members_set(*, campaign: Campaign, members: Iterable[AbstractBaseUser]) -> Campaign:
    """The annotators allowed to judge a campaign that is not open to all."""
    campaign.members.set(list(members))
    return campaign


def campaign_arena_pool_set(*, campaign: Campaign, policies: Iterable[Policy]) -> Campaign:
    """The policies that meet in an arena campaign (two at a time; held-back ones are left out when
    pairs are drawn)."""
    chosen = list(policies)
    if chosen and campaign.task != Task.ARENA:
        raise Invalid(f"campaign {campaign.name!r} is not an arena: it has no pool of policies")
    campaign.arena_policies.set(chosen)
    return campaign
