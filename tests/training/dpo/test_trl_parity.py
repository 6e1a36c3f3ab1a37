"""One step of our trainer against TRL's DPOTrainer: same tiny model, data and settings."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.training.dpo.conftest import PREFERENCES, write_jsonl
from training.dpo import DPOConfig, train

LR = 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_one_step_matches_trl(loss, plain_model_dir, tmp_path):
    rows = [{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r in PREFERENCES[:4]]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    # A first step from policy == reference has zero rewards; start from a policy that differs, so the
    # comparison sees real numbers: one TRL-independent step of ours moves it first.
    moved = train(
        DPOConfig(
            policy_path=str(plain_model_dir),
            data_path=str(data),
            output_dir=str(tmp_path / "m"),
            lr=1e-2,
            batch_size=4,
            epochs=1,
            seed=0,
        )
    ).final_dir
    # Reference = the original model, policy = the moved one, for both trainers.
    ref_dir = plain_model_dir

    theirs, trl_model = trl_one_step_with_ref(moved, ref_dir, data, tmp_path / "trl", loss)
    ours_seen = []
    result = train(
        DPOConfig(
            policy_path=str(moved),
            ref_path=str(ref_dir),
            data_path=str(data),
            output_dir=str(tmp_path / "ours"),
            loss=loss,
            lr=LR,
            batch_size=4,
            epochs=1,
            seed=0,
        ),
        on_metrics=ours_seen.append,
    )
    ours = ours_seen[0]

    for name in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-4), name
    assert ours["rewards/margins"] != 0
    our_model = AutoModelForCausalLM.from_pretrained(result.final_dir)
    start = AutoModelForCausalLM.from_pretrained(moved)
    assert any(not torch.equal(a, b) for a, b in zip(our_model.parameters(), start.parameters(), strict=True))
    assert_same_weights(our_model, trl_model)


def assert_same_weights(ours, theirs):
    """Adam's first step moves every weight by about LR: both trainers' weights agree to 1% of that."""
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        diff = (a - b.detach()).abs().max().item()
        assert diff <= 0.01 * LR, f"{name}: max abs difference {diff}"


def one_step_settings(out, *, batch_size):
    """TRL's settings for one step as ours takes it: fp32 on the CPU, AdamW without weight decay,
    clipping at 1, a linear schedule without warmup."""
    return {
        "output_dir": str(out),
        "learning_rate": LR,
        "per_device_train_batch_size": batch_size,
        "max_steps": 1,
        "beta": 0.1,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 0,
        "max_length": 1024,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
    }


def trl_one_step_with_ref(policy_dir, ref_dir, data_path, out, loss):
    import datasets
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    args = TRLConfig(**one_step_settings(out, batch_size=4), loss_type=[loss])
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32),
        args=args,
        train_dataset=datasets.load_dataset("json", data_files=str(data_path), split="train"),
        processing_class=AutoTokenizer.from_pretrained(policy_dir),
    )
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "rewards/margins" in entry)
    return logged, trainer.model


def kto_rows():
    """Unpaired rows in TRL's format: each preference's chosen answer desirable, its rejected one not."""
    rows = []
    for p, c, r in PREFERENCES[:4]:
        rows += [
            {"prompt": p, "completion": " " + c, "label": True},
            {"prompt": p, "completion": " " + r, "label": False},
        ]
    return rows


@pytest.mark.slow
def test_one_kto_step_matches_trl(plain_model_dir, tmp_path):
    """KTO (loss, KL reference point, rewards, log-probs, the updated weights) against TRL 1.16's
    KTOTrainer: 8 unpaired answers in one batch, each with the answer before it as its KL partner."""
    import datasets
    from trl import KTOConfig, KTOTrainer

    data = write_jsonl(tmp_path / "kto.jsonl", kto_rows())
    moved = train(
        DPOConfig(
            policy_path=str(plain_model_dir),
            data_path=str(data),
            output_dir=str(tmp_path / "m"),
            loss="sft",
            lr=1e-2,
            batch_size=8,
            epochs=1,
            seed=0,
        )
    ).final_dir  # a policy that differs from the reference, so the step sees non-zero rewards and KL
    args = KTOConfig(**one_step_settings(tmp_path / "trl", batch_size=8))
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(moved, dtype=torch.float32),
        ref_model=AutoModelForCausalLM.from_pretrained(plain_model_dir, dtype=torch.float32),
        args=args,
        train_dataset=datasets.load_dataset("json", data_files=str(data), split="train"),
        processing_class=AutoTokenizer.from_pretrained(moved),
    )
    trainer.train()
    theirs = next(entry for entry in trainer.state.log_history if "rewards/margins" in entry)

    seen = []
    result = train(
        DPOConfig(
            policy_path=str(moved),
            ref_path=str(plain_model_dir),
            data_path=str(data),
            output_dir=str(tmp_path / "ours"),
            loss="kto",
            lr=LR,
            batch_size=8,
            epochs=1,
            seed=0,
        ),
        on_metrics=seen.append,
    )
    ours = seen[0]
    for name in (
        "loss",
        "kl",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-4), name
    assert ours["kl"] > 0 and ours["rewards/margins"] != 0
    assert_same_weights(AutoModelForCausalLM.from_pretrained(result.final_dir), trainer.model)
