"""Rankings: a campaign kind that shows three or four answers to order, stored as one judgment and
exported as every pair it implies and as the ranked list."""

import pytest
from django.urls import reverse

from annotate.models import Choice, Comparison, Judgment, Task
from annotate.selectors import ExportReport, dataset_rows, implied_pairs
from annotate.services.judgments import dense_ranks, judgment_submit, ranking_submit
from annotate.services.queue import comparison_assign_next
from config.errors import Invalid
from generation.backends import Sampling
from tests.factories import CampaignFactory, ComparisonFactory, PolicyFactory, PromptFactory, ResponseFactory
from tests.scripted import ScriptedBackend
from training.answering import comparisons_generate


def ranking_item(*texts, overlap=1):
    prompt = PromptFactory(text="Name a colour.")
    answers = [ResponseFactory(prompt=prompt, text=t) for t in texts]
    named = dict(zip(("response_a", "response_b", "response_c", "response_d"), answers, strict=False))
    return ComparisonFactory(
        prompt=prompt, campaign=CampaignFactory(name="rank", task=Task.RANKINGS), overlap=overlap, **named
    )


def test_a_ranking_implies_every_pair_hand_worked():
    assert dense_ranks([3, 1, 3]) == [2, 1, 2]
    # a best, then b and c tied, d last: six pairs, one tie
    assert implied_pairs([1, 2, 2, 4]) == [
        (0, 1, Choice.FIRST),
        (0, 2, Choice.FIRST),
        (0, 3, Choice.FIRST),
        (1, 2, Choice.TIE),
        (1, 3, Choice.FIRST),
        (2, 3, Choice.FIRST),
    ]
    assert len(implied_pairs([1, 2, 3])) == 3


@pytest.mark.django_db
def test_a_rankings_campaign_queues_one_item_per_prompt_of_up_to_four_answers():
    campaign = CampaignFactory(name="rank", task=Task.RANKINGS)
    report = comparisons_generate(
        policy=PolicyFactory(),
        prompts=[PromptFactory(), PromptFactory()],
        sampling=Sampling(samples=5),
        backend=ScriptedBackend(lambda p: ["a", "b", "c", "d", "e"]),
        campaign=campaign,
    )
    assert report.extra["comparisons"] == 2
    item = Comparison.objects.first()
    assert [r.text for r in item.answers] == ["a", "b", "c", "d"] and item.is_ranking
    comparisons_generate(
        policy=PolicyFactory(),
        prompts=[PromptFactory()],
        sampling=Sampling(samples=2),
        backend=ScriptedBackend(lambda p: ["a", "b"]),
        campaign=campaign,
    )
    assert Comparison.objects.count() == 2  # two answers make no ranking


@pytest.mark.django_db
def test_a_ranking_is_stored_in_comparison_order_whatever_order_it_was_shown_in(annotator):
    item = ranking_item("red", "blue", "a chair")
    served = comparison_assign_next(annotator=annotator)
    assert sorted(served.order) == ["a", "b", "c"]
    shown = [item.answers["abc".index(letter)].text for letter in served.order]
    # the annotator ranks what they see: blue best, red next, the chair last
    ranks = [{"blue": 1, "red": 2, "a chair": 3}[text] for text in shown]

    judgment = ranking_submit(comparison=item, annotator=annotator, ranks=ranks)

    assert judgment.ranking == [2, 1, 3] and judgment.choice == Choice.SECOND  # a (red) vs b (blue)
    with pytest.raises(Invalid, match="not a verdict"):
        judgment_submit(comparison=item, annotator=annotator, verdict="left")


