"""Thumbs: a campaign kind whose annotators judge one answer good or bad; imports of thumbs logs; the
unpaired export (KTO) that takes thumbs and pairs together."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotate.models import Choice, Comparison, Judgment, Side, Task
from annotate.selectors import ExportReport, dataset_rows
from annotate.services.judgments import judgment_submit
from annotate.services.queue import comparison_assign_next
from config.errors import Invalid
from generation.backends import Sampling
from tests.factories import CampaignFactory, ComparisonFactory, PolicyFactory, PromptFactory, ResponseFactory
from tests.scripted import ScriptedBackend
from training.answering import comparisons_generate


def thumbs_item(text="Blue.", campaign="thumbs", prompt=None):
    prompt = prompt or PromptFactory(text="Name a colour.")
    return ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text=text),
        response_b=None,
        campaign=CampaignFactory(name=campaign, task=Task.THUMBS),
    )


@pytest.mark.django_db
def test_a_thumbs_campaign_queues_each_distinct_answer_once_and_takes_good_or_bad(annotator):
    campaign = CampaignFactory(name="thumbs", task=Task.THUMBS)
    report = comparisons_generate(
        policy=PolicyFactory(),
        prompts=[PromptFactory()],
        sampling=Sampling(samples=4),
        backend=ScriptedBackend(lambda p: ["a", "b", "a", "c"]),
        campaign=campaign,
    )
    assert report.extra["comparisons"] == 3  # a, b, c: one item each, no pairs
    assert set(Comparison.objects.values_list("response_b", flat=True)) == {None}

    served = comparison_assign_next(annotator=annotator)
    assert served.left == Side.FIRST  # one answer: nothing to randomise
    with pytest.raises(Invalid, match="a thumbs judgment's verdict must be one of good, bad"):
        judgment_submit(comparison=served.comparison, annotator=annotator, verdict="left")
    judgment = judgment_submit(comparison=served.comparison, annotator=annotator, verdict="good")
    assert judgment.choice == Choice.GOOD and judgment.verdict_label == "Good"
    pair = ComparisonFactory(campaign=CampaignFactory(name="pairs"))
    comparison_assign_next(annotator=annotator, campaign=pair.campaign)
    with pytest.raises(Invalid, match="verdict must be one of left, right, tie, both_bad"):
        judgment_submit(comparison=pair, annotator=annotator, verdict="good")


@pytest.mark.django_db
def test_the_judging_page_shows_one_answer_with_good_and_bad_keys(client, annotator):
    item = thumbs_item(text="<b>bold</b> blue")
    client.force_login(annotator)

    page = client.get(reverse("annotate:queue")).content.decode()

    assert 'data-key="1"><kbd>1</kbd> Good' in page and 'data-key="2"><kbd>2</kbd> Bad' in page
    assert "The answer" in page and "Left better" not in page
    assert "Keys: <kbd>1</kbd> good · <kbd>2</kbd> bad" in page and "left better" not in page  # its own keys
    assert 'maxlength="5000"' in page  # the server's rationale cap, not more
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page  # shown as text, never markup
    client.post(reverse("annotate:judge"), {"comparison": item.pk, "answer": "bad"})
    assert Judgment.objects.get().choice == Choice.BAD


@pytest.mark.django_db
def test_thumbs_and_pairs_export_together_as_kto_rows_and_thumbs_stay_out_of_pairs():
    policy = PolicyFactory()
    prompt = PromptFactory(text="Name a colour.")
    up, down = (thumbs_item(text=t, prompt=prompt) for t in ("Blue.", "Colours are nice."))
    for item in (up, down):
        item.response_a.policy = policy
        item.response_a.save()
    pair = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, policy=policy, text="Red."),
        response_b=ResponseFactory(prompt=prompt, policy=policy, text="I like turtles."),
    )
    for comparison, choice in ((up, Choice.GOOD), (down, Choice.BAD), (pair, Choice.FIRST)):
        Judgment.objects.create(comparison=comparison, annotator=_user(), choice=choice)

    kto = list(dataset_rows(report=ExportReport(), dataset_type="unpaired", fmt="standard", policy=policy))
    assert sorted((r["completion"], r["label"]) for r in kto) == [
        ("Blue.", True),
        ("Colours are nice.", False),
        ("I like turtles.", False),
        ("Red.", True),
    ]
    report = ExportReport()
    pairs = list(dataset_rows(report=report, fmt="standard", policy=policy))
    assert [(r["chosen"], r["rejected"]) for r in pairs] == [("Red.", "I like turtles.")]
    assert report.excluded["thumbs (one answer: export --type unpaired)"] == 2
    sft = list(dataset_rows(report=ExportReport(), dataset_type="prompt-completion", fmt="standard"))
    assert sorted(r["completion"] for r in sft) == ["Blue.", "Red."]  # thumbs up and the chosen


def _user():
    from tests.factories import UserFactory

    return UserFactory()


@pytest.mark.django_db
def test_a_thumbs_log_imports_all_or_nothing_with_every_bad_line_named(write_file):
    bad = write_file(
        "thumbs.jsonl",
        "\n".join(
            [
                json.dumps({"prompt": "Name a colour.", "completion": "Blue.", "label": True}),
                json.dumps({"prompt": "Name a colour.", "completion": "Blue!", "label": "maybe"}),
                json.dumps({"prompt": "Name a colour.", "label": False}),
            ]
        ),
    )
    with pytest.raises(CommandError) as failure:
        call_command("import_thumbs", str(bad), stdout=io.StringIO())
    message = str(failure.value)
    assert "2 bad lines, nothing imported" in message
    assert "thumbs.jsonl:2: 'label' must be true or false" in message
    assert "thumbs.jsonl:3: missing field 'completion'" in message
    assert not Comparison.objects.exists()

    good = write_file(
        "good.jsonl",
        "\n".join(
            [
                json.dumps({"prompt": "Name a colour.", "completion": "Blue.", "label": True}),
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": "Name a fruit."}],
                        "completion": [{"role": "assistant", "content": "A chair."}],
                        "label": "bad",
                    }
                ),
            ]
        ),
    )
    out = io.StringIO()
    call_command("import_thumbs", str(good), "--campaign=logs", stdout=out)
    assert "2 thumbs imported into campaign 'logs'" in out.getvalue()
    assert sorted(Judgment.objects.values_list("comparison__response_a__text", "choice")) == [
        ("A chair.", Choice.BAD),
        ("Blue.", Choice.GOOD),
    ]
    assert Comparison.objects.get(response_a__text="Blue.").campaign.task == Task.THUMBS
    call_command("import_thumbs", str(good), "--campaign=logs", stdout=out)
    assert Comparison.objects.count() == 2 and "2 duplicates skipped" in out.getvalue()
    CampaignFactory(name="pairs only")
    with pytest.raises(CommandError, match="thumbs go to a thumbs campaign"):
        call_command("import_thumbs", str(good), "--campaign=pairs only", stdout=out)


@pytest.mark.django_db
def test_a_thumb_is_changed_from_good_to_bad_with_its_previous_answer_kept(client, annotator):
    item = thumbs_item()
    client.force_login(annotator)
    client.get(reverse("annotate:queue"))
    client.post(reverse("annotate:judge"), {"comparison": item.pk, "answer": "good"})
    judgment = Judgment.objects.get()

    page = client.get(reverse("annotate:change", args=[judgment.pk])).content.decode()
    assert 'value="good" data-key="1" checked' in page and 'value="left"' not in page
    client.post(reverse("annotate:change", args=[judgment.pk]), {"answer": "bad"})

    judgment.refresh_from_db()
    assert (judgment.choice, judgment.first_choice) == (Choice.BAD, Choice.GOOD)
    assert judgment.revisions.get().choice == Choice.GOOD


@pytest.mark.django_db
def test_the_judging_pages_notices_name_a_thumbs_item_an_answer_and_a_ranking_a_ranking(client, annotator):
    """The notices after a judgment, a skip and a second answer name what was judged (they said
    "comparison" for every kind)."""
    item, other = thumbs_item(text="Blue."), thumbs_item(text="Red.", prompt=PromptFactory())
    client.force_login(annotator)
    judge, queue = reverse("annotate:judge"), reverse("annotate:queue")
    client.get(queue)
    first = client.post(
        judge, {"comparison": item.pk, "answer": "good"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Recorded on the previous answer: <strong>Good</strong>" in first
    again = client.post(judge, {"comparison": item.pk, "answer": "bad"}, follow=True).content.decode()
    assert "You had already judged that answer:" in again
    skipped = client.post(judge, {"comparison": other.pk, "answer": "skip"}, HTTP_HX_REQUEST="true")
    assert "Skipped the previous answer: it will not be served to you again." in skipped.content.decode()
    ranking = CampaignFactory(name="ranks", task=Task.RANKINGS)
    assert (ranking.item_noun, CampaignFactory(name="pairs").item_noun) == ("ranking", "comparison")
