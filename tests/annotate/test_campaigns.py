"""Campaigns: who is served what, in which order, and staff managing them from the web and the API."""

import subprocess
import sys

import pytest
from django.urls import reverse

from annotate.errors import CampaignNotOpen
from annotate.models import Campaign, CampaignStatus
from annotate.services.campaigns import campaign_create, campaign_update
from annotate.services.queue import comparison_assign_next
from config.errors import Conflict, Invalid
from tests.factories import CampaignFactory, ComparisonFactory, UserFactory

QUEUE = reverse("annotate:queue")


@pytest.mark.django_db
def test_higher_priority_campaign_is_served_first(annotator):
    low = ComparisonFactory(campaign=CampaignFactory(name="low", priority=0))
    high = ComparisonFactory(campaign=CampaignFactory(name="high", priority=5))
    assert comparison_assign_next(annotator=annotator).comparison == high
    assert comparison_assign_next(annotator=UserFactory()).comparison == low  # high is leased (overlap 1)
    later = ComparisonFactory(campaign=low.campaign)
    assert comparison_assign_next(annotator=UserFactory(), campaign=low.campaign).comparison == later


@pytest.mark.django_db
def test_paused_and_closed_campaigns_serve_nothing(annotator):
    comparison = ComparisonFactory(campaign=CampaignFactory(name="c"))
    for status in (CampaignStatus.PAUSED, CampaignStatus.CLOSED):
        campaign_update(campaign=comparison.campaign, status=status)
        assert comparison_assign_next(annotator=annotator) is None
    campaign_update(campaign=comparison.campaign, status=CampaignStatus.OPEN)
    assert comparison_assign_next(annotator=annotator).comparison == comparison


@pytest.mark.django_db
def test_a_members_only_campaign_serves_its_members_alone(annotator, other_annotator):
    campaign = CampaignFactory(name="experts", open_to_all=False)
    campaign.members.add(annotator)
    comparison = ComparisonFactory(campaign=campaign, overlap=2)
    assert comparison_assign_next(annotator=other_annotator) is None
    with pytest.raises(CampaignNotOpen):
        comparison_assign_next(annotator=other_annotator, campaign=campaign)
    assert comparison_assign_next(annotator=annotator).comparison == comparison


@pytest.mark.django_db
def test_a_lease_in_a_campaign_paused_since_is_not_served_again(annotator):
    first = ComparisonFactory(campaign=CampaignFactory(name="a", priority=1))
    second = ComparisonFactory(campaign=CampaignFactory(name="b"))
    assert comparison_assign_next(annotator=annotator).comparison == first
    campaign_update(campaign=first.campaign, status=CampaignStatus.PAUSED)
    assert comparison_assign_next(annotator=annotator).comparison == second


@pytest.mark.django_db
def test_campaign_settings_are_checked_by_the_service():
    campaign_create(name="one")
    with pytest.raises(Conflict, match="already exists"):
        campaign_create(name="one")
    with pytest.raises(Invalid, match="gold rate"):
        campaign_create(name="two", gold_rate=1.5)
    with pytest.raises(Invalid, match="status must be one of"):
        campaign_update(campaign=Campaign.objects.get(), status="archived")


@pytest.mark.django_db
def test_the_annotator_picks_a_campaign_and_sees_its_guidelines(client, annotator):
    plain = ComparisonFactory(campaign=CampaignFactory(name="plain", priority=9))
    styled = ComparisonFactory(
        campaign=CampaignFactory(name="styled", guidelines="Prefer **short** answers.")
    )
    client.force_login(annotator)
    page = client.get(QUEUE).content.decode()
    assert plain.response_a.text in page and "<strong>short</strong>" not in page
    assert ">styled</option>" in page and ">plain</option>" in page

    page = client.get(QUEUE, {"campaign": styled.campaign.pk}).content.decode()
    assert styled.response_a.text in page and "<strong>short</strong>" in page
    assert "styled</option>" in page and f'value="{styled.campaign.pk}" selected' in page
    assert client.get(QUEUE, {"campaign": 999}).status_code == 404
    assert client.get(QUEUE, {"campaign": "abc"}).status_code == 400


