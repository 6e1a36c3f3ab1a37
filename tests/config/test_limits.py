"""Size caps: a request body, and every prompt, response and rationale, refused with the limit named."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from annotate.models import Comparison, Judgment
from generation.models import Prompt
from tests.factories import ComparisonFactory


@pytest.mark.django_db
def test_a_prompt_over_the_cap_is_refused_with_its_line_and_nothing_is_imported(write_file, settings):
    settings.PREFLOOP_MAX_PROMPT_CHARS = 50
    path = write_file("p.jsonl", '{"prompt": "short"}\n' + json.dumps({"prompt": "x" * 51}) + "\n")
    with pytest.raises(CommandError, match=r"p.jsonl:2: 'prompt' is 51 characters; the limit is 50"):
        call_command("import_prompts", str(path))
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_a_conversation_over_the_cap_is_refused_through_the_api(api, staff, settings):
    settings.PREFLOOP_MAX_PROMPT_CHARS = 50
    api.force_authenticate(staff)
    messages = [{"role": "user", "content": "y" * 30}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "z" * 30})
    response = api.post("/api/prompts/import/", {"prompts": [{"messages": messages}]}, format="json")
    assert response.status_code == 400
    assert (
        "the conversation is 62 characters; the limit is 50 (PREFLOOP_MAX_PROMPT_CHARS)"
        in response.json()["detail"]
    )
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_a_conversation_of_more_turns_than_the_cap_is_refused_with_its_line(write_file, settings):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "a"} for i in range(101)]
    path = write_file("c.jsonl", json.dumps({"messages": turns}) + "\n")
    with pytest.raises(
        CommandError, match=r"c.jsonl:1: .*101 messages; the limit is 100 \(PREFLOOP_MAX_TURNS\)"
    ):
        call_command("import_prompts", str(path))
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_an_imported_response_over_the_cap_is_refused(write_file, settings):
    settings.PREFLOOP_MAX_RESPONSE_CHARS = 20
    path = write_file("pairs.jsonl", json.dumps({"prompt": "p", "chosen": "c" * 21, "rejected": "r"}) + "\n")
    with pytest.raises(CommandError, match=r"pairs.jsonl:1: 'chosen' is 21 characters; the limit is 20"):
        call_command("import_preferences", str(path))
    assert Comparison.objects.count() == 0


@pytest.mark.django_db
def test_a_rationale_over_the_cap_is_a_400_and_nothing_is_stored(api, annotator, settings):
    settings.PREFLOOP_MAX_RATIONALE_CHARS = 10
    comparison = ComparisonFactory()
    api.force_authenticate(annotator)
    api.post("/api/comparisons/next/")
    body = {"comparison": comparison.pk, "verdict": "left", "rationale": "r" * 11}
    response = api.post("/api/judgments/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": "the rationale is 11 characters; the limit is 10 (PREFLOOP_MAX_RATIONALE_CHARS)",
    }
    assert Judgment.objects.count() == 0


@pytest.mark.django_db
def test_a_rationale_over_the_cap_on_the_judging_page_says_so(client, annotator, settings):
    settings.PREFLOOP_MAX_RATIONALE_CHARS = 10
    comparison = ComparisonFactory()
    client.force_login(annotator)
    client.get("/annotate/")
    response = client.post(
        "/annotate/judge/", {"comparison": comparison.pk, "answer": "left", "rationale": "r" * 11}
    )
    assert response.status_code == 400
    assert "the limit is 10" in response.content.decode()
    assert Judgment.objects.count() == 0


@pytest.mark.django_db
def test_an_upload_over_the_cap_is_refused_before_it_is_read(api, staff, settings):
    settings.PREFLOOP_MAX_UPLOAD_BYTES = 1000
    api.force_authenticate(staff)
    upload = SimpleUploadedFile("big.jsonl", b'{"prompt": "x"}\n' * 100)
    response = api.post("/api/prompts/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"] == "too_large"
    assert "the limit is 1000 (PREFLOOP_MAX_UPLOAD_BYTES)" in response.json()["detail"]
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_a_body_over_the_general_cap_is_refused_on_anonymous_endpoints_before_it_is_read(client, api):
    big = "x" * (2 * 1024 * 1024 + 1)

    login = client.post("/login/", {"username": "u", "password": big})
    token = api.post("/api/auth/token/", {"username": "u", "password": big}, format="json")

    assert login.status_code == 400 and "(PREFLOOP_MAX_BODY_BYTES)" in login.content.decode()
    assert token.status_code == 400 and token.json()["error"] == "too_large"


@pytest.mark.django_db
def test_an_import_still_takes_bodies_up_to_the_upload_cap(api, staff):
    api.force_authenticate(staff)
    prompts = [{"prompt": f"question {i} " + "y" * 3000} for i in range(1000)]  # about 3 MB of JSON
    response = api.post("/api/prompts/import/", {"prompts": prompts}, format="json")
    assert response.status_code in (200, 201), response.json()
    assert Prompt.objects.count() == 1000


@pytest.mark.django_db
def test_json_nested_too_deeply_is_a_400_not_a_500(api):
    body = "[" * 5000 + "]" * 5000
    response = api.generic("POST", "/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]


@pytest.mark.django_db
def test_a_deeply_nested_jsonl_line_and_a_huge_csv_field_are_named_not_500s(write_file, settings):
    nested = write_file("n.jsonl", '{"prompt": "ok"}\n' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(CommandError, match=r"n\.jsonl:2: JSON nested too deeply"):
        call_command("import_prompts", str(nested))
    huge = write_file("h.csv", "prompt\n" + "z" * 200_000 + "\n")
    with pytest.raises(CommandError, match=r"h\.csv:2: 'prompt' is 200000 characters; the limit is 100000"):
        call_command("import_prompts", str(huge))
    assert Prompt.objects.count() == 0
