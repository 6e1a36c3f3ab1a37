"""Whom to trust: people and AI judges side by side, with the flags' rules worked by hand."""

import pytest
from django.urls import reverse

from annotate.models import AIVerdict, Side
from annotate.services.ai_judges import judge_register
from tests.factories import ComparisonFactory, JudgmentFactory, PromptFactory, ResponseFactory, UserFactory
from training.trust import trust_rows

NUMBERS = iter(range(10**6))


def long_pair():
    prompt = PromptFactory(
        text=f"{next(NUMBERS)} " + "word " * 200
    )  # ~2,000 characters with the answers: ~80 s to read
    return ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text="alpha " * 70),
        response_b=ResponseFactory(prompt=prompt, text="beta " * 70),
    )


@pytest.mark.django_db
def test_the_flags_name_the_too_fast_the_one_sided_and_those_at_chance():
    careful, hasty, lefty, steady, random_ = (
        UserFactory(username=n) for n in ("careful", "hasty", "lefty", "steady", "random")
    )
    for i in range(20):
        comparison = long_pair()
        shown = Side.FIRST if i % 2 else Side.SECOND  # the first answer on the left half the time
        for who, ms in ((careful, 60_000), (steady, 50_000), (hasty, 2_000)):  # hasty: 2 s on ~80 s of text
            JudgmentFactory(
                comparison=comparison, annotator=who, choice="first", left=shown, time_on_task_ms=ms
            )
        JudgmentFactory(
            comparison=comparison,
            annotator=random_,
            choice="first" if i % 2 else "second",  # against the others' constant majority: kappa 0
            left=Side.FIRST if i % 3 else Side.SECOND,
            time_on_task_ms=40_000,
        )
    other = long_pair()
    for i in range(10):
        lefty_pair = long_pair()
        JudgmentFactory(
            comparison=lefty_pair,
            annotator=lefty,
            choice="first" if i % 2 else "second",
            left=Side.FIRST if i % 2 else Side.SECOND,  # always the left one
            time_on_task_ms=30_000,
        )
    judge = judge_register(name="judge", url="http://127.0.0.1:9", model="m")
    AIVerdict.objects.create(
        judge=judge,
        comparison=other,
        choice="first",
        probability_first=0.5,
        consistent=False,
        readings=[{"probability_shown_first": 1.0}, {"probability_shown_first": 1.0}],
    )

    rows = {row.name: row for row in trust_rows()}

    assert rows["careful"].flags == [] and rows["steady"].flags == []
    assert [f.split(":")[0] for f in rows["hasty"].flags] == ["too fast"]
    assert [f.split(":")[0] for f in rows["lefty"].flags] == ["one side"]
    assert rows["lefty"].flags[0] == "one side: 100% for the left (first)"
    assert rows["random"].kappa == pytest.approx(0.0) and [f.split(":")[0] for f in rows["random"].flags] == [
        "at chance"
    ]
    assert (
        rows["judge"].kind == "AI judge" and rows["judge"].left_share == 1.0 and rows["judge"].judgments == 1
    )
    assert rows["careful"].reliability is not None and rows["judge"].reliability is not None
    assert [n for _, _, n in rows["random"].by_week] == [20]  # this week: 20 compared


@pytest.mark.django_db
def test_the_page_is_staff_only_and_lists_people_and_judges(client, staff, annotator):
    comparison = long_pair()
    JudgmentFactory(comparison=comparison, annotator=annotator, choice="first", left=Side.FIRST)
    client.force_login(annotator)
    assert client.get(reverse("training:trust")).status_code == 403
    client.force_login(staff)
    page = client.get(reverse("training:trust")).content.decode()
    assert "Whom to trust" in page and annotator.username in page
