"""Command-line options shared by train_round and run_loop, generated from ``training.options``
(the one source of every round setting and its default)."""

from __future__ import annotations

from typing import Any

from annotate.selectors import AGGREGATIONS
from config.invalid_input import InvalidInput
from training.options import GENERATION, GUARDS, REFERENCE_MODES, TRAINING, Option

# Where a command-line name differs from the setting's: --gen-seed (--seed is the training seed).
_GENERATION_FLAGS = {"seed": "--gen-seed"}


def _flag(option: Option, prefix: str) -> tuple[str, str]:
    flag = _GENERATION_FLAGS.get(option.name, "") if prefix == "gen" else ""
    flag = flag or "--" + option.name.replace("_", "-")
    return flag, f"{prefix}_{option.name}"


def _help(option: Option) -> str:
    return option.help + (f" (default {option.default})" if option.default is not None else "")


METHODS = ("dpo", "kto", "sft")  # what a round trains with; dpo takes --loss (sigmoid unless told)


def add_training_arguments(parser: Any) -> None:
    group = parser.add_argument_group("training (training/dpo)")
    group.add_argument(
        "--method",
        choices=METHODS,
        help="dpo (the DPO family: --loss), kto (each judged answer desirable or not; a both-bad majority "
        "gives two undesirable ones), sft (supervised on the chosen answers); default dpo",
    )
    for option in TRAINING:
        flag, dest = _flag(option, "train")
        if option.kind is bool:  # a switch: given, it is on; absent, the default holds
            group.add_argument(flag, action="store_true", default=None, help=option.help, dest=dest)
            continue
        group.add_argument(flag, type=option.kind, choices=option.choices, help=_help(option), dest=dest)
    group.add_argument(
        "--reference-mode",
        choices=REFERENCE_MODES[1:],
        default="",
        help="parent: the reference rolls with the starting policy (default); base: anchored at the lineage's base",
    )
    group.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        default="majority",
        help="how each comparison's judgments become its label: majority (default) or dawid-skene "
        "(weighted by each annotator's estimated reliability)",
    )
    group.add_argument(
        "--ai-judge",
        action="append",
        default=[],
        help="count this AI judge's verdicts beside people's (repeatable): one vote each, weighed by its "
        "fitted reliability under dawid-skene",
    )
    guard = parser.add_argument_group("guards: a new policy beyond any is held back")
    for option in GUARDS:
        flag, dest = _flag(option, "guard")
        guard.add_argument(flag, type=option.kind, help=_help(option), dest=dest)
    gen = parser.add_argument_group("generation from the new policy")
    for option in GENERATION:
        flag, dest = _flag(option, "gen")
        gen.add_argument(flag, type=option.kind, choices=option.choices, help=_help(option), dest=dest)


def training_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, generation settings) from parsed options, only those given. ValueError
    where --method and --loss disagree."""
    hyperparameters = {
        option.name: options[_flag(option, "train")[1]]
        for option in TRAINING
        if options.get(_flag(option, "train")[1]) is not None
    }
    method = options.get("method")
    if method in ("kto", "sft"):
        if hyperparameters.get("loss", method) != method:
            raise InvalidInput(
                f"--method {method} trains with its own loss, not --loss {hyperparameters['loss']}"
            )
        hyperparameters["loss"] = method
    elif method == "dpo" and hyperparameters.get("loss") in ("kto", "sft"):
        raise InvalidInput(f"--method dpo takes a DPO-family --loss, not {hyperparameters['loss']}")
    generation = {
        option.name: options[_flag(option, "gen")[1]]
        for option in GENERATION
        if options.get(_flag(option, "gen")[1]) is not None
    }
    return hyperparameters, generation


def guard_options(options: dict[str, Any]) -> dict[str, Any]:
    """The guards given on the command line (the rest keep their defaults)."""
    return {
        option.name: options[_flag(option, "guard")[1]]
        for option in GUARDS
        if options.get(_flag(option, "guard")[1]) is not None
    }
