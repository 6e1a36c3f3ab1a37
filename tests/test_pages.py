import pytest
from django.urls import reverse

from annotate.models import Comparison, Judgment
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
    "annotate/aijudge",
    "annotate/aiverdict",
    "annotate/judgerun",
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
def test_staff_pages_tell_an_annotator_they_are_for_staff(client, annotator, staff):
    """The admin's login and the API's docs answer a signed-in annotator with the site's page saying
    why (the docs view answered a bare "403 Forbidden"), in the site's layout."""
    client.force_login(annotator)
    for url, says in (
        ("/admin/login/", "the admin is for staff"),
        ("/api/docs/", "the API docs are for staff"),
    ):
        page = client.get(url)
        text = " ".join(page.content.decode().split())
        assert page.status_code == 403, url
        assert says in text and "signed in as" in text and "<nav" in text, (url, text[:300])
    schema = client.get("/api/schema/")  # JSON, not the schema's YAML (a browser downloads that)
    assert schema.status_code == 403 and schema.json()["detail"].startswith("the API schema is for staff")
    client.force_login(staff)
    assert client.get("/api/docs/").status_code == 200 and client.get("/api/schema/").status_code == 200


@pytest.mark.django_db
def test_home_needs_login_and_shows_counts(client, annotator):
    assert client.get(reverse("home")).status_code == 302
    client.force_login(annotator)
    ComparisonFactory.create_batch(3)
    JudgmentFactory(annotator=annotator)
    page = client.get(reverse("home"))
    assert page.status_code == 200
    text = " ".join(page.content.decode().split())
    comparisons, judgments = Comparison.objects.count(), Judgment.objects.count()
    assert comparisons >= 3 and f"<dt>Comparisons</dt><dd>{comparisons}</dd>" in text
    assert f"<dt>Judgments</dt><dd>{judgments} (1 yours)</dd>" in text


@pytest.mark.django_db
def test_logging_in_takes_staff_to_the_dashboard_and_annotators_to_the_queue(client, staff, annotator):
    for user, password, landing in (
        (staff, "staff", "training:dashboard"),
        (annotator, "ann", "annotate:queue"),
    ):
        user.set_password(password)
        user.save()
        response = client.post(
            reverse("login"), {"username": user.username, "password": password}, follow=True
        )
        assert response.redirect_chain[-1][0] == reverse(landing)
        client.logout()
    response = client.post(
        reverse("login") + "?next=/annotate/mine/", {"username": "boss", "password": "staff"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/annotate/mine/"  # an explicit next still wins


@pytest.mark.django_db
def test_favicon_and_error_pages_with_a_way_back(client, annotator):
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == 301 and favicon["Location"].endswith("favicon.svg")
    client.force_login(annotator)
    assert b'rel="icon"' in client.get(reverse("home")).content
    judgment = JudgmentFactory(annotator=annotator)
    refused = client.post(reverse("annotate:change", args=[judgment.pk]), {"answer": "sideways"})
    page = refused.content.decode()
    assert refused.status_code == 400 and "verdict must be one of" in page
    assert f'href="{reverse("annotate:change", args=[judgment.pk])}">Back to the form' in page


@pytest.mark.django_db
def test_no_template_comment_shows_on_a_page(client, staff):
    """Django's {# #} comments end at the line: a two-line one is printed (it was, atop every page)."""
    login = client.get(reverse("login")).content.decode()
    client.force_login(staff)
    for page in (login, client.get(reverse("training:dashboard")).content.decode()):
        assert "{#" not in page and "#}" not in page and "{% comment" not in page
