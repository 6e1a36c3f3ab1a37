import json
import logging
import os
from io import StringIO

import datasets
import pytest
from django.core.management import CommandError, call_command

from annotate.models import Choice, Kind
from generation.models import Split
from tests.factories import CampaignFactory, ComparisonFactory, JudgmentFactory, PromptFactory, UserFactory


def judge(comparison, *choices):
    for choice in choices:
        JudgmentFactory(comparison=comparison, choice=choice)


def export(tmp_path, *args) -> tuple[list[dict], str]:
    path = tmp_path / "prefs.jsonl"
    out = StringIO()
    call_command("export_preferences", "--out", str(path), *args, stdout=out)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows, out.getvalue()


@pytest.fixture
def judged(db):
    """Comparisons covering each aggregation case, keyed by what their votes say."""
    cases = {
        "first wins": (Choice.FIRST,),
        "second wins 2:1": (Choice.SECOND, Choice.SECOND, Choice.FIRST),
        "split vote": (Choice.FIRST, Choice.SECOND),
        "tie": (Choice.TIE,),
        "both bad": (Choice.BOTH_BAD, Choice.BOTH_BAD),
        "unjudged": (),
    }
    comparisons = {}
    for name, choices in cases.items():
        comparisons[name] = ComparisonFactory(prompt=PromptFactory(text=f"Prompt: {name}"), overlap=3)
        judge(comparisons[name], *choices)
    return comparisons


def test_majority_decides_and_exclusions_are_counted(judged, tmp_path):
    rows, out = export(tmp_path)

    by_id = {row["comparison_id"]: row for row in rows}
    assert set(by_id) == {judged["first wins"].pk, judged["second wins 2:1"].pk}
    first = judged["first wins"]
    assert by_id[first.pk]["chosen"] == [{"role": "assistant", "content": first.response_a.text}]
    assert by_id[first.pk]["rejected"] == [{"role": "assistant", "content": first.response_b.text}]
    second = judged["second wins 2:1"]
    assert by_id[second.pk]["chosen"][0]["content"] == second.response_b.text
    assert by_id[second.pk]["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert "2 pairs written" in out
    assert "4 comparisons excluded" in out
    for reason in ("both bad: 1", "no majority: 1", "not judged: 1", "tie: 1"):
        assert reason in out


def test_min_agreement_and_include_ties(judged, tmp_path):
    rows, out = export(tmp_path, "--min-agreement", "0.9")
    assert [row["comparison_id"] for row in rows] == [judged["first wins"].pk]
    assert "agreement below 0.9: 1" in out

    rows, _ = export(tmp_path, "--include-ties")
    outcomes = {row["comparison_id"]: row["outcome"] for row in rows}
    assert outcomes[judged["tie"].pk] == "tie"
    assert outcomes[judged["both bad"].pk] == "both_bad"
    assert outcomes[judged["first wins"].pk] == "preferred"


@pytest.mark.django_db
def test_split_round_and_kind_filters(tmp_path):
    r1 = CampaignFactory(name="r1")
    train = ComparisonFactory(campaign=r1)
    held_out = ComparisonFactory(prompt=PromptFactory(split=Split.EVAL), campaign=r1)
    other_round = ComparisonFactory(campaign=CampaignFactory(name="r2"))
    policy_vs_policy = ComparisonFactory(kind=Kind.EVAL, campaign=r1)
    for comparison in (train, held_out, other_round, policy_vs_policy):
        judge(comparison, Choice.FIRST)

    assert [r["comparison_id"] for r in export(tmp_path, "--campaign", "r1")[0]] == [train.pk]
    assert [r["comparison_id"] for r in export(tmp_path, "--split", "eval")[0]] == [held_out.pk]
    assert {r["comparison_id"] for r in export(tmp_path, "--kind", "eval", "--split", "all")[0]} == {
        policy_vs_policy.pk
    }


@pytest.mark.django_db
def test_conversational_export_round_trips_through_datasets(tmp_path):
    chat = PromptFactory(
        text="",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
    )
    comparison = ComparisonFactory(prompt=chat)
    judge(comparison, Choice.SECOND)
    judge(ComparisonFactory(), Choice.FIRST)
    rows, _ = export(tmp_path)

    dataset = datasets.load_dataset("json", data_files=str(tmp_path / "prefs.jsonl"), split="train")

    assert dataset.num_rows == len(rows) == 2
    assert dataset[0]["comparison_id"] == comparison.pk
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    first = dataset[0]
    assert first["prompt"] == chat.messages
    assert first["chosen"] == [{"role": "assistant", "content": comparison.response_b.text}]
    assert first["rejected"] == [{"role": "assistant", "content": comparison.response_a.text}]
    assert dataset[1]["prompt"][0]["role"] == "user"


@pytest.mark.django_db
def test_standard_export_round_trips_and_excludes_multi_turn_prompts(tmp_path):
    plain = ComparisonFactory(prompt=PromptFactory(text="Say hi"))
    multi = ComparisonFactory(
        prompt=PromptFactory(
            text="",
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Again"},
            ],
        )
    )
    judge(plain, Choice.FIRST)
    judge(multi, Choice.FIRST)

    _, out = export(tmp_path, "--format", "standard")
    dataset = datasets.load_dataset("json", data_files=str(tmp_path / "prefs.jsonl"), split="train")

    assert dataset.num_rows == 1
    assert dataset[0]["prompt"] == "Say hi"
    assert dataset[0]["chosen"] == plain.response_a.text
    assert dataset[0]["rejected"] == plain.response_b.text
    assert "multi-turn prompt (standard format): 1" in out


