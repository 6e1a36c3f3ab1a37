"""A round's training, the worker's first part: claim the round, export its pairs, train with
training/dpo, register the new policy. It never raises for a failed round: it records the failure on
the round. What follows (``round_follow_up``) and the two together (``execution.round_execute``) are
the next steps of the same path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.datacard import datacard_render, datacard_stats, lines_write_atomic, text_write_atomic
from annotate.selectors import ExportReport, dataset_rows, export_comparisons
from annotate.services.arena import arena_pools_follow
from generation.models import Prompt, Split
from generation.services import policy_register, policy_root
from training.errors import NotEnoughPairs, RoundAbandoned, RoundCancelled
from training.models import RoundStatus, TrainingRound
from training.options import dpo_config, early_stop_fields
from training.recorder import Recorder

logger = logging.getLogger("prefloop.rounds")


def rounds_dir() -> Path:
    return Path(getattr(settings, "PREFLOOP_ROUNDS_DIR", settings.VAR_DIR / "rounds"))


def _export(training_round: TrainingRound, out: Path) -> tuple[Path, int, Counter[str], str, str]:
    """The policy's judged comparisons as conversational JSONL, written atomically, in the dataset
    type its loss trains on (KTO: unpaired answers, SFT: prompt-completion, else pairs); (file,
    comparisons, excluded, sha256, its data card). The card is written beside it as README.md."""
    loss = (training_round.hyperparameters or {}).get("loss")
    dataset_type = {"kto": "unpaired", "sft": "prompt-completion"}.get(loss or "", "preference")
    aggregation = training_round.aggregation
    out.mkdir(parents=True, exist_ok=True)
    path = out / "data.jsonl"
    report = ExportReport()
    digest = hashlib.sha256()

    def lines() -> Iterator[str]:
        judges = list(training_round.ai_judges.all())  # counted beside people's only when the round asks
        for row in dataset_rows(
            report=report,
            dataset_type=dataset_type,
            policy=training_round.policy,
            aggregation=aggregation,
            **({"ai_judges": judges} if judges else {}),
        ):
            line = json.dumps(row, ensure_ascii=False) + "\n"
            digest.update(line.encode("utf-8"))
            yield line

    lines_write_atomic(path, lines())
    card = datacard_render(
        data_file=path.name,
        report=report,
        stats=datacard_stats(comparisons=export_comparisons(policy=training_round.policy)),
        dataset_type=dataset_type,
        fmt="conversational",
        aggregation=aggregation,
        what=f"round {training_round.pk} (training {training_round.policy.name})",
    )
    text_write_atomic(out / "README.md", card)
    # KTO counts its examples (a pair gives two, a thumbs item one), as round_create did
    count = (report.rows or 0) if dataset_type == "unpaired" else report.written
    return path, count, report.excluded, digest.hexdigest(), card


def _heldout_prompts_write(path: Path) -> None:
    """The held-out (eval split) prompts as the trainer's early stop reads them, written atomically."""
    rows = [
        json.dumps({"prompt": prompt.as_messages()}, ensure_ascii=False) + "\n"
        for prompt in Prompt.objects.filter(split=Split.EVAL).order_by("id")
    ]
    text_write_atomic(path, "".join(rows))


def _output_policy_name(training_round: TrainingRound) -> str:
    return f"{policy_root(training_round.policy).name[:80]}-round{training_round.pk}"


