"""One source for a round's settings: which DPOConfig fields a round may set, the sampling settings
of the answers it generates next, their defaults, and their validation.

The command-line options (``management/arguments.py``), the start-round form and the API all read
these; nothing else states a default. Importing this loads no torch.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any

from annotate.services.pairing import PAIRINGS
from config.invalid_input import InvalidInput
from generation.backends import BACKENDS, Sampling
from training.dpo.config import LOSSES, UNPAIRED, DPOConfig


def _shown(bound: float | None) -> str:
    """A bound as people write it: 2147483647, 100, 0.5, 1e-09."""
    return str(int(bound)) if bound is not None and bound == int(bound) else f"{bound:g}"


@dataclass(frozen=True)
class Option:
    name: str  # the DPOConfig or Sampling field (or pairs / overlap / backend)
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # the smallest value a round accepts (inclusive)
    high: float | None = None  # the largest

    def check(self, value: Any) -> Any:
        """``value`` as this option's type, within its bounds; ValueError names the setting, what it
        takes and what it got. The form, the API and the commands all come through here, so each
        refuses the same values with the same message (a round fails early, not in the worker)."""
        if value is None and self.default is None:
            return None
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidInput(f"{self.name} must be true or false (got {value!r})")
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                allowed = f"one of {', '.join(self.choices)}" if self.choices else "text"
                raise InvalidInput(f"{self.name} must be {allowed} (got {value!r})")
            return value
        try:  # numbers: JSON numbers, or text that reads as one (a form field, a command line)
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        what = "a whole number" if self.kind is int else "a number"
        bounds = (
            f" from {_shown(self.low)} to {_shown(self.high)}"
            if self.low is not None and self.high is not None
            else ""
        )
        if (
            not math.isfinite(number)
            or (self.kind is int and number != int(number))
            or (self.low is not None and number < self.low)
            or (self.high is not None and number > self.high)
        ):
            raise InvalidInput(f"{self.name} must be {what}{bounds} (got {value!r})")
        return int(number) if self.kind is int else number


def _default(cls: type, name: str) -> Any:
    (found,) = [f for f in fields(cls) if f.name == name]
    return None if found.default is MISSING else found.default


# A round's defaults where they differ from the library's: DPOConfig's lr (5e-7) suits long runs on
# large data; a round trains on tens to thousands of pairs. RPO at 1.0 keeps the policy from
# drifting: two rounds of run_loop at lr 1e-5 without it left answers 1.3x less likely under the base
# with 30% outliers (held back); with it, within 1% of the base's NLL and 5% outliers. With RPO on, lr
# 2e-5 was the better trade-off of the sweep (docs/training.md, "Drift"): over the base after two
# rounds 0.842 (shorter; 0.683 with another seed) against 0.642 at 1e-5, every final policy within
# 7% of the base's NLL; over four seeds shorter, no-bullets and on-topic-shorter average 0.771,
# 0.779 and 0.764. 3e-5 (two seeds, three oracles) gained 0.044 on average, within noise, and put
# two of six runs at the 15% outlier limit; two epochs gained 0.033 [-0.017, 0.083] over twelve
# paired runs, not clear of zero, at twice the training time.
ROUND_DEFAULTS: dict[str, Any] = {"lr": 2e-5, "max_length": 512, "rpo_alpha": 1.0}

_TRAINING_HELP = {
    "loss": "the DPO-family loss; kto: unpaired answers (pairs give one of each); sft: the chosen answers",
    "beta": "how hard the reference holds the policy back",
    "lr": "learning rate",
    "epochs": "passes over the pairs",
    "batch_size": "pairs per micro-batch",
    "grad_accum": "micro-batches per optimizer step",
    "max_length": "prompt + response tokens per pair side",
    "max_prompt_length": "prompt tokens kept",
    "warmup_ratio": "share of steps warming up the learning rate",
    "max_steps": "stop after N optimizer steps (0: all epochs)",
    "lora_r": "LoRA rank (0: full fine-tuning; the merged model is registered)",
    "lora_alpha": "LoRA alpha (default 2 × rank)",
    "label_smoothing": "robust loss: assumed share of flipped labels",
    "confidence_smoothing": "robust loss: each pair's label smoothing is 1 - its Dawid-Skene confidence",
    "rpo_alpha": "RPO: weight of the chosen answer's per-token NLL added to the loss (0: off)",
    "seed": "training seed",
    "dtype": "auto, bf16 or fp32",
    "kl_every": "early stop: every N steps the policy answers the held-out prompts; past the KL budget "
    "the round stops and keeps the last checkpoint within it (0: never)",
}
_TYPES = {
    "loss": str,
    "dtype": str,
    "lr": float,
    "beta": float,
    "warmup_ratio": float,
    "label_smoothing": float,
    "rpo_alpha": float,
    "confidence_smoothing": bool,
}

# What a round accepts: wide enough for any real run, narrow enough that a typo (lr 1e12, epochs 1e9)
# is refused when the round is asked for rather than holding a worker for ever (docs/training.md).
_BOUNDS: dict[str, tuple[float, float]] = {
    "beta": (1e-4, 100.0),
    "lr": (1e-9, 1.0),
    "epochs": (1, 1000),
    "batch_size": (1, 4096),
    "grad_accum": (1, 4096),
    "max_length": (16, 131072),
    "max_prompt_length": (1, 131072),
    "warmup_ratio": (0.0, 1.0),
    "max_steps": (0, 10_000_000),
    "lora_r": (0, 1024),
    "lora_alpha": (1, 4096),
    "label_smoothing": (0.0, 0.5),
    "rpo_alpha": (0.0, 100.0),
    "seed": (0, 2**31 - 1),
    "kl_every": (0, 1_000_000),
}

TRAINING: list[Option] = [
    Option(
        name,
        _TYPES.get(name, int),
        ROUND_DEFAULTS.get(name, _default(DPOConfig, name)),
        help_text,
        LOSSES if name == "loss" else ("auto", "bf16", "fp32") if name == "dtype" else None,
        *_BOUNDS.get(name, (None, None)),
    )
    for name, help_text in _TRAINING_HELP.items()
]
HYPERPARAMETERS = tuple(option.name for option in TRAINING)

GENERATION: list[Option] = [
    Option("samples", int, _default(Sampling, "samples"), "answers per prompt", None, 1, 16),
    Option("temperature", float, _default(Sampling, "temperature"), "sampling temperature", None, 0.0, 5.0),
    Option("top_p", float, _default(Sampling, "top_p"), "nucleus sampling", None, 0.01, 1.0),
    Option("max_new_tokens", int, _default(Sampling, "max_new_tokens"), "answer length cap", None, 1, 32768),
    Option("seed", int, _default(Sampling, "seed"), "sampling seed", None, 0, 2**31 - 1),
    Option("pairs", str, "random", "how a prompt's answers are paired", PAIRINGS),
    Option("overlap", int, None, "judgments wanted per comparison (default: the campaign's)", None, 1, 100),
    Option(
        "budget",
        int,
        None,
        "most comparisons a round queues (default: the campaign's pair budget; none: no cap)",
        None,
        1,
        10_000_000,
    ),
    Option("backend", str, "auto", "generation backend", BACKENDS),
]
GENERATION_DEFAULTS: dict[str, Any] = {option.name: option.default for option in GENERATION}


def round_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """What a round trains with, explicitly: its defaults, then ``hyperparameters`` (stored on the
    round, so it says what it did). ValueError names an unknown setting."""
    unknown = sorted(set(hyperparameters) - set(HYPERPARAMETERS))
    if unknown:
        raise InvalidInput(f"unknown training option {unknown[0]!r}; known: {', '.join(HYPERPARAMETERS)}")
    by_name = {option.name: option for option in TRAINING}
    hyperparameters = {name: by_name[name].check(value) for name, value in hyperparameters.items()}
    merged = {**ROUND_DEFAULTS, **hyperparameters}
    if merged.get("loss") in UNPAIRED and "rpo_alpha" not in hyperparameters:
        merged["rpo_alpha"] = 0.0  # RPO anchors a pair's chosen answer; KTO and SFT have no pairs
    if merged.get("lora_r") and "lr" not in hyperparameters:
        del merged["lr"]  # DPOConfig's LoRA learning rate (5e-5)
    return merged


def dpo_config(hyperparameters: dict[str, Any], **fields: Any) -> DPOConfig:
    """The DPOConfig of a round: its defaults, then ``hyperparameters``, and ``fields`` set by the app
    (paths, the early stop's: ``early_stop_fields``); ValueError names a bad one."""
    merged = round_hyperparameters(hyperparameters)
    merge = bool(merged.get("lora_r"))  # a LoRA round registers the merged model
    return DPOConfig(**fields, **merged, merge=merge)


def early_stop_fields(
    hyperparameters: dict[str, Any], *, guards: dict[str, Any], generation: dict[str, Any], prompts_path: str
) -> dict[str, Any]:
    """The DPOConfig fields of a round's early stop (none when ``kl_every`` is 0): the round's KL
    budget, its held-out prompts (``prompts_path``), and its own sampling settings, so the estimate
    is made on answers like those the guard measures after training."""
    if not hyperparameters.get("kl_every"):
        return {}
    gen = {**GENERATION_DEFAULTS, **generation}
    return {
        "kl_budget": float(guard_settings(guards)["kl_budget"]),
        "kl_prompts_path": prompts_path,
        "kl_max_new_tokens": int(gen["max_new_tokens"]),
        "kl_temperature": float(gen["temperature"]),
        "kl_top_p": float(gen["top_p"]),
    }


def generation_settings(generation: dict[str, Any]) -> dict[str, Any]:
    """The defaults, then ``generation``; ValueError names an unknown or bad setting."""
    unknown = sorted(set(generation) - set(GENERATION_DEFAULTS))
    if unknown:
        raise InvalidInput(
            f"unknown generation option {unknown[0]!r}; known: {', '.join(GENERATION_DEFAULTS)}"
        )
    merged = {**GENERATION_DEFAULTS, **generation}
    for option in GENERATION:
        merged[option.name] = option.check(merged[option.name])
    sampling_from(merged)
    return merged


def sampling_from(generation: dict[str, Any]) -> Sampling:
    """The Sampling part of generation settings (Sampling validates it: ValueError)."""
    return Sampling(**{f.name: generation[f.name] for f in fields(Sampling)})


# Guards: a round's new policy beyond any of these is registered but held back (training.drift).
# Defaults from evidence (docs/training.md): the readable runs kept their held-out answers within 20%
# of the base's own NLL with under 15% beyond its 95th percentile; the broken ones did not.
GUARDS: list[Option] = [
    Option(
        "kl_budget",
        float,
        0.5,
        "largest KL(new ‖ reference) per token on its held-out answers",
        None,
        1e-9,
        100.0,
    ),
    Option(
        "fluency_limit",
        float,
        1.2,
        "largest NLL of its held-out answers under the base, × the base's own",
        None,
        1e-9,
        100.0,
    ),
    Option(
        "outlier_limit",
        float,
        0.15,
        "largest share of its held-out answers beyond the base's 95th NLL percentile",
        None,
        0.0,
        1.0,
    ),
]
GUARD_DEFAULTS: dict[str, float] = {option.name: option.default for option in GUARDS}


def guard_settings(guards: dict[str, Any]) -> dict[str, float]:
    """The defaults, then ``guards``; ValueError names an unknown one or one out of its bounds."""
    unknown = sorted(set(guards) - set(GUARD_DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown guard {unknown[0]!r}; known: {', '.join(GUARD_DEFAULTS)}")
    by_name = {option.name: option for option in GUARDS}
    return {**GUARD_DEFAULTS, **{name: by_name[name].check(value) for name, value in guards.items()}}


# The reference a round holds its policy to: "parent" rolls with the starting policy (each round
# may move a little from the last), "base" anchors every round at the base of the lineage.
REFERENCE_MODES = ("", "parent", "base")
