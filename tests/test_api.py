import json

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from annotate.models import Choice, Judgment
from generation.models import Prompt
from tests.factories import ComparisonFactory, JudgmentFactory, PolicyFactory, UserFactory

# (method, url, who may call it): "user" = any logged-in user, "staff" = staff only.
ENDPOINTS = [
    ("get", "/api/prompts/", "staff"),
    ("post", "/api/prompts/", "staff"),
    ("post", "/api/prompts/import/", "staff"),
    ("get", "/api/policies/", "staff"),
    ("get", "/api/policies/{policy}/", "staff"),
    ("get", "/api/comparisons/", "staff"),
    ("post", "/api/comparisons/next/", "user"),
    ("get", "/api/judgments/", "user"),
    ("post", "/api/judgments/", "user"),
    ("post", "/api/preferences/import/", "staff"),
    ("get", "/api/export/", "staff"),
    ("get", "/api/export/card/", "staff"),
    ("get", "/api/rounds/", "staff"),
    ("post", "/api/rounds/", "staff"),
    ("get", "/api/schema/", "staff"),
    ("get", "/api/docs/", "staff"),
]


@pytest.fixture
def policy(db):
    return PolicyFactory()


def call(api, method, url, policy):
    return getattr(api, method)(url.format(policy=policy.pk), {}, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url", "who"), ENDPOINTS)
def test_anonymous_users_are_refused_everywhere(api, policy, method, url, who):
    assert call(api, method, url, policy).status_code in (401, 403)


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url", "who"), ENDPOINTS)
def test_annotators_reach_only_annotator_endpoints(api, annotator, policy, method, url, who):
    api.force_authenticate(annotator)
    status = call(api, method, url, policy).status_code
    if who == "staff":
        assert status == 403
    else:
        assert status not in (401, 403)


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "url", "who"), ENDPOINTS)
def test_staff_reach_every_endpoint(api, staff, policy, method, url, who):
    api.force_authenticate(staff)
    assert call(api, method, url, policy).status_code not in (401, 403, 404, 405)


@pytest.mark.django_db
def test_token_auth_works_for_the_api(api, annotator):
    token = Token.objects.create(user=annotator)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/judgments/").status_code == 200


@pytest.mark.django_db
def test_annotators_see_only_their_own_judgments_and_staff_see_all(api, annotator, other_annotator, staff):
    mine = JudgmentFactory(annotator=annotator)
    JudgmentFactory(annotator=other_annotator)
    api.force_authenticate(annotator)
    assert [j["id"] for j in api.get("/api/judgments/").json()["results"]] == [mine.pk]
    api.force_authenticate(staff)
    assert api.get("/api/judgments/").json()["count"] == 2


@pytest.mark.django_db
def test_next_then_judge_through_the_api_is_blind_and_recorded(api, annotator):
    comparison = ComparisonFactory()
    api.force_authenticate(annotator)

    served = api.post("/api/comparisons/next/").json()
    assert served["comparison"] == comparison.pk
    assert {served["left"], served["right"]} == {comparison.response_a.text, comparison.response_b.text}
    assert "policy" not in json.dumps(served)

    created = api.post(
        "/api/judgments/",
        {"comparison": comparison.pk, "verdict": "left", "strength": "clear"},
        format="json",
    )
    assert created.status_code == 201
    judgment = Judgment.objects.get()
    shown_left = comparison.response_a.text if judgment.left == "first" else comparison.response_b.text
    assert shown_left == served["left"]
    assert judgment.choice == judgment.left
    assert api.post("/api/comparisons/next/").status_code == 204


