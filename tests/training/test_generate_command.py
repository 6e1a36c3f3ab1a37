"""The generate command on a tiny model (training/management/commands/generate.py)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Comparison
from generation.models import Response, Split
from generation.services import policy_register
from tests.factories import PromptFactory


@pytest.mark.django_db
def test_generate_command_on_a_tiny_model_is_resumable(chat_model_dir):
    policy_register(name="tiny", location=str(chat_model_dir))
    for i in range(3):
        PromptFactory(text=f"name a colour {i}")
    PromptFactory(text="held out", split=Split.EVAL)
    out = StringIO()
    options = [
        "--policy",
        "tiny",
        "--samples",
        "3",
        "--max-new-tokens",
        "5",
        "--campaign",
        "r1",
        "--overlap",
        "2",
        "--temperature",
        "1.0",
        "--pairs",
        "all",
    ]

    call_command("generate", *options, stdout=out)

    assert "3 prompts, 9 responses stored" in out.getvalue()
    assert Comparison.objects.filter(campaign__name="r1", overlap=2).count() >= 3
    assert not Response.objects.filter(prompt__split=Split.EVAL).exists()
    call_command("generate", *options, stdout=out)
    assert "nothing to do" in out.getvalue()
    with pytest.raises(CommandError, match="--samples must be between 2 and 16"):
        call_command("generate", "--policy", "tiny", "--samples", "1")
    with pytest.raises(CommandError, match="no policy named"):
        call_command("generate", "--policy", "ghost")


def test_progress_bounds_the_time_left_from_tokens_while_prompts_finish_a_batch_at_a_time():
    from io import StringIO

    from training.management.commands.generate import Command

    out = StringIO()
    command = Command(stdout=out)
    with command._progress(12, most_tokens=12 * 3 * 320) as progress:  # make demo: 12 prompts, 3 answers
        progress.show(1520, 20.0)  # 0 of 12 prompts done, but 1,520 of at most 11,520 tokens

    assert (
        "generate: 1,520 tokens written of at most 11,520, 0/12 prompts stored (a batch at a time), 20.0 tokens/s, at most 8 min left at this rate"
        in out.getvalue()
    )
