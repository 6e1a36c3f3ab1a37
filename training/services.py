"""Training rounds: export the policy's judged comparisons, run training/dpo, register the result.

``round_start`` runs in a request or a command: it checks everything that can be checked without a
model (the policy can be trained, the settings are valid, there are enough pairs), creates the
round and enqueues its task in one transaction. ``round_run`` is the task's body, in a worker
process (or called directly by ``train_round`` and ``run_loop``): it never raises for a failed round,
it records the failure on the round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotate.selectors import ExportReport, preference_rows
from annotate.services import PAIRINGS, comparisons_generate, comparisons_pair_policies
from generation.backends import Backend, ModelSpec, Sampling, backend_load
from generation.models import LocationKind, Policy, Prompt, Response, Split
from generation.services import (
    GenerationReport,
    policy_register,
    prompts_least_answered,
    prompts_pending,
    responses_generate,
)
from training.errors import NotEnoughPairs, NotTrainable, RoundCancelled, RoundFinished
from training.models import RoundMetric, RoundStatus, TrainingRound

logger = logging.getLogger("prefloop.rounds")

# The DPOConfig fields a round may set; paths are the round's own.
HYPERPARAMETERS = (
    "loss",
    "beta",
    "lr",
    "epochs",
    "batch_size",
    "grad_accum",
    "max_length",
    "max_prompt_length",
    "warmup_ratio",
    "max_steps",
    "lora_r",
    "lora_alpha",
    "label_smoothing",
    "seed",
    "dtype",
)
GENERATION_DEFAULTS: dict[str, Any] = {
    "samples": 4,
    "temperature": 0.8,
    "top_p": 0.95,
    "max_new_tokens": 256,
    "seed": 0,
    "pairs": "random",
    "overlap": 1,
    "backend": "auto",
}
LOG_LINES = 200  # the tail kept on the round
HELDOUT_LABEL = "heldout"  # each policy's one answer per held-out prompt, compared blind with others


def _dpo_config(hyperparameters: dict[str, Any], **paths: Any) -> Any:
    from training.dpo.config import DPOConfig

    unknown = sorted(set(hyperparameters) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown training option {unknown[0]!r}; known: {', '.join(HYPERPARAMETERS)}")
    merge = bool(hyperparameters.get("lora_r"))  # a LoRA round registers the merged model
    return DPOConfig(**paths, **hyperparameters, merge=merge)


def _generation_settings(generation: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(generation) - set(GENERATION_DEFAULTS))
    if unknown:
        raise NotTrainable(f"unknown generation option {unknown[0]!r}")
    merged = {**GENERATION_DEFAULTS, **generation}
    if merged["pairs"] not in PAIRINGS:
        raise NotTrainable(f"pairs must be one of {', '.join(PAIRINGS)} (got {merged['pairs']!r})")
    if int(merged["overlap"]) < 1:
        raise NotTrainable(f"overlap must be at least 1 (got {merged['overlap']})")
    try:
        sampling_from(merged)
    except ValueError as exc:
        raise NotTrainable(str(exc)) from exc
    return merged


def sampling_from(generation: dict[str, Any]) -> Sampling:
    return Sampling(**{f.name: generation[f.name] for f in fields(Sampling)})


def policy_trainable_problem(policy: Policy) -> str | None:
    """Why ``policy`` cannot be the starting point of a round, or None."""
    if policy.location_kind == LocationKind.GGUF:
        return (
            f"policy {policy.name!r} is a GGUF file; register a Hugging Face directory to train it "
            "(register_policy --embedded materialises the embedded model as one)"
        )
    if policy.adapter:
        return f"policy {policy.name!r} is a LoRA adapter on a base; register its merged model to train it"
    return None


def round_pairs_count(*, policy: Policy) -> tuple[int, Counter[str]]:
    """How many preference pairs the policy's judged comparisons give now, and what is left out."""
    report = ExportReport()
    for _ in preference_rows(report=report, policy=policy):
        pass
    return report.written, report.excluded


def _rounds_dir() -> Path:
    return Path(getattr(settings, "PREFLOOP_ROUNDS_DIR", settings.VAR_DIR / "rounds"))


