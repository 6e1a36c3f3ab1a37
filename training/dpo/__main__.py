"""python -m training.dpo --data pairs.jsonl --model DIR --out DIR [options]

Also runs under ``torchrun --nproc_per_node=N -m training.dpo ...`` (one process per GPU), each with a
whole model (``--sharding ddp``) or a shard of it (``--sharding fsdp``).
"""

from __future__ import annotations

import argparse
import json
import sys

from training.dpo.config import LOSSES, SHARDING, DPOConfig
from training.dpo.loop import train


def parse(argv: list[str] | None = None) -> DPOConfig:
    p = argparse.ArgumentParser(prog="python -m training.dpo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        required=True,
        help="preference JSONL (conversational or standard); kto: unpaired prompt/completion/label rows or "
        "pairs; sft: prompt/completion rows, messages, or pairs (their chosen answers)",
    )
    p.add_argument("--model", required=True, help="starting model directory (Hugging Face format)")
    p.add_argument("--out", required=True, help="output directory (metrics, checkpoints, final/)")
    p.add_argument("--ref", help="reference model directory (default: the starting model)")
    p.add_argument("--eval-data", help="held-out pairs: preference accuracy before and after")
    p.add_argument("--loss", choices=LOSSES, default="sigmoid")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.0, help="robust loss: share of flipped labels")
    p.add_argument(
        "--confidence-smoothing",
        action="store_true",
        help="robust loss: each pair's label smoothing is 1 - its 'confidence' (export_preferences writes it)",
    )
    p.add_argument("--dpop-lambda", type=float, default=50.0)
    p.add_argument("--simpo-gamma", type=float, default=0.5)
    p.add_argument("--desirable-weight", type=float, default=1.0, help="kto: weight of desirable answers")
    p.add_argument("--undesirable-weight", type=float, default=1.0, help="kto: weight of undesirable answers")
    p.add_argument("--rpo-alpha", type=float, default=0.0, help="weight of the chosen answer's NLL (RPO)")
    p.add_argument("--lr", type=float, help="default 5e-7 (full) / 5e-5 (LoRA)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--max-prompt-length", type=int)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N optimizer steps")
    p.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (default: each epoch)")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--merge", action="store_true", help="with LoRA: also write the merged model")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    p.add_argument(
        "--no-padding-free",
        dest="padding_free",
        action="store_false",
        help="pad each batch's rows instead of packing them into one",
    )
    p.add_argument(
        "--no-share-prompt",
        dest="share_prompt",
        action="store_false",
        help="packed: lay each pair's prompt down twice (once per response) instead of once",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward: less memory, more time",
    )
    p.add_argument("--sharding", choices=SHARDING, default="ddp", help="under torchrun: ddp or fsdp")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument(
        "--kl-every",
        type=int,
        default=0,
        help="every N steps estimate KL(policy ‖ reference) per token on answers to --kl-prompts and stop "
        "past --kl-budget, keeping the last checkpoint within it (0: never)",
    )
    p.add_argument("--kl-budget", type=float, default=0.0, help="nats per token")
    p.add_argument("--kl-prompts", help='held-out prompts, JSONL {"prompt": text or messages}')
    p.add_argument("--kl-max-new-tokens", type=int, default=128)
    p.add_argument("--kl-temperature", type=float, default=1.0)
    p.add_argument("--kl-top-p", type=float, default=1.0)
    a = p.parse_args(argv)
    try:
        return DPOConfig(
            policy_path=a.model,
            data_path=a.data,
            output_dir=a.out,
            ref_path=a.ref,
            eval_data_path=a.eval_data,
            loss=a.loss,
            beta=a.beta,
            label_smoothing=a.label_smoothing,
            confidence_smoothing=a.confidence_smoothing,
            dpop_lambda=a.dpop_lambda,
            simpo_gamma=a.simpo_gamma,
            desirable_weight=a.desirable_weight,
            undesirable_weight=a.undesirable_weight,
            rpo_alpha=a.rpo_alpha,
            lr=a.lr,
            epochs=a.epochs,
            batch_size=a.batch_size,
            grad_accum=a.grad_accum,
            max_length=a.max_length,
            max_prompt_length=a.max_prompt_length,
            warmup_ratio=a.warmup_ratio,
            max_steps=a.max_steps,
            save_steps=a.save_steps,
            lora_r=a.lora_r,
            lora_alpha=a.lora_alpha,
            merge=a.merge,
            seed=a.seed,
            dtype=a.dtype,
            resume=a.resume,
            padding_free=a.padding_free,
            share_prompt=a.share_prompt,
            gradient_checkpointing=a.gradient_checkpointing,
            sharding=a.sharding,
            compile=a.compile,
            kl_every=a.kl_every,
            kl_budget=a.kl_budget,
            kl_prompts_path=a.kl_prompts,
            kl_max_new_tokens=a.kl_max_new_tokens,
            kl_temperature=a.kl_temperature,
            kl_top_p=a.kl_top_p,
        )
    except ValueError as exc:
        p.error(str(exc))
        raise  # unreachable: p.error exits


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    try:
        result = train(cfg)
    except ValueError as exc:  # bad data or settings, named in the message
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