@pytest.mark.django_db
def test_errors_come_back_as_typed_json(api, annotator):
    comparison = ComparisonFactory()
    api.force_authenticate(annotator)
    refused = api.post("/api/judgments/", {"comparison": comparison.pk, "verdict": "left"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"] == "not_served"
    api.post("/api/comparisons/next/")
    api.post("/api/judgments/", {"comparison": comparison.pk, "verdict": "left"}, format="json")
    again = api.post("/api/judgments/", {"comparison": comparison.pk, "verdict": "right"}, format="json")
    assert (again.status_code, again.json()["error"]) == (409, "already_judged")
    assert Judgment.objects.count() == 1
    missing = api.post("/api/judgments/", {"comparison": 999999, "verdict": "left"}, format="json")
    assert missing.status_code == 404
    for beyond in (2**63, -1, 0):  # no row can have such an id: the same 404, never a database error
        answer = api.post("/api/judgments/", {"comparison": beyond, "verdict": "left"}, format="json")
        assert (answer.status_code, answer.json()["error"]) == (404, "comparison_not_found"), beyond


@pytest.mark.django_db
def test_prompt_create_and_bulk_import(api, staff):
    api.force_authenticate(staff)
    created = api.post("/api/prompts/", {"prompt": "Hello?", "tags": ["x"]}, format="json")
    assert created.status_code == 201
    assert created.json()["tags"] == ["x"]
    assert api.post("/api/prompts/", {"prompt": "Hello?"}, format="json").status_code == 200

    listing = {
        "prompts": [{"prompt": "A"}, {"messages": [{"role": "user", "content": "B"}]}],
        "split": "eval",
    }
    assert api.post("/api/prompts/import/", listing, format="json").json() == {
        "read": 2,
        "created": 2,
        "duplicates": 0,
    }
    upload = SimpleUploadedFile("p.csv", b"prompt\nC\nHello?\n", content_type="text/csv")
    body = api.post("/api/prompts/import/", {"file": upload}, format="multipart").json()
    assert body == {"read": 2, "created": 1, "duplicates": 1}
    assert Prompt.objects.filter(split="eval").count() == 2


@pytest.mark.django_db
def test_bulk_import_with_bad_lines_lists_them_and_stores_nothing(api, staff):
    api.force_authenticate(staff)
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "ok"}\n{"nope": 1}\nbroken\n')
    response = api.post("/api/prompts/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert [p["line"] for p in response.json()["problems"]] == [2, 3]
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_export_streams_jsonl(api, staff):
    comparison = ComparisonFactory()
    JudgmentFactory(comparison=comparison, choice=Choice.SECOND, annotator=UserFactory())
    api.force_authenticate(staff)
    response = api.get("/api/export/", {"format": "standard"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jsonl"
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert rows == [
        {
            "prompt": comparison.prompt.text,
            "chosen": comparison.response_b.text,
            "rejected": comparison.response_a.text,
            "comparison_id": comparison.pk,
            "judgments": 1,
            "agreement": 1.0,
            "confidence": 1.0,  # one annotator: the model has nothing to doubt them by
        }
    ]
    assert api.get("/api/export/", {"format": "yaml"}).status_code == 400
    assert response["Link"] == '</api/export/card/?format=standard>; rel="describedby"; type="text/markdown"'

    card = api.get("/api/export/card/", {"format": "standard", "aggregation": "dawid-skene"})
    assert card.status_code == 200 and card["Content-Type"].startswith("text/markdown")
    text = card.content.decode()
    header = yaml.safe_load(text.split("---")[1])  # the YAML header of a Hugging Face dataset card
    assert header["configs"][0]["data_files"][0]["path"] == "preferences.jsonl"
    assert "splits" not in header["dataset_info"] and "1 rows from 1 comparisons" in text
    assert "Dawid-Skene" in text and "GET /api/export/?" in text
    assert api.get("/api/export/card/", {"campaign": "nope"}).json()["error"] == "campaign_not_found"


@pytest.mark.django_db
def test_comparison_list_shows_policies_to_staff(api, staff):
    comparison = ComparisonFactory()
    api.force_authenticate(staff)
    row = api.get("/api/comparisons/").json()["results"][0]
    assert row["first_policy"] == comparison.response_a.policy.name
    assert row["judgments"] == 0


@pytest.mark.django_db
def test_preference_import_through_the_api_is_all_or_nothing(api, staff):
    from annotate.models import Comparison

    api.force_authenticate(staff)
    good = {"pairs": [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], "overlap": 2, "campaign": "seed"}
    assert api.post("/api/preferences/import/", good, format="json").json() == {
        "read": 1,
        "comparisons": 1,
        "prompts": 1,
        "duplicates": 0,
    }
    assert Comparison.objects.get().overlap == 2
    upload = SimpleUploadedFile(
        "p.jsonl", b'{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "b"}\n'
    )
    refused = api.post("/api/preferences/import/", {"file": upload}, format="multipart")
    assert refused.status_code == 400
    assert refused.json()["problems"] == [{"line": 2, "problem": "missing field 'chosen' (or 'preferred')"}]
    assert Comparison.objects.count() == 1


@pytest.mark.django_db
def test_every_api_error_has_the_documented_shape(api, annotator, staff):
    unauthenticated = api.get("/api/judgments/")
    assert unauthenticated.status_code in (401, 403)
    assert set(unauthenticated.json()) == {"error", "detail"}
    api.force_authenticate(annotator)
    forbidden = api.get("/api/prompts/")
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "not_allowed"
    invalid = api.post("/api/judgments/", {"comparison": "x", "verdict": "sideways"}, format="json")
    body = invalid.json()
    assert invalid.status_code == 400 and body["error"] == "invalid"
    assert "verdict: " in body["detail"] and "comparison: " in body["detail"] and "verdict" in body["fields"]
    assert api.delete("/api/judgments/").json()["error"] == "method_not_allowed"
    api.force_authenticate(staff)
    assert api.get("/api/rounds/12345/").json() == {
        "error": "round_not_found",
        "detail": "no round with pk 12345",
        "pk": "12345",
    }


@pytest.mark.django_db
def test_a_judgment_can_ask_for_the_next_comparison_in_the_same_request(api, annotator):
    first, second = ComparisonFactory(), ComparisonFactory()
    api.force_authenticate(annotator)
    served = api.post("/api/comparisons/next/").json()
    assert served["comparison"] == first.pk
    body = {"comparison": first.pk, "verdict": "left", "next": True}
    created = api.post("/api/judgments/", body, format="json")
    assert created.status_code == 201
    assert created.json()["choice"] in ("first", "second")
    following = created.json()["next"]
    assert following["comparison"] == second.pk and {"left", "right", "prompt"} <= set(following)
    last = api.post(
        "/api/judgments/", {"comparison": second.pk, "verdict": "tie", "next": True}, format="json"
    )
    assert last.status_code == 201 and last.json()["next"] is None
    assert Judgment.objects.count() == 2
    plain = api.get("/api/judgments/").json()["results"][0]
    assert "next" not in plain


@pytest.mark.django_db
def test_non_numeric_ids_are_a_400_never_a_500(api, client, annotator):
    api.force_authenticate(annotator)
    body = api.post("/api/judgments/", {"comparison": "abc", "verdict": "left"}, format="json")
    assert body.status_code == 400 and body.json()["error"] == "invalid"
    client.force_login(annotator)
    page = client.get("/annotate/?campaign=abc")
    assert page.status_code == 400
    judged = client.post("/annotate/judge/", {"comparison": "abc", "answer": "left"})
    assert judged.status_code == 400
    assert client.get("/annotate/mine/abc/").status_code == 404  # not a route at all


@pytest.mark.django_db
def test_a_judgment_through_the_api_may_carry_an_edit(api, annotator):
    comparison = ComparisonFactory()
    api.force_authenticate(annotator)
    served = api.post("/api/comparisons/next/").json()

    created = api.post(
        "/api/judgments/",
        {
            "comparison": comparison.pk,
            "verdict": "left",
            "edit": served["left"] + " Better.",
            "edit_of": "left",
        },
        format="json",
    )

    assert created.status_code == 201, created.json()
    edit = Judgment.objects.get().edit
    assert created.json()["edit"] == edit.pk and edit.text == served["left"] + " Better."
    assert edit.improves.text == served["left"] and edit.author == annotator
