"""python -m training.dpo --data pairs.jsonl --model DIR --out DIR [options]

Also runs under ``torchrun --nproc_per_node=N -m training.dpo ...`` (one process per GPU), each with a
whole model (``--sharding ddp``) or a shard of it (``--sharding fsdp``).

Every option is a ``DPOConfig`` field, with its type and default read from the dataclass: a default
is stated once, there.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from typing import Any

from config.invalid_input import InvalidInput
from training.dpo.config import DTYPES, LOSSES, SHARDING, DPOConfig
from training.dpo.loop import train

# Fields whose option is not the field's name with dashes (paths read better short).
FLAGS = {
    "policy_path": "--model",
    "data_path": "--data",
    "output_dir": "--out",
    "ref_path": "--ref",
    "eval_data_path": "--eval-data",
    "kl_prompts_path": "--kl-prompts",
}
CHOICES = {"loss": LOSSES, "sharding": SHARDING, "dtype": DTYPES}
HELP = {
    "data_path": "preference JSONL (conversational or standard); kto: unpaired prompt/completion/label "
    "rows or pairs; sft: prompt/completion rows, messages, or pairs (their chosen answers)",
    "policy_path": "starting model directory (Hugging Face format)",
    "output_dir": "output directory (metrics, checkpoints, final/)",
    "ref_path": "reference model directory (default: the starting model)",
    "eval_data_path": "held-out pairs: preference accuracy before and after",
    "label_smoothing": "robust loss: share of flipped labels",
    "confidence_smoothing": "robust loss: each pair's label smoothing is 1 - its 'confidence' "
    "(export_preferences writes it)",
    "desirable_weight": "kto: weight of desirable answers",
    "undesirable_weight": "kto: weight of undesirable answers",
    "rpo_alpha": "weight of the chosen answer's NLL (RPO)",
    "lr": "default 5e-7 (full) / 5e-5 (LoRA)",
    "max_steps": "stop after N optimizer steps (0: all epochs)",
    "save_steps": "checkpoint every N steps (0: each epoch)",
    "lora_r": "LoRA rank (0: full fine-tuning)",
    "lora_alpha": "default 2 x rank",
    "merge": "with LoRA: also write the merged model",
    "resume": "continue from the last complete checkpoint",
    "padding_free": "pad each batch's rows instead of packing them into one",
    "share_prompt": "packed: lay each pair's prompt down twice (once per response) instead of once",
    "gradient_checkpointing": "recompute activations in the backward: less memory, more time",
    "sharding": "under torchrun: ddp or fsdp",
    "compile": "torch.compile each decoder layer",
    "kl_every": "every N steps estimate KL(policy ‖ reference) per token on answers to --kl-prompts and "
    "stop past --kl-budget, keeping the last checkpoint within it (0: never)",
    "kl_budget": "nats per token",
    "kl_prompts_path": 'held-out prompts, JSONL {"prompt": text or messages}',
}
TYPES: dict[str, Any] = {"str": str, "int": int, "float": float}


def _option(parser: argparse.ArgumentParser, name: str, annotation: str, default: Any) -> None:
    """One ``DPOConfig`` field as an option: required without a default; a bool that defaults to
    False is a switch (``--merge``), one that defaults to True a ``--no-`` switch."""
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    help_text = HELP.get(name, "")
    if annotation == "bool":
        if default:
            flag = "--no-" + flag[2:]
        parser.add_argument(
            flag, dest=name, action="store_false" if default else "store_true", help=help_text
        )
        return
    kind = TYPES[annotation.removesuffix(" | None")]
    if default is MISSING:
        parser.add_argument(flag, dest=name, type=kind, required=True, help=help_text)
        return
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument(
        flag, dest=name, type=kind, default=default, choices=CHOICES.get(name), help=help_text + shown
    )


def parse(argv: list[str] | None = None) -> DPOConfig:
    parser = argparse.ArgumentParser(prog="python -m training.dpo", description=__doc__.splitlines()[0])
    for field in fields(DPOConfig):
        _option(parser, field.name, str(field.type), field.default)
    values = vars(parser.parse_args(argv))
    try:
        return DPOConfig(**values)
    except InvalidInput as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def _distributed_end() -> None:
    """Under torchrun, end the process group before the interpreter does: left to exit, gloo's threads
    are destroyed still joinable and a rank can abort ("terminate called without an active
    exception", SIGABRT) after its work is done, failing the whole run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    try:
        result = train(cfg)
    except InvalidInput as exc:  # bad data or settings, named in the message
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _distributed_end()
    summary = {"final": str(result.final_dir), "steps": result.steps, **result.last_metrics}
    if result.merged_dir:
        summary["merged"] = str(result.merged_dir)
    if result.kl_stop:
        summary["kl_stop"] = result.kl_stop
    if result.eval_before:
        summary["eval_before"], summary["eval_after"] = result.eval_before, result.eval_after
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
