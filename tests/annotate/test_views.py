import re
import threading

import pytest
from django.db import connection
from django.urls import reverse

from annotate.models import Assignment, Campaign, Choice, Judgment, JudgmentRevision, Kind, Side, Strength
from annotate.selectors import annotator_gold_accuracy
from annotate.services.queue import comparison_assign_next
from tests.annotate.test_rendering import active_content
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)

QUEUE = reverse("annotate:queue")
JUDGE = reverse("annotate:judge")
MINE = reverse("annotate:mine")
CAMPAIGNS = reverse("annotate:campaigns")


def untrusted_part(html: str) -> str:
    """The prompt and the two responses: everything of the comparison above our own form."""
    return re.search(r'<article id="comparison".*?(?=<form id="judge")', html, re.S).group(0)


@pytest.fixture
def logged_in(client, annotator):
    client.force_login(annotator)
    return client


@pytest.mark.django_db
def test_every_page_needs_login(client):
    judgment = JudgmentFactory()
    for url in (QUEUE, MINE, reverse("annotate:change", args=[judgment.pk]), CAMPAIGNS, reverse("home")):
        response = client.get(url)
        assert response.status_code == 302 and "login" in response["Location"], url
    response = client.post(JUDGE, {"comparison": judgment.comparison_id, "answer": "left"})
    assert response.status_code == 302 and "login" in response["Location"]
    assert Judgment.objects.count() == 1


@pytest.mark.django_db
def test_campaign_pages_are_staff_only(logged_in, client, staff):
    assert logged_in.get(CAMPAIGNS).status_code == 403
    assert (
        logged_in.post(
            CAMPAIGNS, {"name": "hijack", "status": "open", "priority": 0, "overlap": 1, "gold_rate": 0.1}
        ).status_code
        == 403
    )
    assert not Campaign.objects.exists()
    client.force_login(staff)
    assert client.get(CAMPAIGNS).status_code == 200


@pytest.mark.django_db
def test_queue_shows_prompt_turns_and_both_responses_without_policies(logged_in):
    prompt = PromptFactory(
        text="",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
        ],
    )
    comparison = ComparisonFactory(
        prompt=prompt, campaign=CampaignFactory(name="colours", guidelines="Prefer *short* answers.")
    )

    html = logged_in.get(QUEUE).content.decode()

    assert "Be brief." in html and "Name a colour." in html
    assert comparison.response_a.text in html and comparison.response_b.text in html
    assert comparison.response_a.policy.name not in html
    assert comparison.response_b.policy.name not in html
    assert "<em>short</em>" in html
    assert "Judged today: <strong>0</strong>" in html


@pytest.mark.django_db
def test_xss_payloads_in_prompt_and_responses_render_inert(logged_in):
    prompt = PromptFactory(text="<script>alert('prompt')</script> [x](javascript:alert(1))")
    a = ResponseFactory(prompt=prompt, text="<img src=x onerror=alert(1)>")
    b = ResponseFactory(
        prompt=prompt, text="```html\n<script>alert(2)</script>\n```\n<a href='javascript:alert(3)'>y</a>"
    )
    ComparisonFactory(prompt=prompt, response_a=a, response_b=b)

    fragment = untrusted_part(logged_in.get(QUEUE).content.decode())

    assert active_content(fragment) == []
    assert "&lt;script&gt;" in fragment or "&lt;</span><span" in fragment


@pytest.mark.django_db
def test_plain_form_post_judges_and_redirects(logged_in, annotator):
    comparison = ComparisonFactory()
    logged_in.get(QUEUE)
    left = Assignment.objects.get().left

    response = logged_in.post(
        JUDGE, {"comparison": comparison.pk, "answer": "right:clear", "rationale": " terse "}
    )

    assert response.status_code == 302 and response["Location"] == QUEUE
    judgment = Judgment.objects.get()
    assert judgment.choice == (Choice.SECOND if left == Side.FIRST else Choice.FIRST)
    assert (judgment.strength, judgment.rationale, judgment.left) == (Strength.CLEAR, "terse", left)
    assert judgment.time_on_task_ms is not None