@transaction.atomic
def round_create(
    *,
    policy: Policy,
    reference: Policy | None = None,
    hyperparameters: dict[str, Any] | None = None,
    min_pairs: int | None = None,
    then_generate: int = 0,
    generation: dict[str, Any] | None = None,
    started_by: AbstractBaseUser | None = None,
) -> TrainingRound:
    """A queued round, after every check that needs no model: trainable policy and reference, valid
    settings, at least ``min_pairs`` pairs (default ``PREFLOOP_MIN_PAIRS``)."""
    reference = reference or policy
    for candidate in {policy, reference}:
        problem = policy_trainable_problem(candidate)
        if problem:
            raise NotTrainable(problem)
    hyperparameters = dict(hyperparameters or {})
    try:
        _dpo_config(hyperparameters, policy_path="-", data_path="-", output_dir="-")
    except (TypeError, ValueError) as exc:
        raise NotTrainable(str(exc)) from exc
    # Sampling settings serve the held-out answers too, so they are kept even without then_generate.
    generation = _generation_settings(generation or {})
    if then_generate < 0:
        raise NotTrainable(f"then_generate must be 0 or more (got {then_generate})")
    needed = settings.PREFLOOP_MIN_PAIRS if min_pairs is None else min_pairs
    if needed < 1:
        raise NotTrainable(f"min_pairs must be at least 1 (got {needed})")
    pairs, excluded = round_pairs_count(policy=policy)
    if pairs < needed:
        left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(excluded.items())) or "none"
        raise NotEnoughPairs(
            f"policy {policy.name!r} has {pairs} preference pairs from judged comparisons; a round needs "
            f"at least {needed} (left out: {left_out})",
            pairs=pairs,
            needed=needed,
        )
    return TrainingRound.objects.create(
        policy=policy,
        reference=reference,
        hyperparameters=hyperparameters,
        min_pairs=needed,
        then_generate=then_generate,
        generation=generation,
        started_by=started_by,
    )


@transaction.atomic
def round_start(**options: Any) -> TrainingRound:
    """Create a round (``round_create``'s checks) and enqueue it for a worker, in one transaction:
    the task row and the round land together."""
    from training.tasks import round_run_task

    training_round = round_create(**options)
    result = round_run_task.enqueue(round_id=training_round.pk)
    training_round.task_id = str(result.id)
    training_round.save(update_fields=["task_id"])
    return training_round


def round_cancel(*, training_round: TrainingRound) -> TrainingRound:
    """Cancel a round: a queued one at once; a running one at the worker's next step (or at once if
    its worker has shown no sign of life for ``PREFLOOP_ROUND_STALE_SECONDS``)."""
    now = timezone.now()
    with transaction.atomic():
        current = TrainingRound.objects.select_for_update().get(pk=training_round.pk)
        if current.is_finished:
            raise RoundFinished(f"round {current.pk} has already {current.status}", round=current.pk)
        stale = now - timedelta(seconds=settings.PREFLOOP_ROUND_STALE_SECONDS)
        last_sign = current.heartbeat_at or current.started_at
        if current.status == RoundStatus.QUEUED or (last_sign is not None and last_sign < stale):
            if current.status == RoundStatus.RUNNING:
                current.log += f"{now:%H:%M:%S} cancelled: the worker stopped answering\n"
            current.status, current.finished_at, current.cancel_requested = RoundStatus.CANCELLED, now, True
        else:
            current.cancel_requested = True
        current.save(update_fields=["status", "finished_at", "cancel_requested", "log"])
    return current


class _Recorder:
    """What the worker tells the round: log lines (the tail is kept), step metrics, the heartbeat,
    and whether staff asked it to stop. Each write is its own short transaction."""

    def __init__(self, training_round: TrainingRound, echo: Callable[[str], None] | None = None) -> None:
        self.round = training_round
        self.lines = training_round.log.splitlines()
        self.echo = echo

    def log(self, message: str) -> None:
        if self.echo is not None:
            self.echo(message)
        else:  # in a worker: its console shows the round's progress
            logger.info("round %s: %s", self.round.pk, message)
        self.lines.append(f"{timezone.now():%H:%M:%S} {message}")
        self.lines = self.lines[-LOG_LINES:]
        self._update(log="\n".join(self.lines) + "\n")

    def _update(self, **values: Any) -> None:
        TrainingRound.objects.filter(pk=self.round.pk).update(heartbeat_at=timezone.now(), **values)
        for name, value in values.items():
            setattr(self.round, name, value)

    def check_cancelled(self) -> None:
        if TrainingRound.objects.filter(pk=self.round.pk, cancel_requested=True).exists():
            raise RoundCancelled()

    def metrics(self, values: dict[str, float]) -> None:
        step = int(values["step"])
        RoundMetric.objects.update_or_create(round=self.round, step=step, defaults={"values": values})
        total = self.round.steps_total or "?"
        self.log(
            f"step {step}/{total} loss {values['loss']:.4f} accuracy {values['rewards/accuracies']:.2f} "
            f"margin {values['rewards/margins']:.4f}"
        )
        self.check_cancelled()


