from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from annotate.errors import AlreadyJudged, ComparisonFull, NotServed
from annotate.models import Assignment, Choice, Judgment, Side, Strength
from annotate.selectors import ExportReport, dataset_rows
from annotate.services.judgments import judgment_submit
from annotate.services.queue import comparison_assign_next
from config.errors import Invalid
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)


@pytest.mark.django_db
def test_overlap_1_comparison_is_not_served_to_a_second_annotator_while_leased(annotator, other_annotator):
    only = ComparisonFactory(overlap=1)
    assert comparison_assign_next(annotator=annotator).comparison == only
    assert comparison_assign_next(annotator=other_annotator) is None


@pytest.mark.django_db
def test_overlap_2_comparison_is_served_to_two_annotators_but_not_a_third(annotator, other_annotator):
    both = ComparisonFactory(overlap=2)
    assert comparison_assign_next(annotator=annotator).comparison == both
    assert comparison_assign_next(annotator=other_annotator).comparison == both
    assert comparison_assign_next(annotator=UserFactory()) is None


@pytest.mark.django_db
def test_expired_lease_returns_the_comparison_to_the_pool(annotator, other_annotator):
    comparison = ComparisonFactory(overlap=1)
    comparison_assign_next(annotator=annotator)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert comparison_assign_next(annotator=other_annotator).comparison == comparison


@pytest.mark.django_db
def test_reload_serves_the_same_leased_comparison_and_judged_ones_never_again(annotator):
    first, second = ComparisonFactory(overlap=2), ComparisonFactory(overlap=2)
    served = comparison_assign_next(annotator=annotator)
    assert served.comparison == first
    assert comparison_assign_next(annotator=annotator).pk == served.pk
    judgment_submit(comparison=first, annotator=annotator, verdict="tie")
    assert comparison_assign_next(annotator=annotator).comparison == second
    judgment_submit(comparison=second, annotator=annotator, verdict="both_bad")
    assert comparison_assign_next(annotator=annotator) is None


@pytest.mark.django_db
def test_full_comparison_is_not_served(annotator):
    full = ComparisonFactory(overlap=1)
    JudgmentFactory(comparison=full)
    assert comparison_assign_next(annotator=annotator) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("left", "verdict", "choice"),
    [
        (Side.FIRST, "left", Choice.FIRST),
        (Side.FIRST, "right", Choice.SECOND),
        (Side.SECOND, "left", Choice.SECOND),
        (Side.SECOND, "right", Choice.FIRST),
        (Side.SECOND, "tie", Choice.TIE),
    ],
)
def test_verdict_on_screen_maps_through_the_side_shown_left(annotator, left, verdict, choice):
    comparison = ComparisonFactory()
    comparison_assign_next(annotator=annotator)
    Assignment.objects.update(left=left, served_at=F("served_at") - timedelta(seconds=7))

    judgment = judgment_submit(comparison=comparison, annotator=annotator, verdict=verdict)

    assert (judgment.choice, judgment.left) == (choice, left)
    assert 7000 <= judgment.time_on_task_ms < 60_000


@pytest.mark.django_db
def test_judgment_for_a_comparison_not_served_is_refused(annotator):
    comparison = ComparisonFactory()
    with pytest.raises(NotServed):
        judgment_submit(comparison=comparison, annotator=annotator, verdict="left")
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_double_submit_keeps_one_judgment(annotator):
    comparison = ComparisonFactory(overlap=2)
    comparison_assign_next(annotator=annotator)
    judgment_submit(comparison=comparison, annotator=annotator, verdict="left", strength=Strength.CLEAR)
    with pytest.raises(AlreadyJudged):
        judgment_submit(comparison=comparison, annotator=annotator, verdict="right")
    assert Judgment.objects.get().strength == Strength.CLEAR


@pytest.mark.django_db
def test_judgment_after_lease_expired_and_slot_was_taken_is_refused(annotator, other_annotator):
    comparison = ComparisonFactory(overlap=1)
    comparison_assign_next(annotator=annotator)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    comparison_assign_next(annotator=other_annotator)
    judgment_submit(comparison=comparison, annotator=other_annotator, verdict="left")
    with pytest.raises(ComparisonFull):
        judgment_submit(comparison=comparison, annotator=annotator, verdict="left")
    assert Judgment.objects.count() == 1


