import pytest
from django.db import IntegrityError, transaction

from annotate.models import Choice, Comparison, Kind, Strength
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
)


def rejected(**fields):
    """True when creating a Comparison with these fields violates a database rule."""
    fields.setdefault("campaign", CampaignFactory())
    try:
        with transaction.atomic():
            Comparison.objects.create(**fields)
    except IntegrityError:
        return True
    return False


@pytest.fixture
def prompt_with_two_responses(db):
    prompt = PromptFactory()
    return prompt, ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)


def test_comparison_of_a_response_with_itself_is_rejected(prompt_with_two_responses):
    prompt, a, _ = prompt_with_two_responses
    assert rejected(prompt=prompt, response_a=a, response_b=a)


def test_comparison_with_a_response_to_another_prompt_is_rejected(prompt_with_two_responses):
    prompt, a, _ = prompt_with_two_responses
    stranger = ResponseFactory()
    assert rejected(prompt=prompt, response_a=a, response_b=stranger)
    assert rejected(prompt=prompt, response_a=stranger, response_b=a)
    assert not rejected(prompt=prompt, response_a=a, response_b=prompt_with_two_responses[2])


def test_moving_a_comparison_to_another_prompt_is_rejected(prompt_with_two_responses):
    comparison = ComparisonFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.filter(pk=comparison.pk).update(prompt=prompt_with_two_responses[0])


def test_gold_comparison_needs_an_answer_and_only_gold_may_have_one(prompt_with_two_responses):
    prompt, a, b = prompt_with_two_responses
    assert rejected(prompt=prompt, response_a=a, response_b=b, kind=Kind.GOLD)
    assert rejected(prompt=prompt, response_a=a, response_b=b, kind=Kind.TRAIN, gold_answer=Choice.FIRST)
    assert not rejected(prompt=prompt, response_a=a, response_b=b, kind=Kind.GOLD, gold_answer=Choice.SECOND)


def test_overlap_of_zero_is_rejected(prompt_with_two_responses):
    prompt, a, b = prompt_with_two_responses
    assert rejected(prompt=prompt, response_a=a, response_b=b, overlap=0)


@pytest.mark.django_db
def test_second_judgment_by_same_annotator_is_rejected():
    judgment = JudgmentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        JudgmentFactory(comparison=judgment.comparison, annotator=judgment.annotator, choice=Choice.TIE)


@pytest.mark.django_db
def test_strength_on_a_tie_is_rejected_and_allowed_on_a_winner():
    JudgmentFactory(choice=Choice.SECOND, strength=Strength.CLEAR)
    with pytest.raises(IntegrityError), transaction.atomic():
        JudgmentFactory(choice=Choice.TIE, strength=Strength.CLEAR)


@pytest.mark.django_db
def test_unknown_choice_is_rejected_by_the_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        JudgmentFactory(choice="maybe")