@pytest.mark.django_db
def test_htmx_post_swaps_in_the_next_comparison_and_progress(logged_in):
    first, second = ComparisonFactory(), ComparisonFactory()
    logged_in.get(QUEUE)

    response = logged_in.post(JUDGE, {"comparison": first.pk, "answer": "tie"}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert f'name="comparison" value="{second.pk}"' in html
    assert 'id="progress" class="progress" hx-swap-oob="true"' in html
    assert "Judged today: <strong>1</strong>" in html


@pytest.mark.django_db
def test_double_submit_keeps_one_judgment_and_moves_on(logged_in):
    comparison = ComparisonFactory(overlap=2)
    logged_in.get(QUEUE)
    for answer in ("left", "right"):
        assert logged_in.post(JUDGE, {"comparison": comparison.pk, "answer": answer}).status_code == 302
    judgment = Judgment.objects.get()
    assert judgment.choice == judgment.left  # the first answer, "left", is the one kept


@pytest.mark.django_db
def test_an_answer_resubmitted_from_history_says_it_was_not_recorded(logged_in):
    comparison, _ = ComparisonFactory(overlap=2), ComparisonFactory(overlap=2)
    page = logged_in.get(QUEUE)
    assert "no-store" in page["Cache-Control"]  # Back fetches the queue again instead of a stale page
    logged_in.post(JUDGE, {"comparison": comparison.pk, "answer": "left"}, HTTP_HX_REQUEST="true")

    again = logged_in.post(JUDGE, {"comparison": comparison.pk, "answer": "right"}, HTTP_HX_REQUEST="true")

    html = again.content.decode()
    judgment = Judgment.objects.get()
    assert judgment.choice == judgment.left  # the first answer stands
    assert "You had already judged that comparison: <strong>Left better</strong> stands" in html
    assert "<strong>not recorded</strong>" in html
    assert f'href="{reverse("annotate:change", args=[judgment.pk])}?next=queue"' in html
    follow_up = logged_in.get(QUEUE).content.decode()
    assert "not recorded" not in follow_up  # said once


@pytest.mark.django_db
def test_judging_a_comparison_not_served_is_refused(logged_in, other_annotator):
    comparison = ComparisonFactory()
    comparison_assign_next(annotator=other_annotator)
    response = logged_in.post(JUDGE, {"comparison": comparison.pk, "answer": "left"})
    assert response.status_code == 403
    assert b"not served to you" in response.content
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_skip_is_not_served_again(logged_in):
    skipped, other = ComparisonFactory(), ComparisonFactory()
    logged_in.get(QUEUE)
    html = logged_in.post(JUDGE, {"comparison": skipped.pk, "answer": "skip"}, HTTP_HX_REQUEST="true").content
    assert f'value="{other.pk}"'.encode() in html
    logged_in.post(JUDGE, {"comparison": other.pk, "answer": "left"})
    assert b"All caught up" in logged_in.get(QUEUE).content
    assert not Judgment.objects.filter(comparison=skipped).exists()


@pytest.mark.django_db
def test_changing_a_judgment_records_the_previous_answer_and_time(logged_in, annotator):
    comparison = ComparisonFactory()
    logged_in.get(QUEUE)
    logged_in.post(JUDGE, {"comparison": comparison.pk, "answer": "left"})
    judgment = Judgment.objects.get()
    url = reverse("annotate:change", args=[judgment.pk])
    page = logged_in.get(url).content.decode()
    assert 'value="left" data-key="1" checked' in page

    assert logged_in.post(url, {"answer": "tie", "rationale": "on reflection"}).status_code == 302

    judgment.refresh_from_db()
    assert (judgment.choice, judgment.rationale) == (Choice.TIE, "on reflection")
    revision = JudgmentRevision.objects.get()
    assert revision.choice == judgment.left and revision.changed_at >= judgment.created_at
    assert b"1\xc3\x97, last" in logged_in.get(MINE).content


@pytest.mark.django_db
def test_someone_elses_judgment_cannot_be_seen_or_changed(logged_in, other_annotator):
    theirs = JudgmentFactory(annotator=other_annotator)
    url = reverse("annotate:change", args=[theirs.pk])
    assert logged_in.get(url).status_code == 404
    assert logged_in.post(url, {"answer": "tie"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.choice == Choice.FIRST and not JudgmentRevision.objects.exists()


@pytest.mark.django_db
def test_empty_queue_says_so_and_polls(logged_in):
    html = logged_in.get(QUEUE).content.decode()
    assert "All caught up" in html
    assert 'hx-trigger="every 30s"' in html


@pytest.mark.django_db
def test_gold_is_mixed_in_at_the_configured_rate_and_accuracy_is_kept(logged_in, annotator, settings):
    CampaignFactory(gold_rate=1.0)  # the campaign's rate: always gold while any is left
    ComparisonFactory()
    gold = ComparisonFactory(kind=Kind.GOLD, gold_answer=Choice.FIRST)
    JudgmentFactory(comparison=gold)  # gold is served to everyone, whatever its overlap
    logged_in.get(QUEUE)
    assignment = Assignment.objects.get(annotator=annotator)
    assert assignment.comparison == gold
    logged_in.post(
        JUDGE, {"comparison": gold.pk, "answer": "left" if assignment.left == Side.FIRST else "right"}
    )
    assert annotator_gold_accuracy(annotator=annotator) == (1, 1)
    assert b"Gold" not in logged_in.get(MINE).content  # annotators are not told which items were gold

    Campaign.objects.update(gold_rate=0.0)
    other_gold = ComparisonFactory(kind=Kind.GOLD, gold_answer=Choice.TIE)
    assert comparison_assign_next(annotator=UserFactory()).comparison.kind == Kind.TRAIN
    assert other_gold.kind == Kind.GOLD


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 2])
def test_concurrent_annotators_are_never_served_beyond_overlap(overlap):
    comparisons = [ComparisonFactory(overlap=overlap) for _ in range(3)]
    annotators = [UserFactory() for _ in range(8)]
    barrier = threading.Barrier(len(annotators))
    errors: list[BaseException] = []

    def work(user):
        try:
            barrier.wait()
            comparison_assign_next(annotator=user)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=work, args=(user,)) for user in annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    served = Assignment.objects.values_list("comparison", flat=True)
    for comparison in comparisons:
        assert list(served).count(comparison.pk) == overlap
    assert Assignment.objects.count() == 3 * overlap


