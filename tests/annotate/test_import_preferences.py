import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Choice, Comparison, Judgment, Source
from generation.models import Prompt, Response


def run(*args) -> str:
    out = StringIO()
    call_command("import_preferences", *map(str, args), stdout=out)
    return out.getvalue()


def jsonl(rows) -> str:
    return "\n".join(json.dumps(row) for row in rows) + "\n"


SHAPES = {
    "standard": {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    "preferred": {"prompt": "2+2?", "preferred": "4", "dispreferred": "5"},
    "conversational": {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    },
    "implicit-prompt": {
        "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
        "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}],
    },
}


@pytest.mark.django_db
@pytest.mark.parametrize("shape", SHAPES)
def test_each_preference_shape_becomes_a_comparison_with_an_imported_judgment(shape, write_file):
    out = run(write_file("prefs.jsonl", jsonl([SHAPES[shape]])))

    assert "1 comparisons imported" in out
    comparison = Comparison.objects.get()
    assert comparison.prompt.as_messages() == [{"role": "user", "content": "2+2?"}]
    assert (comparison.response_a.text, comparison.response_b.text) == ("4", "5")
    assert comparison.campaign.name == "imported"
    judgment = Judgment.objects.get()
    assert (judgment.choice, judgment.source, judgment.left) == (Choice.FIRST, Source.IMPORTED, "")
    assert not judgment.annotator.is_active


@pytest.mark.django_db
def test_multi_turn_implicit_prompt_keeps_the_shared_conversation(write_file):
    history = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a fact."},
    ]
    row = {
        "chosen": [*history, {"role": "assistant", "content": "Honey never spoils."}],
        "rejected": [*history, {"role": "assistant", "content": "No."}],
    }
    run(write_file("prefs.jsonl", jsonl([row])))
    assert Prompt.objects.get().messages == history


@pytest.mark.django_db
def test_reimport_skips_pairs_already_there(write_file):
    path = write_file("prefs.jsonl", jsonl(SHAPES.values()))
    run(path, "--overlap", "2")
    assert "0 comparisons imported" in run(path)
    # All four shapes say the same thing: one prompt, two responses, one comparison.
    assert (Prompt.objects.count(), Response.objects.count(), Comparison.objects.count()) == (1, 2, 1)
    assert Comparison.objects.get().overlap == 2


@pytest.mark.django_db
def test_bad_preference_lines_are_all_reported_and_nothing_is_imported(write_file):
    rows = [
        SHAPES["standard"],
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "", "rejected": "x"},
        {"prompt": "q", "rejected": "x"},
        {"prompt": "q", "chosen": "a", "preferred": "b", "rejected": "c"},
        {
            "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}],
        },
        {"prompt": "q", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"},
    ]
    path = write_file("prefs.jsonl", jsonl(rows))

    with pytest.raises(CommandError) as excinfo:
        run(path)

    message = str(excinfo.value)
    assert "6 bad lines, nothing imported" in message
    assert f"{path}:2: 'chosen' and 'rejected' are identical" in message
    assert f"{path}:3: 'chosen' is empty" in message
    assert f"{path}:4: missing field 'chosen' (or 'preferred')" in message
    assert f"{path}:5: give either 'chosen' or 'preferred', not both" in message
    assert f"{path}:6: 'chosen' and 'rejected' must share every message before the last" in message
    assert f"{path}:7: 'chosen' must be one assistant message" in message
    assert (Prompt.objects.count(), Comparison.objects.count(), Judgment.objects.count()) == (0, 0, 0)