@pytest.mark.django_db
def test_export_to_stdout(capsys):
    comparison = ComparisonFactory()
    judge(comparison, Choice.FIRST)
    call_command("export_preferences", "--out", "-")
    captured = capsys.readouterr()
    assert json.loads(captured.out)["comparison_id"] == comparison.pk
    assert "1 pairs written" in captured.err


@pytest.mark.django_db
def test_export_into_a_missing_directory_fails_and_writes_nothing(tmp_path):
    with pytest.raises(CommandError, match="no such directory"):
        call_command("export_preferences", "--out", str(tmp_path / "absent" / "x.jsonl"))


@pytest.mark.django_db
def test_simulated_and_imported_judgments_count_as_votes(tmp_path):
    comparison = ComparisonFactory(overlap=2)
    JudgmentFactory(comparison=comparison, annotator=UserFactory(), choice=Choice.SECOND, source="simulated")
    JudgmentFactory(comparison=comparison, annotator=UserFactory(), choice=Choice.SECOND, source="imported")
    rows, _ = export(tmp_path)
    assert rows[0]["judgments"] == 2


def test_unpaired_export_labels_each_answer_and_both_bad_gives_two_undesirable(judged, tmp_path):
    rows, out = export(tmp_path, "--type", "unpaired")

    by_comparison = {}
    for row in rows:
        assert set(row) >= {"prompt", "completion", "label", "comparison_id"}
        by_comparison.setdefault(row["comparison_id"], []).append(
            (row["completion"][0]["content"], row["label"])
        )
    first = judged["first wins"]
    assert by_comparison[first.pk] == [(first.response_a.text, True), (first.response_b.text, False)]
    second = judged["second wins 2:1"]
    assert by_comparison[second.pk] == [(second.response_b.text, True), (second.response_a.text, False)]
    bad = judged["both bad"]
    assert sorted(by_comparison[bad.pk]) == sorted(
        [(bad.response_a.text, False), (bad.response_b.text, False)]
    )
    assert judged["tie"].pk not in by_comparison  # neither answer known good or bad
    assert "6 rows from 3 comparisons" in out and "tie: 1" in out


def test_prompt_completion_export_keeps_the_chosen_answers(judged, tmp_path):
    rows, out = export(tmp_path, "--type", "prompt-completion", "--format", "standard")

    assert {row["comparison_id"]: row["completion"] for row in rows} == {
        judged["first wins"].pk: judged["first wins"].response_a.text,
        judged["second wins 2:1"].pk: judged["second wins 2:1"].response_b.text,
    }
    assert all(isinstance(row["prompt"], str) and "label" not in row for row in rows)
    assert "2 rows from 2 comparisons" in out


def test_the_exports_read_back_as_trl_datasets_and_as_our_trainers_examples(judged, tmp_path):
    from training.dpo.data import examples_read

    for kind, labelled in (("unpaired", True), ("prompt-completion", False)):
        export(tmp_path, "--type", kind)
        path = tmp_path / "prefs.jsonl"
        loaded = datasets.load_dataset("json", data_files=str(path), split="train")
        assert {"prompt", "completion"} <= set(loaded.column_names)
        examples = examples_read(path, labelled=labelled)
        assert len(examples) == len(loaded)


def test_every_export_writes_a_data_card_beside_it_as_a_hugging_face_dataset_readme(judged, tmp_path, caplog):
    import yaml

    judged["first wins"].campaign.guidelines = "Prefer the **shorter** answer."
    judged["first wins"].campaign.save()
    _, out = export(tmp_path)

    card = (tmp_path / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "prefs.jsonl"}]
    assert [f["name"] for f in header["dataset_info"]["features"]][:3] == ["prompt", "chosen", "rejected"]
    assert "splits" not in header["dataset_info"]  # `datasets` wants num_bytes there, and warned without
    assert "2 rows from 2 comparisons" in card
    assert "both bad: 1" in card and "no majority: 1" in card and "not judged: 1" in card and "tie: 1" in card
    assert "the majority vote of each comparison" in card and "human: 9 judgments by 9 annotator(s)" in card
    assert "Krippendorff's alpha (nominal, over the 3 comparisons with several judgments)" in card
    digest = __import__("hashlib").sha256(b"Prefer the **shorter** answer.").hexdigest()
    assert digest in card and "> Prefer the **shorter** answer." in card
    assert "the data card" in out
    datasets.utils.logging.enable_propagation()  # its warnings reach caplog
    try:
        loaded = datasets.load_dataset(str(tmp_path), split="train")  # the folder reads as a dataset
    finally:
        datasets.utils.logging.disable_propagation()
    assert len(loaded) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "datasets" in r.name]
    assert oct(os.stat(tmp_path / "prefs.jsonl").st_mode & 0o777) == oct(0o666 & ~current_umask())  # not 0600


def test_a_readme_that_prefloop_did_not_write_is_left_alone(judged, tmp_path):
    (tmp_path / "README.md").write_text("my notes\n")
    export(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my notes\n"
    assert "prefloop data card" in (tmp_path / "prefs.jsonl.README.md").read_text()


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