@pytest.mark.django_db
def test_staff_create_edit_pause_and_close_campaigns_on_the_web(client, staff, annotator):
    client.force_login(staff)
    form = {"name": "Spring", "status": "open", "priority": "3", "overlap": "2", "gold_rate": "0.2",
            "guidelines": "Be *fair*.", "members": [annotator.pk]}  # fmt: skip
    response = client.post(reverse("annotate:campaigns"), form)
    campaign = Campaign.objects.get(name="Spring")
    assert response.status_code == 302 and response.url == reverse("annotate:campaign", args=[campaign.pk])
    assert (campaign.priority, campaign.overlap, campaign.gold_rate, campaign.open_to_all) == (
        3,
        2,
        0.2,
        False,
    )
    assert list(campaign.members.all()) == [annotator]
    assert client.post(reverse("annotate:campaigns"), form).status_code == 400  # the name is taken

    page = client.get(reverse("annotate:campaign", args=[campaign.pk])).content.decode()
    assert "<em>fair</em>" in page and "Pause" in page
    client.post(reverse("annotate:campaign", args=[campaign.pk]), {"status_only": "1", "status": "paused"})
    assert Campaign.objects.get().status == CampaignStatus.PAUSED
    client.post(
        reverse("annotate:campaign", args=[campaign.pk]), {**form, "status": "closed", "priority": "7"}
    )
    campaign.refresh_from_db()
    assert (campaign.status, campaign.priority) == (CampaignStatus.CLOSED, 7)
    assert client.get(reverse("annotate:campaign", args=[404])).status_code == 404


@pytest.mark.django_db
def test_campaigns_over_the_api(api, staff, annotator):
    api.force_authenticate(staff)
    created = api.post(
        "/api/campaigns/",
        {"name": "api", "priority": 2, "open_to_all": False, "members": ["ann"]},
        format="json",
    )
    assert created.status_code == 201 and created.json()["members"] == ["ann"]
    pk = created.json()["id"]
    assert (
        api.patch(f"/api/campaigns/{pk}/", {"status": "paused"}, format="json").json()["status"] == "paused"
    )
    assert api.post("/api/campaigns/", {"name": "api"}, format="json").json()["error"] == "conflict"
    assert api.get("/api/campaigns/999/").json()["error"] == "campaign_not_found"
    api.force_authenticate(annotator)
    assert api.get("/api/campaigns/").json()["count"] == 0  # paused: not open to them
    assert api.post("/api/campaigns/", {"name": "mine"}, format="json").status_code == 403
    assert api.post("/api/comparisons/next/", {"campaign": "nope"}, format="json").status_code == 404


@pytest.mark.django_db
def test_an_annotator_sees_no_members_or_gold_rate_and_no_members_only_campaign(api, annotator):
    colleague = UserFactory(username="colleague")
    CampaignFactory(name="open one", gold_rate=0.3)
    secret = CampaignFactory(name="secret", open_to_all=False)
    secret.members.set([colleague])
    api.force_authenticate(annotator)

    listed = api.get("/api/campaigns/").json()["results"]
    unknown = api.post("/api/comparisons/next/", {"campaign": "nope"}, format="json")
    members_only = api.post("/api/comparisons/next/", {"campaign": "secret"}, format="json")

    assert [c["name"] for c in listed] == ["open one"]
    assert "members" not in listed[0] and "gold_rate" not in listed[0]
    assert unknown.status_code == members_only.status_code == 404  # an outsider cannot tell them apart
    assert members_only.json()["detail"] == "no campaign with name secret"


def test_the_web_process_loads_no_torch():
    """Importing every URL route (every page and API view) must not import torch or transformers."""
    code = (
        "import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); "
        "django.setup(); import config.urls; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.django_db
def test_a_campaigns_task_and_pair_budget_are_set_on_the_web_and_the_api_and_a_task_stays(api, staff, client):
    api.force_authenticate(staff)
    created = api.post(
        "/api/campaigns/", {"name": "thumbs", "task": "thumbs", "pair_budget": 40}, format="json"
    ).json()
    assert (created["task"], created["pair_budget"]) == ("thumbs", 40)
    refused = api.post("/api/campaigns/", {"name": "x", "pair_budget": -1}, format="json")
    assert refused.status_code == 400
    client.force_login(staff)
    client.post(reverse("annotate:campaigns"), {"name": "ranked", "task": "rankings", "overlap": 1, "gold_rate": 0, "priority": 0, "status": "open", "open_to_all": "on", "adjudicate": "on"})  # fmt: skip
    ranked = Campaign.objects.get(name="ranked")
    assert ranked.task == "rankings" and ranked.pair_budget is None
    assert "rankings" in client.get(reverse("annotate:campaigns")).content.decode()
    ComparisonFactory(campaign=Campaign.objects.get(name="thumbs"), response_b=None)
    changed = api.patch(f"/api/campaigns/{created['id']}/", {"task": "pairs"}, format="json")
    assert changed.json()["error"] == "conflict" and "its task (thumbs) stays" in changed.json()["detail"]
