import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Choice, Judgment, Source
from annotate.oracles import (
    key_noun,
    oracle_resolve,
    prefers_key_noun,
    prefers_no_bullets,
    prefers_on_topic_shorter,
    prefers_shorter,
)
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory


def always_second(prompt, first, second):
    return "second"


def test_named_oracles_by_hand():
    assert prefers_shorter("q", "short", "much longer") == "first"
    assert prefers_shorter("q", "same", "same") == "tie"
    assert prefers_no_bullets("q", "- one\n- two", "one and two, said plainly") == "second"
    assert prefers_no_bullets("q", "1. a", "2) b") == "tie"  # both listed: the shorter, here equal
    assert key_noun("Explain what a hash table is in two sentences.") == "table"
    assert (
        prefers_key_noun("Explain what a hash table is.", "It maps keys.", "A table of buckets.") == "second"
    )
    assert (
        prefers_on_topic_shorter("Explain what a hash table is.", "Keys.", "A hash table maps keys.")
        == "second"
    )
    assert (
        prefers_on_topic_shorter("Explain what a hash table is.", "A table.", "A long table here.") == "first"
    )
    assert key_noun("Why does DNA matter?") == "dna"  # an acronym; "matter" is the asking
    assert key_noun("Describe the moon's phases in a few words.") == "phases"
    assert oracle_resolve("shorter") is prefers_shorter
    assert oracle_resolve("tests.annotate.test_simulation.always_second") is always_second
    with pytest.raises(ValueError, match="unknown oracle"):
        oracle_resolve("longest")


def test_the_key_word_of_every_bundled_loop_prompt_is_its_topic_not_the_asking():
    """The loop prompts ask about 40 topics six ways ("Describe X in a few words.", "Explain X to a
    ten-year-old.", ...): each topic's six prompts share one key word, and it is a word of the topic."""
    path = Path(__file__).resolve().parents[2] / "training/demo/loop_prompts.jsonl"
    prompts = [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines()]
    topics = [p.removeprefix("What is ").removesuffix("?") for p in prompts if p.startswith("What is ")]
    assert len(topics) == 40
    for topic in topics:
        asked = [p for p in prompts if topic in p]
        assert len(asked) == 6, topic
        keys = {key_noun(p) for p in asked}
        assert len(keys) == 1 and keys.pop() in topic.lower().replace("'s", ""), (topic, keys)


def comparison(first, second, overlap=1):
    prompt = PromptFactory()
    return ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text=first),
        response_b=ResponseFactory(prompt=prompt, text=second),
        overlap=overlap,
    )


@pytest.mark.django_db
def test_simulated_annotators_judge_by_the_oracle_within_overlap():
    short_first = comparison("ok", "a much longer answer", overlap=2)
    short_second = comparison("a much longer answer", "ok")
    out = StringIO()

    call_command("simulate_annotators", "--oracle", "shorter", "--count", "10", stdout=out)

    assert "3 comparisons judged" in out.getvalue()  # overlap 2 + overlap 1
    judgments = Judgment.objects.all()
    assert {j.source for j in judgments} == {Source.SIMULATED}
    assert {j.choice for j in judgments.filter(comparison=short_first)} == {Choice.FIRST}
    assert judgments.get(comparison=short_second).choice == Choice.SECOND
    assert all(
        j.annotator.username.startswith("sim:shorter:") and not j.annotator.is_active for j in judgments
    )
    call_command("simulate_annotators", "--oracle", "shorter", "--count", "10", stdout=out)
    assert Judgment.objects.count() == 3  # nothing left to judge


@pytest.mark.django_db
def test_noise_and_custom_oracles_and_errors():
    for _ in range(40):
        comparison("a", "bb")
    out = StringIO()
    call_command(
        "simulate_annotators",
        "--oracle",
        "tests.annotate.test_simulation.always_second",
        "--count",
        "20",
        "--noise",
        "0.5",
        stdout=out,
    )
    choices = list(Judgment.objects.values_list("choice", flat=True))
    assert len(choices) == 20
    assert 0 < choices.count("second") < 20  # noise replaced some verdicts
    with pytest.raises(CommandError, match="unknown oracle"):
        call_command("simulate_annotators", "--oracle", "loudest", "--count", "1")
    with pytest.raises(CommandError, match="noise must be between 0 and 1"):
        call_command("simulate_annotators", "--oracle", "shorter", "--count", "1", "--noise", "2")


@pytest.mark.django_db
def test_judges_of_different_reliability_reverse_their_share_of_verdicts():
    comparisons = [comparison("ok", "a much longer answer", overlap=2) for _ in range(6)]
    out = StringIO()

    call_command("simulate_annotators", "--oracle=shorter", "--count=100", "--flips=0,1", stdout=out)

    # two judges take turns over every comparison: the careful one says first, the other reverses it
    careful, careless = (f"sim:shorter:{i}" for i in (1, 2))
    for c in comparisons:
        verdicts = dict(c.judgments.values_list("annotator__username", "choice"))
        assert verdicts == {careful: Choice.FIRST, careless: Choice.SECOND}
    assert "12 comparisons judged" in out.getvalue() and "6 reversed" in out.getvalue()
    tie = comparison("same", "same")
    call_command("simulate_annotators", "--oracle=shorter", "--count=10", "--flips=1", stdout=StringIO())
    assert tie.judgments.get().choice == Choice.TIE  # a tie is not decisive: nothing to reverse


def test_flip_rates_are_parsed_with_an_error_naming_the_bad_one():
    from annotate.services.simulation import flips_parse
    from config.errors import Invalid

    assert flips_parse("0, 0,0.35") == (0.0, 0.0, 0.35) and flips_parse("") == ()
    with pytest.raises(Invalid, match="flip rate 2 is not a number"):
        flips_parse("0,lots")
    with pytest.raises(Invalid, match="flip rate 1 must be between 0 and 1"):
        flips_parse("1.5")
