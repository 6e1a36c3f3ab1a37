import pytest
from django.db import IntegrityError, transaction

from annotate.models import Choice, Comparison, Kind, Strength
from tests.db_rules import violates
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
)


def rejected(constraint: str, **fields) -> bool:
    """True when creating a Comparison with these fields breaks the rule ``constraint`` (another
    rule breaking instead fails the test); False when the database takes it."""
    fields.setdefault("campaign", CampaignFactory())
    try:
        with transaction.atomic():
            Comparison.objects.create(**fields)
    except IntegrityError as exc:
        assert constraint in str(exc), f"expected {constraint}, got: {exc}"
        return True
    return False


@pytest.fixture
def prompt_with_two_responses(db):
    prompt = PromptFactory()
    return prompt, ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)


def test_comparison_of_a_response_with_itself_is_rejected(prompt_with_two_responses):
    prompt, a, _ = prompt_with_two_responses
    assert rejected("comparison_distinct_responses", prompt=prompt, response_a=a, response_b=a)


def test_comparison_with_a_response_to_another_prompt_is_rejected(prompt_with_two_responses):
    prompt, a, _ = prompt_with_two_responses
    stranger = ResponseFactory()
    assert rejected("comparison_responses_share_prompt", prompt=prompt, response_a=a, response_b=stranger)
    assert rejected("comparison_responses_share_prompt", prompt=prompt, response_a=stranger, response_b=a)
    assert not rejected(
        "comparison_responses_share_prompt",
        prompt=prompt,
        response_a=a,
        response_b=prompt_with_two_responses[2],
    )


def test_moving_a_comparison_to_another_prompt_is_rejected(prompt_with_two_responses):
    comparison = ComparisonFactory()
    with violates("comparison_responses_share_prompt"):
        Comparison.objects.filter(pk=comparison.pk).update(prompt=prompt_with_two_responses[0])


def test_gold_comparison_needs_an_answer_and_only_gold_may_have_one(prompt_with_two_responses):
    prompt, a, b = prompt_with_two_responses
    assert rejected("comparison_gold_has_answer", prompt=prompt, response_a=a, response_b=b, kind=Kind.GOLD)
    assert rejected(
        "comparison_gold_has_answer",
        prompt=prompt,
        response_a=a,
        response_b=b,
        kind=Kind.TRAIN,
        gold_answer=Choice.FIRST,
    )
    assert not rejected(
        "comparison_gold_has_answer",
        prompt=prompt,
        response_a=a,
        response_b=b,
        kind=Kind.GOLD,
        gold_answer=Choice.SECOND,
    )


def test_overlap_of_zero_is_rejected(prompt_with_two_responses):
    prompt, a, b = prompt_with_two_responses
    assert rejected("comparison_overlap_positive", prompt=prompt, response_a=a, response_b=b, overlap=0)


@pytest.mark.django_db
def test_second_judgment_by_same_annotator_is_rejected():
    judgment = JudgmentFactory()
    with violates("judgment_one_per_annotator"):
        JudgmentFactory(comparison=judgment.comparison, annotator=judgment.annotator, choice=Choice.TIE)


@pytest.mark.django_db
def test_strength_on_a_tie_is_rejected_and_allowed_on_a_winner():
    JudgmentFactory(choice=Choice.SECOND, strength=Strength.CLEAR)
    with violates("judgment_strength_only_for_a_winner"):
        JudgmentFactory(choice=Choice.TIE, strength=Strength.CLEAR)


@pytest.mark.django_db
def test_unknown_choice_is_rejected_by_the_database():
    with violates("judgment_choice_valid"):
        JudgmentFactory(choice="maybe")
