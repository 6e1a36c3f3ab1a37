import pytest
from django.urls import reverse

from tests.factories import ComparisonFactory, JudgmentFactory

ADMIN_MODELS = [
    "generation/prompt",
    "generation/policy",
    "generation/response",
    "generation/tag",
    "annotate/comparison",
    "annotate/judgment",
    "annotate/assignment",
    "annotate/campaign",
    "training/traininground",
    "training/evaluation",
    "annotate/judgmentrevision",
]


@pytest.mark.django_db
@pytest.mark.parametrize("model", ADMIN_MODELS)
def test_admin_changelist_and_search_work_for_staff(client, staff, model):
    JudgmentFactory(comparison=ComparisonFactory())
    client.force_login(staff)
    assert client.get(f"/admin/{model}/").status_code == 200
    assert client.get(f"/admin/{model}/", {"q": "number"}).status_code == 200


@pytest.mark.django_db
def test_admin_is_closed_to_annotators(client, annotator):
    client.force_login(annotator)
    assert client.get("/admin/generation/prompt/").status_code == 302


@pytest.mark.django_db
def test_home_needs_login_and_shows_counts(client, annotator):
    assert client.get(reverse("home")).status_code == 302
    client.force_login(annotator)
    page = client.get(reverse("home"))
    assert page.status_code == 200
    assert b"Comparisons" in page.content
