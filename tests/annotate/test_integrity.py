"""Judging integrity: skips, expired leases, overlap under concurrent submits, gold accuracy by the
first answer, and judgments that the admin cannot edit."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotate.errors import AlreadySkipped, CampaignNotOpen, ComparisonFull
from annotate.models import Assignment, Campaign, Choice, Comparison, Judgment, Kind, Side
from annotate.selectors import annotator_gold_accuracy, comparisons_reliability
from annotate.services.judgments import judgment_change, judgment_submit
from annotate.services.queue import assignment_skip, comparison_assign_next
from tests.factories import ComparisonFactory, JudgmentFactory, UserFactory
from training.selectors import annotation_stats


@pytest.mark.django_db
def test_a_skipped_comparison_cannot_then_be_judged(annotator, api):
    comparison = ComparisonFactory()
    comparison_assign_next(annotator=annotator)
    assignment_skip(comparison=comparison, annotator=annotator)
    with pytest.raises(AlreadySkipped):
        judgment_submit(comparison=comparison, annotator=annotator, verdict="left")
    api.force_authenticate(annotator)
    response = api.post("/api/judgments/", {"comparison": comparison.pk, "verdict": "left"}, format="json")
    assert (response.status_code, response.json()["error"]) == (409, "already_skipped")
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_a_judgment_on_an_expired_lease_counts_while_the_comparison_has_room(annotator):
    comparison = ComparisonFactory(overlap=1)
    comparison_assign_next(annotator=annotator)
    Assignment.objects.update(
        served_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
    )
    judgment = judgment_submit(comparison=comparison, annotator=annotator, verdict="tie")
    assert judgment.choice == Choice.TIE
    assert judgment.time_on_task_ms >= 3_600_000  # measured from serving, as it happened


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 2])
def test_concurrent_submits_on_expired_leases_never_exceed_overlap(overlap):
    """Eight annotators were served one comparison in turn (each lease lapsed before the next was
    served) and all submit at once: exactly ``overlap`` judgments are stored, the rest are told the
    comparison is full. The comparison row lock is what holds this on PostgreSQL."""
    comparison = ComparisonFactory(overlap=overlap)
    annotators = [UserFactory() for _ in range(8)]
    for user in annotators:
        assert comparison_assign_next(annotator=user).comparison == comparison
        Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    barrier = threading.Barrier(len(annotators))
    outcomes: list[str] = []
    # Everyone picks the first response (so no split asks for adjudication beyond the overlap).
    verdicts = {a.annotator_id: "left" if a.left == Side.FIRST else "right" for a in Assignment.objects.all()}

    def submit(user):
        try:
            barrier.wait()
            judgment_submit(comparison=comparison, annotator=user, verdict=verdicts[user.pk])
            outcomes.append("stored")
        except ComparisonFull:
            outcomes.append("full")
        except BaseException as exc:  # surfaced below
            outcomes.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(user,)) for user in annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["full"] * (8 - overlap) + ["stored"] * overlap
    assert Judgment.objects.filter(comparison=comparison).count() == overlap


@pytest.mark.django_db
def test_gold_accuracy_counts_the_first_answer_not_a_later_change(annotator):
    gold = ComparisonFactory(kind=Kind.GOLD, gold_answer=Choice.FIRST)
    assignment = comparison_assign_next(annotator=annotator)
    assert assignment.comparison == gold
    wrong = "right" if assignment.left == Side.FIRST else "left"  # the second response
    judgment = judgment_submit(comparison=gold, annotator=annotator, verdict=wrong)
    assert annotator_gold_accuracy(annotator=annotator) == (0, 1)
    right = "left" if wrong == "right" else "right"
    judgment_change(judgment=judgment, annotator=annotator, verdict=right)  # after seeing the feedback
    judgment.refresh_from_db()
    assert (judgment.choice, judgment.first_choice) == (Choice.FIRST, Choice.SECOND)
    assert annotator_gold_accuracy(annotator=annotator) == (0, 1)
    campaigns, people = annotation_stats()
    assert [p.gold_accuracy for p in people] == [0.0]
    assert campaigns[0].gold_accuracy == 0.0


@pytest.mark.django_db
def test_judgments_and_their_revisions_are_read_only_in_the_admin(client, staff):
    judgment = JudgmentFactory(choice=Choice.FIRST)
    client.force_login(staff)
    assert client.get(f"/admin/annotate/judgment/{judgment.pk}/change/").status_code == 200  # viewable
    response = client.post(
        f"/admin/annotate/judgment/{judgment.pk}/change/",
        {"choice": Choice.SECOND, "comparison": judgment.comparison_id, "annotator": judgment.annotator_id},
    )
    assert response.status_code == 403
    assert client.get("/admin/annotate/judgment/add/").status_code == 403
    assert client.post(f"/admin/annotate/judgment/{judgment.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/annotate/judgmentrevision/add/").status_code == 403
    judgment.refresh_from_db()
    assert judgment.choice == Choice.FIRST


@pytest.mark.django_db
def test_a_comparison_counts_its_judgments_and_stops_wanting_them_when_full(annotator, other_annotator):
    from tests.factories import CampaignFactory

    comparison = ComparisonFactory(overlap=2, campaign=CampaignFactory(adjudicate=True, overlap=2))
    served = {}
    for user in (annotator, other_annotator):
        served[user.pk] = comparison_assign_next(annotator=user).left
    # A split (one for each response) asks for one more judgment: the overlap grows, it still wants one.
    judgment_submit(
        comparison=comparison,
        annotator=annotator,
        verdict="left" if served[annotator.pk] == Side.FIRST else "right",
    )
    # The other picks the second response.
    second = "right" if served[other_annotator.pk] == Side.FIRST else "left"
    judgment_submit(comparison=comparison, annotator=other_annotator, verdict=second)
    comparison.refresh_from_db()
    assert (comparison.judgment_count, comparison.overlap, comparison.needs_judgments) == (2, 3, True)
    third = UserFactory()
    left = comparison_assign_next(annotator=third).left
    judgment_submit(comparison=comparison, annotator=third, verdict="left" if left == Side.FIRST else "right")
    comparison.refresh_from_db()
    assert (comparison.judgment_count, comparison.needs_judgments) == (3, False)  # a majority for the first
    assert comparison_assign_next(annotator=UserFactory()) is None


@pytest.mark.django_db
def test_revising_wrong_gold_answers_does_not_raise_reliability():
    reviser, steady, careful = UserFactory(), UserFactory(), UserFactory()
    for _ in range(4):
        gold = ComparisonFactory(kind=Kind.GOLD, gold_answer=Choice.FIRST, overlap=3)
        # both answered wrong at first; the reviser changed it after learning the answer
        JudgmentFactory(comparison=gold, annotator=reviser, choice=Choice.FIRST, first_choice=Choice.SECOND)
        JudgmentFactory(comparison=gold, annotator=steady, choice=Choice.SECOND)
        JudgmentFactory(comparison=gold, annotator=careful, choice=Choice.FIRST)

    _, people = annotation_stats()
    weights = {p.username: p.reliability for p in people}
    fitted = comparisons_reliability(comparisons=Comparison.objects.all()).annotators

    assert weights[reviser.username] == pytest.approx(weights[steady.username])
    assert weights[reviser.username] < weights[careful.username]
    assert fitted[reviser.pk] == pytest.approx(fitted[steady.pk]) and fitted[reviser.pk] < fitted[careful.pk]


@pytest.mark.django_db
def test_a_judgment_in_a_closed_campaign_no_longer_changes(annotator):
    comparison = ComparisonFactory()
    comparison_assign_next(annotator=annotator)
    judgment = judgment_submit(comparison=comparison, annotator=annotator, verdict="left")
    Campaign.objects.filter(pk=comparison.campaign_id).update(status="closed")
    judgment.refresh_from_db()

    with pytest.raises(CampaignNotOpen, match="is closed: its judgments no longer change"):
        judgment_change(judgment=judgment, annotator=annotator, verdict="right")

    judgment.refresh_from_db()
    assert judgment.choice == judgment.left and not judgment.revisions.exists()