@pytest.mark.django_db
def test_a_bad_ranking_is_refused_with_what_a_ranking_needs(annotator):
    item = ranking_item("red", "blue", "green", "a chair")
    comparison_assign_next(annotator=annotator)
    for ranks in ([1, 2, 3], [1, 2, 3, 5], [0, 1, 2, 3]):
        with pytest.raises(
            Invalid, match=r"a ranking gives each of the 4 answers a rank from 1 \(best\) to 4"
        ):
            ranking_submit(comparison=item, annotator=annotator, ranks=ranks)
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_rankings_export_as_the_pairs_they_imply_by_majority_and_as_ranked_lists(annotator, other_annotator):
    item = ranking_item("red", "blue", "green", "a chair", overlap=2)
    for who, by_text in (
        (annotator, {"blue": 1, "red": 2, "green": 2, "a chair": 4}),
        (other_annotator, {"blue": 1, "green": 2, "red": 3, "a chair": 4}),
    ):
        served = comparison_assign_next(annotator=who)
        shown = [item.answers["abcd".index(letter)].text for letter in served.order]
        ranking_submit(comparison=item, annotator=who, ranks=[by_text[t] for t in shown])

    report = ExportReport()
    pairs = {(r["chosen"], r["rejected"]): r for r in dataset_rows(report=report, fmt="standard")}
    # red vs green: one tie, one green > red: no majority; the other five pairs agree
    assert set(pairs) == {
        ("blue", "red"),
        ("red", "a chair"),
        ("blue", "green"),
        ("blue", "a chair"),
        ("green", "a chair"),
    }
    assert report.excluded["no majority (ranking pair)"] == 1 and report.ranking_pairs == 5
    assert pairs[("blue", "red")]["ranking_pair"] == "ab" and pairs[("blue", "red")]["judgments"] == 2
    assert all(r["agreement"] == 1.0 == r["confidence"] for r in pairs.values())

    lists = list(dataset_rows(report=ExportReport(), dataset_type="ranking", fmt="standard"))
    assert [(r["completions"], r["ranks"]) for r in lists] == [
        (["blue", "red", "green", "a chair"], [1, 2, 2, 3]),
        (["blue", "green", "red", "a chair"], [1, 2, 3, 4]),
    ]
    kto = ExportReport()
    assert list(dataset_rows(report=kto, dataset_type="unpaired", fmt="standard")) == []
    assert kto.excluded["ranking pairs (export as preference or ranking)"] == 5


@pytest.mark.django_db
def test_the_judging_page_shows_numbered_answers_and_takes_ranks_without_javascript(client, annotator):
    item = ranking_item("red", "<script>x</script>blue", "green")
    client.force_login(annotator)

    page = client.get(reverse("annotate:queue")).content.decode()
    assert "the answers, best first" in page and "both bad" not in page  # the ranking's keys, not a pair's

    assert page.count('<section class="response" aria-label="Answer') == 3
    assert 'name="rank_3"' in page and "<script>x" not in page
    served = item.assignments.get()
    by_text = {"red": "2", "<script>x</script>blue": "1", "green": "3"}
    shown = [item.answers["abc".index(letter)].text for letter in served.order]
    client.post(
        reverse("annotate:judge"),
        {"comparison": item.pk, **{f"rank_{i + 1}": by_text[t] for i, t in enumerate(shown)}},
    )
    assert Judgment.objects.get().ranking == [2, 1, 3]
    mine = client.get(reverse("annotate:mine")).content.decode()
    n = {text: shown.index(text) + 1 for text in shown}  # each answer's number as this annotator saw it
    blue = n["<script>x</script>blue"]
    assert f"Answer {blue}, then Answer {n['red']}, then Answer {n['green']}" in mine  # shown terms
    assert mine.count("</strong>: ") == 3  # all three answers listed, not two under Left/Right


