import json

import pytest
from django.core.management import CommandError, call_command

from generation.models import Prompt, Split


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("import_prompts", *map(str, args), stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_jsonl_with_strings_and_messages_imports_and_counts_duplicates(write_file):
    lines = [
        {"prompt": "Why is the sky blue?"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        {"prompt": "Why is the sky blue?"},
        {"prompt": "Tell a joke", "split": "eval", "tags": ["fun"]},
    ]
    path = write_file("p.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")

    out = run(path, "--tag", "batch1")

    assert "4 read, 3 imported, 1 duplicates skipped" in out
    assert Prompt.objects.count() == 3
    joke = Prompt.objects.get(text="Tell a joke")
    assert joke.split == Split.EVAL
    assert sorted(joke.tags.values_list("name", flat=True)) == ["batch1", "fun"]
    chat = Prompt.objects.get(text="")
    assert chat.messages[0] == {"role": "system", "content": "Be brief."}
    assert chat.source == "p.jsonl"


@pytest.mark.django_db
def test_rerun_of_the_same_file_imports_nothing_new(write_file):
    path = write_file("p.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n')
    run(path)
    assert "0 imported, 2 duplicates skipped" in run(path)
    assert Prompt.objects.count() == 2


@pytest.mark.django_db
def test_split_option_applies_to_lines_that_name_none(write_file):
    path = write_file("p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "split": "train"}\n')
    run(path, "--split", "eval")
    assert Prompt.objects.get(text="a").split == Split.EVAL
    assert Prompt.objects.get(text="b").split == Split.TRAIN


@pytest.mark.django_db
def test_file_with_several_bad_lines_imports_nothing_and_names_every_line(write_file):
    Prompt.objects.create(text="already here")
    path = write_file(
        "bad.jsonl",
        "\n".join(
            [
                '{"prompt": "fine"}',
                '{"promt": "typo"}',
                "{not json",
                '{"messages": [{"role": "assistant", "content": "hi"}]}',
                '{"prompt": "fine too"}',
                '{"prompt": "x", "split": "test"}',
                '["a list"]',
                '{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}',
                '{"prompt": "   "}',
            ]
        ),
    )

    with pytest.raises(CommandError) as excinfo:
        run(path)

    message = str(excinfo.value)
    assert "7 bad lines, nothing imported" in message
    for line, reason in [
        (2, "missing field 'prompt'"),
        (3, "not valid JSON"),
        (4, "the last message must have role 'user'"),
        (6, "'split' must be one of train, eval"),
        (7, "expected a JSON object"),
        (8, "give either 'prompt' or 'messages', not both"),
        (9, "'prompt' is blank"),
    ]:
        assert f"{path}:{line}: {reason}" in message
    assert list(Prompt.objects.values_list("text", flat=True)) == ["already here"]


@pytest.mark.django_db
def test_csv_with_a_prompt_column_imports_with_semicolon_tags(write_file):
    path = write_file("p.csv", 'id,prompt,tags\n1,"Hello, world",a;b\n2,"Two\nlines",\n')
    assert "2 read, 2 imported" in run(path)
    assert Prompt.objects.get(text="Two\nlines").tags.count() == 0
    assert sorted(Prompt.objects.get(text="Hello, world").tags.values_list("name", flat=True)) == ["a", "b"]


@pytest.mark.django_db
def test_csv_errors_name_the_line_where_the_row_starts(write_file):
    path = write_file("p.csv", 'prompt,split\n"multi\nline",train\n"",train\nok,nope\n')
    with pytest.raises(CommandError) as excinfo:
        run(path)
    assert f"{path}:4: 'prompt' is empty" in str(excinfo.value)
    assert f"{path}:5: 'split' must be one of" in str(excinfo.value)
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_csv_without_a_prompt_column_is_refused_at_line_1(write_file):
    path = write_file("p.csv", "question\nwhy?\n")
    with pytest.raises(CommandError, match=r"p.csv:1: the CSV header has no 'prompt' column"):
        run(path)


@pytest.mark.django_db
def test_missing_empty_and_non_utf8_files_are_refused(write_file, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run(tmp_path / "absent.jsonl")
    with pytest.raises(
        CommandError, match=r"empty\.jsonl: the file holds no prompts; nothing imported"
    ) as empty:
        run(write_file("empty.jsonl", "\n\n"))
    assert ":0" not in str(empty.value) and "bad line" not in str(empty.value)  # the file, not a line 0
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(CommandError, match=r"latin\.jsonl: not UTF-8"):
        run(latin)
    with pytest.raises(CommandError, match=r"blank\.jsonl:1: 'prompt' is empty"):
        run(write_file("blank.jsonl", '{"prompt": ""}\n'))
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_nul_characters_in_prompts_are_refused_with_their_line(write_file):
    path = write_file("p.jsonl", '{"prompt": "ok"}\n{"prompt": "bad\\u0000"}\n')
    with pytest.raises(CommandError, match=r"p.jsonl:2: 'prompt' contains a NUL character"):
        run(path)
    assert Prompt.objects.count() == 0