@pytest.mark.django_db
def test_an_edit_posted_with_the_plain_form_is_kept_and_listed_under_my_judgments(logged_in, annotator):
    prompt = PromptFactory()
    comparison = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text="<img src=x onerror=alert(1)> one"),
        response_b=ResponseFactory(prompt=prompt, text="two"),
    )
    page = logged_in.get(QUEUE).content.decode()
    # the edit box carries both answers' raw text for "Start from ...", escaped like any text
    assert "&lt;img src=x onerror=alert(1)&gt; one</textarea>" in page and "<img src=x" not in page

    logged_in.post(
        JUDGE, {"comparison": comparison.pk, "answer": "tie", "edit": "three, said well", "edit_of": ""}
    )

    edit = Judgment.objects.get().edit
    assert (edit.text, edit.author, edit.improves) == ("three, said well", annotator, None)
    assert "Your edit:</span> three, said well" in logged_in.get(MINE).content.decode()


@pytest.mark.django_db
def test_a_campaign_paused_under_the_annotator_says_so_and_serves_the_next_comparison(logged_in):
    paused = CampaignFactory(name="paused one", priority=5)
    other = CampaignFactory(name="still open")
    held = ComparisonFactory(campaign=paused)
    waiting = ComparisonFactory(campaign=other)
    logged_in.get(QUEUE + f"?campaign={paused.pk}")
    Campaign.objects.filter(pk=paused.pk).update(status="paused")

    response = logged_in.post(JUDGE, {"comparison": held.pk, "answer": "left"}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200  # swapped in: the keys keep working
    assert "Campaign &#x27;paused one&#x27; was paused by staff: your answer was not recorded" in html
    assert "here is your next comparison" in html
    assert f'name="comparison" value="{waiting.pk}"' in html
    assert 'id="progress"' in html  # the counter is refreshed with it
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_a_bookmark_of_a_paused_campaign_says_it_was_paused(logged_in):
    paused = CampaignFactory(name="autumn", status="paused")
    ComparisonFactory(campaign=CampaignFactory(name="other"))

    html = logged_in.get(QUEUE + f"?campaign={paused.pk}").content.decode()

    assert (
        "Campaign &#x27;autumn&#x27; was paused by staff; you are judging in all your campaigns now" in html
    )
    hidden = CampaignFactory(name="secret", open_to_all=False, status="paused")
    assert logged_in.get(QUEUE + f"?campaign={hidden.pk}").status_code == 404  # not a member: not told


@pytest.mark.django_db
def test_a_skip_is_confirmed_and_undone_with_the_same_comparison_served_again(logged_in):
    first, second = ComparisonFactory(), ComparisonFactory()
    logged_in.get(QUEUE)

    skipped = logged_in.post(JUDGE, {"comparison": first.pk, "answer": "skip"}, HTTP_HX_REQUEST="true")

    html = skipped.content.decode()
    assert "Skipped the previous comparison: it will not be served to you again." in html
    assert 'name="answer" value="unskip" id="undo"' in html
    assert f'name="comparison" value="{second.pk}"' in html
    undone = logged_in.post(JUDGE, {"comparison": first.pk, "answer": "unskip"}, HTTP_HX_REQUEST="true")
    assert f'<input type="hidden" name="comparison" value="{first.pk}">' in undone.content.decode()
    assert "Skipped the previous" not in undone.content.decode()
    logged_in.post(JUDGE, {"comparison": first.pk, "answer": "tie"})
    assert Judgment.objects.get().comparison == first  # judged after all


@pytest.mark.django_db
def test_the_progress_line_counts_what_is_left_up_to_a_bound(logged_in, monkeypatch):
    """It is on every judging page: past REMAINING_COUNTED it says "N+" instead of counting on."""
    monkeypatch.setattr("annotate.selectors.REMAINING_COUNTED", 3)
    campaign = CampaignFactory(gold_rate=0)
    for _ in range(5):
        ComparisonFactory(campaign=campaign)
    page = logged_in.get(QUEUE).content.decode()
    assert "Remaining: <strong>3+</strong>" in page
    for _ in range(3):  # three judged: two left, counted exactly
        served = re.search(r'name="comparison" value="(\d+)"', page).group(1)
        logged_in.post(JUDGE, {"comparison": served, "answer": "left"})
        page = logged_in.get(QUEUE).content.decode()
    assert "Remaining: <strong>2</strong>" in page