@pytest.mark.django_db
def test_a_ranking_through_the_api(api, annotator):
    item = ranking_item("red", "blue", "a chair")
    api.force_authenticate(annotator)
    served = api.post("/api/comparisons/next/").json()
    assert served["task"] == "rankings" and sorted(served["answers"]) == ["a chair", "blue", "red"]
    assert served["left"] is None and served["right"] is None  # only the answers, in the order shown
    ranks = [{"blue": 1, "red": 2, "a chair": 3}[text] for text in served["answers"]]

    refused = api.post("/api/judgments/", {"comparison": item.pk, "ranks": [1, 1]}, format="json")
    assert refused.status_code == 400 and "rank from 1 (best) to 3" in refused.json()["detail"]
    created = api.post("/api/judgments/", {"comparison": item.pk, "ranks": ranks}, format="json")
    assert created.status_code == 201 and created.json()["ranking"] == [2, 1, 3]


@pytest.mark.django_db
def test_a_policys_answers_are_queued_again_as_thumbs_and_rankings_without_sampling():
    from io import StringIO

    from django.core.management import call_command

    policy = PolicyFactory(name="smol")
    comparisons_generate(
        policy=policy,
        prompts=[PromptFactory(), PromptFactory()],
        sampling=Sampling(samples=3),
        backend=ScriptedBackend(lambda p: ["a", "b", "c"]),
        campaign=CampaignFactory(name="demo"),
    )
    out = StringIO()
    call_command("queue_answers", "--policy=smol", "--campaign=demo thumbs", "--task=thumbs", stdout=out)
    call_command("queue_answers", "--policy=smol", "--campaign=demo rankings", "--task=rankings", stdout=out)
    call_command("queue_answers", "--policy=smol", "--campaign=demo rankings", "--task=rankings", stdout=out)

    assert Comparison.objects.filter(campaign__name="demo thumbs", response_b__isnull=True).count() == 6
    rankings = Comparison.objects.filter(campaign__name="demo rankings")
    assert rankings.count() == 2 and all(len(c.answers) == 3 for c in rankings)
    assert "6 thumbs items" in out.getvalue() and out.getvalue().rstrip().endswith("campaign 'demo rankings'")
    assert "0 rankings items" in out.getvalue()  # the rerun queued nothing new


@pytest.mark.django_db
def test_a_ranking_is_changed_on_its_page_in_the_order_shown_and_the_old_one_kept(client, annotator):
    item = ranking_item("red", "blue", "a chair")
    served = comparison_assign_next(annotator=annotator)
    shown = [item.answers["abc".index(letter)].text for letter in served.order]
    first = {"red": 1, "blue": 2, "a chair": 3}
    judgment = ranking_submit(comparison=item, annotator=annotator, ranks=[first[t] for t in shown])
    assert judgment.ranking == [1, 2, 3]
    client.force_login(annotator)

    page = client.get(reverse("annotate:change", args=[judgment.pk])).content.decode()
    assert page.count('aria-label="Answer') == 3 and 'name="rank_3"' in page
    for i, text in enumerate(shown, start=1):  # each select holds the answer's rank now, as shown
        assert (
            f'<option value="{first[text]}" selected>'
            in page.split(f'name="rank_{i}"')[1].split("</select>")[0]
        )
    again = {"red": 3, "blue": 1, "a chair": 2}
    response = client.post(
        reverse("annotate:change", args=[judgment.pk]),
        {"next": "queue", **{f"rank_{i}": str(again[t]) for i, t in enumerate(shown, start=1)}},
    )

    assert response.status_code == 302 and response["Location"] == reverse("annotate:queue")
    judgment.refresh_from_db()
    assert judgment.ranking == [3, 1, 2] and judgment.choice == Choice.SECOND  # blue (b) now beats red (a)
    revision = judgment.revisions.get()
    assert revision.ranking == [1, 2, 3] and revision.choice == Choice.FIRST
    bad = client.post(
        reverse("annotate:change", args=[judgment.pk]), {"rank_1": "1", "rank_2": "9", "rank_3": "1"}
    )
    assert bad.status_code == 400 and "a ranking gives each of the 3 answers a rank" in bad.content.decode()
    assert "Review / change" in client.get(reverse("annotate:mine")).content.decode()
