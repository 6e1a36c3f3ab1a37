"""Command-line options shared by train_round and run_loop: DPO settings and sampling settings."""

from __future__ import annotations

from typing import Any

from annotate.services import PAIRINGS
from generation.backends import BACKENDS
from training.dpo.config import LOSSES

# (option, DPOConfig field, type, help); unset options keep DPOConfig's defaults.
TRAINING = [
    ("--loss", "loss", str, f"one of {', '.join(LOSSES)} (default sigmoid)"),
    ("--beta", "beta", float, "how hard the reference holds the policy back (default 0.1)"),
    ("--lr", "lr", float, "learning rate (default 5e-7 full, 5e-5 LoRA)"),
    ("--epochs", "epochs", int, "passes over the pairs (default 1)"),
    ("--batch-size", "batch_size", int, "pairs per micro-batch (default 4)"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step (default 1)"),
    ("--max-length", "max_length", int, "prompt + response tokens (default 1024)"),
    ("--max-prompt-length", "max_prompt_length", int, "prompt tokens kept"),
    ("--warmup-ratio", "warmup_ratio", float, "share of steps warming up the learning rate"),
    ("--max-steps", "max_steps", int, "stop after N optimizer steps"),
    ("--lora-r", "lora_r", int, "LoRA rank (0: full fine-tuning; the merged model is registered)"),
    ("--seed", "seed", int, "training seed (default 42)"),
    ("--dtype", "dtype", str, "auto, bf16 or fp32"),
]
GENERATION = [
    ("--samples", "samples", int, "answers per prompt (default 4)"),
    ("--temperature", "temperature", float, "sampling temperature (default 0.8)"),
    ("--top-p", "top_p", float, "nucleus sampling (default 0.95)"),
    ("--max-new-tokens", "max_new_tokens", int, "answer length cap (default 256)"),
    ("--gen-seed", "seed", int, "sampling seed (default 0)"),
    ("--overlap", "overlap", int, "judgments wanted per comparison (default 1)"),
]


def add_training_arguments(parser: Any) -> None:
    group = parser.add_argument_group("training (training/dpo)")
    for option, _, kind, help_text in TRAINING:
        group.add_argument(option, type=kind, help=help_text, dest=f"train_{option[2:].replace('-', '_')}")
    gen = parser.add_argument_group("generation from the new policy")
    for option, _, kind, help_text in GENERATION:
        gen.add_argument(option, type=kind, help=help_text, dest=f"gen_{option[2:].replace('-', '_')}")
    gen.add_argument("--pairs", choices=PAIRINGS, dest="gen_pairs", help="how answers are paired (random)")
    gen.add_argument("--backend", choices=BACKENDS, dest="gen_backend", help="generation backend (auto)")


def training_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, generation settings) from parsed options, only those given."""
    hyperparameters = {
        field: options[f"train_{option[2:].replace('-', '_')}"]
        for option, field, _, _ in TRAINING
        if options.get(f"train_{option[2:].replace('-', '_')}") is not None
    }
    generation = {
        field: options[f"gen_{option[2:].replace('-', '_')}"]
        for option, field, _, _ in GENERATION
        if options.get(f"gen_{option[2:].replace('-', '_')}") is not None
    }
    for name in ("pairs", "backend"):
        if options.get(f"gen_{name}") is not None:
            generation[name] = options[f"gen_{name}"]
    return hyperparameters, generation