@pytest.mark.django_db
def test_strength_on_a_tie_and_unknown_verdicts_are_invalid(annotator):
    comparison = ComparisonFactory()
    comparison_assign_next(annotator=annotator)
    with pytest.raises(Invalid, match="strength applies only"):
        judgment_submit(comparison=comparison, annotator=annotator, verdict="tie", strength=Strength.CLEAR)
    with pytest.raises(Invalid, match="verdict must be one of"):
        judgment_submit(comparison=comparison, annotator=annotator, verdict="first")
    assert not Judgment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("adjudicate", [True, False])
def test_a_split_comparison_is_sent_to_one_more_annotator_when_its_campaign_adjudicates(adjudicate):
    campaign = CampaignFactory(name="adjudicated", overlap=2, adjudicate=adjudicate)
    comparison = ComparisonFactory(campaign=campaign, overlap=2)
    people = [UserFactory(username=f"p{i}") for i in range(3)]
    for person, verdict in zip(people[:2], ["left", "right"], strict=True):
        served = comparison_assign_next(annotator=person)
        # opposite screen verdicts on the same side shown give a split for sure
        side = served.left
        judgment_submit(
            comparison=comparison,
            annotator=person,
            verdict=verdict if side == Side.FIRST else {"left": "right", "right": "left"}[verdict],
        )
    comparison.refresh_from_db()
    assert comparison.overlap == (3 if adjudicate else 2)
    third = comparison_assign_next(annotator=people[2])
    assert (third is not None) == adjudicate
    if adjudicate:
        judgment_submit(comparison=comparison, annotator=people[2], verdict="tie")  # still split: 1-1-1
        comparison.refresh_from_db()
        assert comparison.overlap == 4  # one more, and that is the last (campaign overlap + 2)


@pytest.mark.django_db
def test_an_edit_is_a_response_by_its_annotator_that_beats_both_answers_in_every_export(annotator):

    prompt = PromptFactory(text="Name a colour.")
    comparison = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text="Blue."),
        response_b=ResponseFactory(prompt=prompt, text="A colour."),
    )
    left = comparison_assign_next(annotator=annotator).left
    judgment = judgment_submit(
        comparison=comparison,
        annotator=annotator,
        verdict="right",
        edit="  Blue, like the sky.\r\n",
        edit_of="right",  # the answer shown on the right
    )
    shown_right = comparison.response_b if left == "first" else comparison.response_a
    assert judgment.edit.text == "Blue, like the sky." and judgment.edit.improves == shown_right
    assert judgment.edit.author == annotator and judgment.edit.policy is None

    report = ExportReport()
    pairs = list(dataset_rows(report=report, fmt="standard"))
    # the comparison's own pair, then the edit over each of its two answers
    assert [(r["chosen"], r["rejected"]) for r in pairs if "edit_id" in r] == [
        ("Blue, like the sky.", "Blue."),
        ("Blue, like the sky.", "A colour."),
    ]
    assert len(pairs) == 3 and report.edits == 1 and "with 1 annotators' edits" in report.summary()
    sft = list(dataset_rows(report=ExportReport(), dataset_type="prompt-completion", fmt="standard"))
    assert sorted(r["completion"] for r in sft) == sorted(["Blue, like the sky.", shown_right.text])
    kto = list(dataset_rows(report=ExportReport(), dataset_type="unpaired", fmt="standard"))
    assert [(r["completion"], r["label"]) for r in kto if "edit_id" in r] == [("Blue, like the sky.", True)]
    assert len(kto) == 3  # the edit once, the comparison's chosen and rejected


@pytest.mark.django_db
def test_an_edit_that_repeats_an_answer_is_dropped_and_a_bad_one_refused(
    annotator, other_annotator, settings
):

    comparison = ComparisonFactory(overlap=2)
    comparison_assign_next(annotator=annotator)
    same = judgment_submit(
        comparison=comparison, annotator=annotator, verdict="left", edit=comparison.response_a.text
    )
    assert same.edit is None
    comparison_assign_next(annotator=other_annotator)
    settings.PREFLOOP_MAX_RESPONSE_CHARS = 10
    with pytest.raises(Invalid, match="the edit is 11 characters; the limit is 10"):
        judgment_submit(comparison=comparison, annotator=other_annotator, verdict="left", edit="x" * 11)
    with pytest.raises(Invalid, match="edit_of must be left, right or blank"):
        judgment_submit(
            comparison=comparison, annotator=other_annotator, verdict="left", edit="mine", edit_of="up"
        )
    own = judgment_submit(comparison=comparison, annotator=other_annotator, verdict="tie", edit="mine")
    assert own.edit.text == "mine" and own.edit.improves is None  # written from scratch
