import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.dpo import DPOConfig, train
from training.dpo import loop as loop_module
from training.dpo.__main__ import main

TRL_METRICS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "grad_norm",
    "learning_rate",
    "tokens/s",
}


def config(model_dir, data, out, **overrides):
    settings = {"lr": 1e-2, "epochs": 3, "batch_size": 4, "seed": 0} | overrides
    return DPOConfig(policy_path=str(model_dir), data_path=str(data), output_dir=str(out), **settings)


def metrics_lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_raise_the_margins_and_stream_trl_named_metrics(
    chat_model_dir, conversational_pairs, tmp_path
):
    seen = []
    out = tmp_path / "run"

    result = train(
        config(chat_model_dir, conversational_pairs, out, eval_data_path=str(conversational_pairs)),
        on_metrics=seen.append,
    )

    assert result.steps == 6 == len(seen)
    assert TRL_METRICS <= set(seen[0])
    assert seen[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # step 1: policy == reference
    assert seen[0]["loss"] == pytest.approx(0.693147, abs=1e-4)
    assert seen[-1]["rewards/margins"] > 0.5
    assert seen[-1]["rewards/accuracies"] == 1.0
    assert metrics_lines(out)[:6] == [json.loads(json.dumps(m)) for m in seen]
    assert result.eval_before["eval/preference_accuracy"] == 0.5
    assert result.eval_after["eval/preference_accuracy"] > 0.5


def test_final_checkpoint_is_complete_loadable_and_no_temporary_directory_remains(
    plain_model_dir, standard_pairs, tmp_path
):
    out = tmp_path / "run"
    result = train(config(plain_model_dir, standard_pairs, out, epochs=1))

    reloaded = AutoModelForCausalLM.from_pretrained(result.final_dir)
    assert (result.final_dir / "model.safetensors").is_file()
    assert (result.final_dir / "tokenizer.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    start = AutoModelForCausalLM.from_pretrained(plain_model_dir)
    changed = any(
        not torch.equal(a, b) for a, b in zip(reloaded.parameters(), start.parameters(), strict=True)
    )
    assert changed


def test_crash_mid_checkpoint_leaves_no_half_checkpoint(
    plain_model_dir, standard_pairs, tmp_path, monkeypatch
):
    from training.dpo import checkpoint

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        train(config(plain_model_dir, standard_pairs, tmp_path / "run", epochs=1))
    assert not list((tmp_path / "run").glob("*checkpoint*"))


def test_resume_continues_from_the_last_complete_checkpoint(plain_model_dir, standard_pairs, tmp_path):
    out = tmp_path / "run"
    train(config(plain_model_dir, standard_pairs, tmp_path / "straight", epochs=2))

    def crash_at_step_3(metrics):
        if metrics["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            config(plain_model_dir, standard_pairs, out, epochs=2, save_steps=1), on_metrics=crash_at_step_3
        )
    assert [m["step"] for m in metrics_lines(out)] == [1, 2, 3]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]

    resumed = train(config(plain_model_dir, standard_pairs, out, epochs=2, save_steps=1, resume=True))

    assert [m["step"] for m in metrics_lines(out)] == [1, 2, 3, 4]
    assert resumed.steps == 4
    straight = metrics_lines(tmp_path / "straight")
    for step in (2, 3):
        assert metrics_lines(out)[step]["loss"] == pytest.approx(straight[step]["loss"], abs=1e-5)


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_reference_free_losses_compute_no_reference(
    loss, chat_model_dir, conversational_pairs, tmp_path, monkeypatch
):
    def forbidden(*args, **kwargs):
        raise AssertionError("a reference-free loss computed reference log-probs")

    monkeypatch.setattr(loop_module, "reference_logps", forbidden)
    beta = 2.0 if loss == "simpo" else 0.1
    result = train(
        config(chat_model_dir, conversational_pairs, tmp_path / "run", loss=loss, beta=beta, epochs=2)
    )
    assert result.steps == 4
    assert not list((tmp_path / "run").glob("ref_logps*"))


@pytest.mark.parametrize("loss", ["ipo", "hinge", "robust", "dpop"])
def test_every_reference_loss_trains(loss, plain_model_dir, standard_pairs, tmp_path):
    extra = {"label_smoothing": 0.1} if loss == "robust" else {}
    seen = []
    train(
        config(plain_model_dir, standard_pairs, tmp_path / "run", loss=loss, **extra), on_metrics=seen.append
    )
    assert seen[-1]["rewards/margins"] > seen[0]["rewards/margins"]


def test_lora_uses_the_base_as_reference_and_writes_adapter_and_merged_model(
    chat_model_dir, conversational_pairs, tmp_path, monkeypatch
):
    loads = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    seen = []
    result = train(
        config(chat_model_dir, conversational_pairs, tmp_path / "run", lora_r=4, merge=True, lr=5e-2),
        on_metrics=seen.append,
    )
    assert len(loads) == 1  # the base only: no second copy for the reference
    assert seen[-1]["rewards/margins"] > 0
    assert (result.final_dir / "adapter_config.json").is_file()
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    monkeypatch.undo()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert merged.config.vocab_size > 0


def test_bad_data_fails_before_any_model_is_loaded(chat_model_dir, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "a"}\n')
    monkeypatch.setattr(
        loop_module, "model_load", lambda *a, **k: pytest.fail("model loaded before validation")
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field 'rejected'"):
        train(config(chat_model_dir, bad, tmp_path / "run"))


def test_command_line_trains_and_prints_a_summary(plain_model_dir, standard_pairs, tmp_path, capsys):
    code = main(
        [
            "--data",
            str(standard_pairs),
            "--model",
            str(plain_model_dir),
            "--out",
            str(tmp_path / "run"),
            "--lr",
            "1e-2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--loss",
            "hinge",
            "--dtype",
            "fp32",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 1 and summary["final"].endswith("final")


def test_command_line_reports_bad_settings(standard_pairs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "--data",
                str(standard_pairs),
                "--model",
                "m",
                "--out",
                str(tmp_path),
                "--label-smoothing",
                "0.2",
            ]
        )
    assert "label_smoothing applies to the 'robust' loss only" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_one_model(plain_model_dir, standard_pairs, tmp_path):
    """DistributedDataParallel on the CPU (gloo): two ranks, one shard each; rank 0 writes. The
    held-out KL checks sample on both ranks and agree on one estimate."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say hello {i}"}) + "\n" for i in range(6)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",  # a free port of its own: runs side by side do not clash
        "-m",
        "training.dpo",
        "--data",
        str(standard_pairs),
        "--model",
        str(plain_model_dir),
        "--out",
        str(out),
        "--lr",
        "1e-2",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--dtype",
        "fp32",
        "--kl-every",
        "2",
        "--kl-budget",
        "100",
        "--kl-prompts",
        str(prompts),
        "--kl-max-new-tokens",
        "4",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [m["step"] for m in metrics_lines(out)]
    assert steps == [1, 2, 3, 4]  # 8 pairs / 2 ranks / 2 per batch = 2 steps per epoch, logged once
    assert [m["step"] for m in metrics_lines(out) if "eval/kl" in m] == [2, 4]
    assert sorted(p.name for p in out.glob("ref_logps.rank*.pt")) == [
        "ref_logps.rank0.pt",
        "ref_logps.rank1.pt",
    ]
    trained = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    start = AutoModelForCausalLM.from_pretrained(plain_model_dir).state_dict()
    assert trained.keys() == start.keys()  # the whole model, written once by rank 0
    assert all(torch.isfinite(value).all() for value in trained.values())
    assert any(not torch.equal(trained[name], start[name]) for name in start)  # the steps moved it


def test_rpo_adds_the_chosen_answers_per_token_nll_to_the_loss(plain_model_dir, standard_pairs, tmp_path):
    plain, anchored = [], []
    train(
        config(plain_model_dir, standard_pairs, tmp_path / "dpo", epochs=1, max_steps=1),
        on_metrics=plain.append,
    )
    train(
        config(plain_model_dir, standard_pairs, tmp_path / "rpo", epochs=1, max_steps=1, rpo_alpha=0.5),
        on_metrics=anchored.append,
    )
    # Step 1: policy == reference, so the DPO part is log 2 in both; RPO adds alpha x the NLL.
    assert plain[0]["nll_loss"] == pytest.approx(anchored[0]["nll_loss"])
    assert anchored[0]["loss"] == pytest.approx(plain[0]["loss"] + 0.5 * anchored[0]["nll_loss"], abs=1e-5)
    assert plain[0]["loss"] == pytest.approx(0.693147, abs=1e-4)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "robust", "dpop", "simpo", "orpo"])
def test_packed_rows_and_pairs_train_as_the_padded_path_does_for_every_loss(
    loss, plain_model_dir, standard_pairs, tmp_path
):
    extra = {"label_smoothing": 0.1} if loss == "robust" else {}
    extra |= {"beta": 2.0} if loss == "simpo" else {}
    runs = {}
    for layout, padding_free, share in (
        ("padded", False, False),
        ("packed", True, False),
        ("pairs", True, True),
    ):
        seen = []
        train(
            config(
                plain_model_dir,
                standard_pairs,
                tmp_path / layout,
                loss=loss,
                epochs=2,
                rpo_alpha=0.5,
                padding_free=padding_free,
                share_prompt=share,
                **extra,
            ),
            on_metrics=seen.append,
        )
        runs[layout] = seen
    assert len(runs["padded"]) == len(runs["packed"]) == len(runs["pairs"]) == 4
    for packed, padded in [
        *zip(runs["packed"], runs["padded"], strict=True),
        *zip(runs["pairs"], runs["padded"], strict=True),
    ]:
        for name in (
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "logps/chosen",
            "nll_loss",
        ):
            assert packed[name] == pytest.approx(padded[name], abs=1e-4), (packed["step"], name)
        assert packed["rewards/accuracies"] == padded["rewards/accuracies"]


def test_gradient_checkpointing_changes_memory_not_the_numbers(plain_model_dir, standard_pairs, tmp_path):
    runs = []
    for checkpointing in (False, True):
        seen = []
        train(
            config(
                plain_model_dir,
                standard_pairs,
                tmp_path / str(checkpointing),
                gradient_checkpointing=checkpointing,
            ),
            on_metrics=seen.append,
        )
        runs.append(seen)
    for plain, recomputed in zip(*runs, strict=True):
        assert recomputed["loss"] == pytest.approx(plain["loss"], abs=1e-5)
        assert recomputed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)


@pytest.mark.slow
def test_fsdp_with_two_processes_matches_one_process(plain_model_dir, standard_pairs, tmp_path):
    """FSDP on the CPU (gloo), one pair per rank per step, against one process taking both pairs per
    step: the same global batch, so the same losses and the same final weights, written whole (Hugging
    Face safetensors) by rank 0."""
    import os
    import subprocess
    import sys

    two = tmp_path / "two.jsonl"
    two.write_text("".join(standard_pairs.read_text().splitlines(keepends=True)[:2]))
    common = [
        "--data",
        str(two),
        "--model",
        str(plain_model_dir),
        "--lr",
        "1e-2",
        "--epochs",
        "3",
        "--dtype",
        "fp32",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fsdp = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "training.dpo",
    ]
    done = subprocess.run(
        [*fsdp, *common, "--out", str(tmp_path / "fsdp"), "--batch-size", "1", "--sharding", "fsdp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*common, "--out", str(tmp_path / "one"), "--batch-size", "2"]) == 0

    sharded, single = metrics_lines(tmp_path / "fsdp"), metrics_lines(tmp_path / "one")
    assert [m["step"] for m in sharded] == [1, 2, 3]
    for a, b in zip(sharded, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert sharded[-1]["loss"] < sharded[0]["loss"]
    gathered = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "final")
    alone = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "final")
    for (name, a), (_, b) in zip(gathered.state_dict().items(), alone.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert (tmp_path / "fsdp" / "final" / "model.safetensors").is_file()
    assert not [p for p in (tmp_path / "fsdp").iterdir() if p.name.startswith(".")]


def test_sft_loss_is_the_mean_nll_of_the_completion_tokens_alone(plain_model_dir, tmp_path):
    from tests.training.dpo.conftest import PREFERENCES, write_jsonl
    from training.dpo.data import batch_collate, examples_read, examples_tokenize
    from training.dpo.logps import sequence_logps_full_logits

    rows = [{"prompt": p, "completion": " " + c} for p, c, _ in PREFERENCES[:4]]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    seen = []
    train(config(plain_model_dir, data, tmp_path / "sft", loss="sft", epochs=3), on_metrics=seen.append)

    tokenizer = AutoTokenizer.from_pretrained(plain_model_dir)
    tokenized = examples_tokenize(
        tokenizer, examples_read(data, labelled=False), max_length=1024, max_prompt_length=None
    )
    batch = batch_collate(list(enumerate(tokenized)), pad_id=tokenizer.pad_token_id, sides=("chosen_ids",))
    with torch.no_grad():
        logps, tokens = sequence_logps_full_logits(
            AutoModelForCausalLM.from_pretrained(plain_model_dir), batch
        )
    assert seen[0]["loss"] == pytest.approx((-logps.sum() / tokens.sum()).item(), abs=1e-4)
    assert seen[0]["num_tokens"] == tokens.sum().item() == sum(len(t.chosen_ids) for t in tokenized)
    assert seen[-1]["loss"] < seen[0]["loss"]


def test_kto_reads_pairs_as_a_desirable_and_an_undesirable_answer(plain_model_dir, standard_pairs, tmp_path):
    seen = []
    train(
        config(plain_model_dir, standard_pairs, tmp_path / "kto", loss="kto", epochs=3),
        on_metrics=seen.append,
    )
    assert len(seen) == 12  # 8 pairs -> 16 answers, batches of 4, 3 epochs
    assert seen[0]["loss"] == pytest.approx(0.5, abs=1e-6)  # policy == reference: 1 - σ(0)
    assert seen[-1]["rewards/margins"] > seen[0]["rewards/margins"]


def test_bad_unpaired_lines_are_all_named_before_a_model_loads(plain_model_dir, tmp_path):
    from tests.training.dpo.conftest import write_jsonl

    data = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "hi", "completion": "yes", "label": "good"},
            {"prompt": "hi"},
            {"prompt": "hi", "completion": ""},
        ],
    )
    with pytest.raises(ValueError) as raised:
        train(config(plain_model_dir, data, tmp_path / "out", loss="kto"))
    message = str(raised.value)
    assert f"{data}:1: 'label' must be true (desirable) or false (undesirable)" in message
    assert f"{data}:2: missing field 'completion'" in message
    assert f"{data}:3: 'completion' is empty" in message
    assert not (tmp_path / "out").exists()


def test_kto_needs_two_answers_per_batch_and_no_rpo():
    with pytest.raises(ValueError, match="kto needs batch_size >= 2"):
        DPOConfig(policy_path="m", data_path="d", output_dir="o", loss="kto", batch_size=1)
    with pytest.raises(ValueError, match="rpo_alpha applies to pair losses, not sft"):
        DPOConfig(policy_path="m", data_path="d", output_dir="o", loss="sft", rpo_alpha=1.0)


def test_confidence_smoothing_gives_each_pair_one_minus_its_confidence(
    plain_model_dir, tmp_path, monkeypatch
):
    from tests.training.dpo.conftest import PREFERENCES, write_jsonl

    confidences = [1.0, 0.8, 0.6, 0.2]  # the last, below one half, is capped at 0.49
    rows = [
        {"prompt": p, "chosen": c, "rejected": r, "confidence": q}
        for (p, c, r), q in zip(PREFERENCES[:4], confidences, strict=True)
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    seen = []
    from training.dpo import losses

    original = losses.dpo_robust

    def spy(**kwargs):
        seen.append(kwargs["label_smoothing"].tolist())
        return original(**kwargs)

    monkeypatch.setattr(losses, "dpo_robust", spy)
    train(config(plain_model_dir, data, tmp_path / "out", loss="robust", confidence_smoothing=True, epochs=1))
    assert sorted(seen[0]) == pytest.approx(sorted([0.0, 0.2, 0.4, 0.49]), abs=1e-6)


def test_a_confidence_outside_0_1_is_named(plain_model_dir, tmp_path):
    from tests.training.dpo.conftest import write_jsonl

    data = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "hi", "chosen": "a", "rejected": "b", "confidence": 1.5}]
    )
    with pytest.raises(ValueError, match=r"pairs.jsonl:1: 'confidence' must be a number between 0 and 1"):
        train(config(plain_model_dir, data, tmp_path / "out", loss="robust", confidence_smoothing=True))