def _export(training_round: TrainingRound, out: Path) -> tuple[Path, int, Counter[str], str]:
    """The policy's pairs as conversational JSONL, written atomically; (file, pairs, excluded, sha256)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "data.jsonl"
    report = ExportReport()
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".data.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            for row in preference_rows(report=report, policy=training_round.policy):
                line = json.dumps(row, ensure_ascii=False) + "\n"
                digest.update(line.encode("utf-8"))
                stream.write(line)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, report.written, report.excluded, digest.hexdigest()


def _output_policy_name(training_round: TrainingRound) -> str:
    root = training_round.policy
    while root.parent is not None and root.parent_id != root.pk:
        root = root.parent
    return f"{root.name[:80]}-round{training_round.pk}"


def round_run(*, round_id: int, on_progress: Callable[[str], None] | None = None) -> TrainingRound:
    """Run a queued round to its end: export → train → register → (then_generate) generate.

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
    recorder = _Recorder(training_round, echo=on_progress)
    out = _rounds_dir() / f"round-{training_round.pk}"
    try:
        _train_and_register(training_round, recorder, out)
    except RoundCancelled:
        recorder.log("cancelled by staff")
        _finish(training_round, RoundStatus.CANCELLED)
        return training_round
    except Exception as exc:
        recorder.log(f"failed: {type(exc).__name__}: {exc}")
        logger.error("round %s failed\n%s", training_round.pk, traceback.format_exc())
        _finish(training_round, RoundStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        return training_round
    _follow_up(training_round, recorder)
    return training_round


def _finish(training_round: TrainingRound, status: str, **values: Any) -> None:
    now = timezone.now()
    TrainingRound.objects.filter(pk=training_round.pk).update(
        status=status, finished_at=now, heartbeat_at=now, **values
    )
    training_round.refresh_from_db()


def _train_and_register(training_round: TrainingRound, recorder: _Recorder, out: Path) -> None:
    from training.dpo.loop import train

    recorder.log(f"exporting the judged comparisons of {training_round.policy.name}")
    data_file, pairs, excluded, sha256 = _export(training_round, out)
    left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(excluded.items())) or "none"
    recorder._update(data_file=str(data_file), data_sha256=sha256, pairs=pairs, excluded=dict(excluded))
    training_round.output_dir = str(out)
    TrainingRound.objects.filter(pk=training_round.pk).update(output_dir=str(out))
    recorder.log(f"{pairs} pairs in {data_file.name} (sha256 {sha256[:12]}); left out: {left_out}")
    if pairs < training_round.min_pairs:
        raise NotEnoughPairs(f"{pairs} preference pairs; the round needs at least {training_round.min_pairs}")
    recorder.check_cancelled()
    hp = training_round.hyperparameters
    reference = training_round.reference
    cfg = _dpo_config(
        hp,
        policy_path=training_round.policy.location,
        data_path=str(data_file),
        output_dir=str(out / "train"),
        ref_path=None if reference.pk == training_round.policy.pk else reference.location,
    )
    per_step = cfg.batch_size * cfg.grad_accum
    steps = -(-pairs // per_step) * cfg.epochs
    recorder._update(steps_total=min(steps, cfg.max_steps) if cfg.max_steps else steps)
    recorder.log(
        f"training {cfg.loss} (beta {cfg.beta}, lr {cfg.learning_rate:g}, {cfg.epochs} epoch(s), "
        f"batch {cfg.batch_size}x{cfg.grad_accum}{', LoRA r=' + str(cfg.lora_r) if cfg.lora_r else ''}): "
        f"{training_round.steps_total} steps; reference log-probs first"
    )
    if (out / "train").exists():  # a retried round starts clean
        shutil.rmtree(out / "train")
    result = train(cfg, on_metrics=recorder.metrics)
    model_dir = result.merged_dir or result.final_dir
    recorder.log(f"saved {model_dir}")
    with transaction.atomic():
        recorder.check_cancelled()
        policy = policy_register(
            name=_output_policy_name(training_round),
            location=str(model_dir),
            parent=training_round.policy,
            notes=f"DPO round {training_round.pk} on {pairs} pairs from {training_round.policy.name}",
        )
        now = timezone.now()
        TrainingRound.objects.filter(pk=training_round.pk).update(
            status=RoundStatus.SUCCEEDED,
            output_policy=policy,
            finished_at=now,
            heartbeat_at=now,
            following_up=True,
        )
    training_round.refresh_from_db()
    recorder.log(f"registered policy {policy.name}")


def _follow_up(training_round: TrainingRound, recorder: _Recorder) -> None:
    """After a successful round, with its new policy: answer the next ``then_generate`` train prompts
    (fewest answered first) and queue their comparisons under the round's label; then answer the
    held-out prompts and queue blind eval comparisons against the parent. A failure here leaves the
    round succeeded (its policy is good) and says so in the log and the error; ``generate`` resumes it.
    """
    policy = training_round.output_policy
    assert policy is not None
    gen = {**GENERATION_DEFAULTS, **training_round.generation}
    sampling = sampling_from(gen)
    label = training_round.generation_label
    try:
        report, backend = train_prompts_answer(
            policy=policy,
            round_label=label,
            limit=training_round.then_generate,
            generation=gen,
            recorder=recorder,
        )
        if report is not None:
            recorder.log(f"queued {report.extra.get('comparisons', 0)} comparisons in round {label!r}")
        parent = training_round.policy
        heldout = heldout_answer(
            policy=policy, sampling=sampling, backend_name=gen["backend"], backend=backend, recorder=recorder
        )
        if heldout:
            heldout_answer(policy=parent, sampling=sampling, backend_name=gen["backend"], recorder=recorder)
            report = comparisons_pair_policies(
                new=policy,
                new_label=HELDOUT_LABEL,
                old=parent,
                old_label=HELDOUT_LABEL,
                round_label=f"{label}-eval",
                overlap=int(gen["overlap"]),
                seed=int(gen["seed"]),
            )
            recorder.log(
                f"queued {report.extra.get('comparisons', 0)} blind eval comparisons of {policy.name} "
                f"against {parent.name} in round {label + '-eval'!r}"
            )
    except Exception as exc:
        recorder.log(f"follow-up failed: {type(exc).__name__}: {exc}")
        logger.error("round %s follow-up failed\n%s", training_round.pk, traceback.format_exc())
        TrainingRound.objects.filter(pk=training_round.pk).update(
            error=f"after training: {type(exc).__name__}: {exc}"
        )
    finally:
        TrainingRound.objects.filter(pk=training_round.pk).update(following_up=False)
        training_round.refresh_from_db()


def train_prompts_answer(
    *,
    policy: Policy,
    round_label: str,
    limit: int,
    generation: dict[str, Any],
    backend: Backend | None = None,
    recorder: _Recorder | None = None,
) -> tuple[GenerationReport | None, Backend | None]:
    """``policy`` answers up to ``limit`` train prompts, fewest answered first, and the comparisons
    of its answers are queued under ``round_label``. Returns the report (None when no prompt was
    pending) and the backend, loaded only when there was work, so a caller can reuse it."""
    prompts = prompts_least_answered(policy=policy, round_label=round_label, split=Split.TRAIN, limit=limit)
    if not prompts:
        return None, backend
    if recorder is not None:
        recorder.log(
            f"generating {generation['samples']} answers to {len(prompts)} prompts with {policy.name}"
        )
    backend = backend or backend_load(generation["backend"], ModelSpec(policy.location, policy.adapter))
    report = comparisons_generate(
        policy=policy,
        prompts=prompts,
        sampling=sampling_from(generation),
        backend=backend,
        pairs=generation["pairs"],
        round_label=round_label,
        overlap=int(generation["overlap"]),
        on_progress=_progress(recorder, len(prompts), "prompts answered") if recorder else None,
    )
    return report, backend


def _progress(recorder: _Recorder, total: int, what: str) -> Callable[[int, int], None]:
    done = 0

    def progress(batch_prompts: int, tokens: int) -> None:
        nonlocal done
        done += batch_prompts
        recorder.log(f"{done}/{total} {what}")

    return progress


def heldout_answer(
    *,
    policy: Policy,
    sampling: Sampling,
    backend_name: str = "auto",
    backend: Backend | None = None,
    recorder: _Recorder | None = None,
) -> int:
    """One answer from ``policy`` to every held-out (eval) prompt it has not answered yet, under the
    label ``heldout``: generated once per policy, compared with any other policy's. Returns how many
    held-out prompts the policy has answered in all."""
    one = replace(sampling, samples=1)
    pending = list(
        prompts_pending(
            policy=policy, round_label=HELDOUT_LABEL, prompts=Prompt.objects.filter(split=Split.EVAL)
        )
    )
    if pending:
        if recorder is not None:
            recorder.log(f"{policy.name} answers {len(pending)} held-out prompts")
        backend = backend or backend_load(backend_name, ModelSpec(policy.location, policy.adapter))
        responses_generate(
            policy=policy,
            prompts=pending,
            sampling=one,
            round_label=HELDOUT_LABEL,
            backend=backend,
            on_progress=_progress(recorder, len(pending), "held-out prompts answered") if recorder else None,
        )
    return (
        Response.objects.filter(policy=policy, round_label=HELDOUT_LABEL).values("prompt").distinct().count()
    )