def round_train(*, round_id: int, on_progress: Callable[[str], None] | None = None) -> TrainingRound:
    """Run a queued round's training: export → train → register (status succeeded, ``following_up``
    set for ``round_follow_up.round_follow_up``).

    Claims the round (queued → running) first, so two workers never run one round. A failure marks
    the round failed with the error and registers nothing; cancellation is honoured between steps.
    Returns the round as it ended.
    """
    claimed = TrainingRound.objects.filter(pk=round_id, status=RoundStatus.QUEUED).update(
        status=RoundStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    training_round = TrainingRound.objects.select_related("policy", "reference").get(pk=round_id)
    if not claimed:
        return training_round  # cancelled before it started, or another worker has it
    recorder = Recorder(training_round, echo=on_progress)
    out = rounds_dir() / str(training_round.pk)  # PREFLOOP_ROUNDS_DIR/<id>/: data.jsonl, train/
    try:
        _train_and_register(training_round, recorder, out)
    except RoundCancelled:
        recorder.log("cancelled by staff")
        _finish(training_round, RoundStatus.CANCELLED)
    except RoundAbandoned as exc:
        recorder.log(str(exc))
        training_round.refresh_from_db()
    except Exception as exc:
        recorder.log(f"failed: {type(exc).__name__}: {exc}")
        logger.error("round %s failed\n%s", training_round.pk, traceback.format_exc())
        _finish(training_round, RoundStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    return training_round


def _finish(training_round: TrainingRound, status: str, **values: Any) -> None:
    now = timezone.now()
    TrainingRound.objects.filter(pk=training_round.pk).update(
        status=status, finished_at=now, heartbeat_at=now, **values
    )
    training_round.refresh_from_db()


def _train_and_register(training_round: TrainingRound, recorder: Recorder, out: Path) -> None:
    from training.dpo.loop import train

    recorder.log(f"exporting the judged comparisons of {training_round.policy.name}")
    data_file, pairs, excluded, sha256, card = _export(training_round, out)
    left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(excluded.items())) or "none"
    recorder.update(
        data_file=str(data_file),
        data_sha256=sha256,
        pairs=pairs,
        excluded=dict(excluded),
        data_card=card,
    )
    training_round.output_dir = str(out)
    TrainingRound.objects.filter(pk=training_round.pk).update(output_dir=str(out))
    recorder.log(f"{pairs} pairs in {data_file.name} (sha256 {sha256[:12]}); left out: {left_out}")
    if pairs < training_round.min_pairs:
        what = (
            "unpaired examples" if training_round.hyperparameters.get("loss") == "kto" else "preference pairs"
        )
        raise NotEnoughPairs(f"{pairs} {what}; the round needs at least {training_round.min_pairs}")
    recorder.check_cancelled()
    reference = training_round.reference
    early_stop = early_stop_fields(
        training_round.hyperparameters,
        guards=training_round.guards,
        generation=training_round.generation,
        prompts_path=str(out / "heldout_prompts.jsonl"),
    )
    if early_stop:
        _heldout_prompts_write(out / "heldout_prompts.jsonl")
    cfg = dpo_config(
        training_round.hyperparameters,
        policy_path=training_round.policy.location,
        data_path=str(data_file),
        output_dir=str(out / "train"),
        ref_path=None if reference.pk == training_round.policy.pk else reference.location,
        **early_stop,
    )
    per_step = cfg.batch_size * cfg.grad_accum
    steps = -(-pairs // per_step) * cfg.epochs
    recorder.update(steps_total=min(steps, cfg.max_steps) if cfg.max_steps else steps)
    recorder.log(
        f"training {cfg.loss} (beta {cfg.beta}, lr {cfg.learning_rate:g}, {cfg.epochs} epoch(s), "
        f"batch {cfg.batch_size}x{cfg.grad_accum}{', LoRA r=' + str(cfg.lora_r) if cfg.lora_r else ''}"
        f"{f', RPO {cfg.rpo_alpha:g}' if cfg.rpo_alpha else ''}"
        f"{f', held-out KL checked every {cfg.kl_every} steps against {cfg.kl_budget:g}' if cfg.kl_every else ''}"
        f"): {training_round.steps_total} steps; reference log-probs first"
    )
    if (out / "train").exists():  # a retried round starts clean
        shutil.rmtree(out / "train")
    result = train(cfg, on_metrics=recorder.metrics, on_progress=recorder.note)
    model_dir = result.merged_dir or result.final_dir
    if cfg.kl_every:
        recorder.update(kl_checks=[list(check) for check in result.kl_checks], stopped_early=result.kl_stop)
        for step, estimate in result.kl_checks:
            recorder.log(f"step {step}: held-out KL {estimate:.3f} nats/token (budget {cfg.kl_budget:g})")
    if result.kl_stop:
        recorder.log(
            f"stopped early at step {result.kl_stop['step']:.0f}: held-out KL {result.kl_stop['kl']:.3f} > "
            f"budget {cfg.kl_budget:g}; the policy is step {result.kl_stop['kept_step']:.0f}'s checkpoint"
        )
    recorder.log(f"saved {model_dir}")
    with transaction.atomic():
        recorder.check_cancelled()
        current = TrainingRound.objects.select_for_update().get(pk=training_round.pk)
        if current.status != RoundStatus.RUNNING:  # ended meanwhile (its worker counted as dead)
            raise RoundAbandoned(f"the round was ended meanwhile ({current.status}): nothing registered")
        policy = policy_register(
            name=_output_policy_name(training_round),
            location=str(model_dir),
            parent=training_round.policy,
            notes=f"DPO round {training_round.pk} on {pairs} pairs from {training_round.policy.name}",
            # LoRA: also its adapter on the model it was trained from, so its base's engine serves it
            lora=(cfg.policy_path, str(result.final_dir)) if result.merged_dir else None,
        )
        now = timezone.now()
        TrainingRound.objects.filter(pk=training_round.pk).update(
            status=RoundStatus.SUCCEEDED,
            output_policy=policy,
            finished_at=now,
            heartbeat_at=now,
            following_up=True,
        )
        pools = arena_pools_follow(policy=policy, parent=training_round.policy)
    training_round.refresh_from_db()
    recorder.log(f"registered policy {policy.name}" + (f"; it joins {pools} arena pool(s)" if pools else ""))
