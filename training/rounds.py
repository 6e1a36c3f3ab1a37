"""A round's lifecycle before and around the worker: the checks, creating it, cancelling it, and
ending the rounds whose worker died.

``round_create`` runs in a request or a command: it checks everything that can be checked without a
model (the policy can be trained, the settings are valid, there are enough pairs) and creates the
queued round. ``tasks.round_start`` adds enqueueing it; ``execution.round_execute`` is what
a worker runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotate.models import AIJudge
from annotate.selectors import AGGREGATIONS, ExportReport, dataset_rows, preference_rows
from generation.models import LocationKind, Policy, Prompt, Split
from generation.services import policy_root
from training.errors import NotEnoughPairs, NotTrainable, RoundFinished
from training.models import RoundStatus, TrainingRound, silent_before
from training.options import (
    REFERENCE_MODES,
    dpo_config,
    early_stop_fields,
    generation_settings,
    guard_settings,
    round_hyperparameters,
)


def policy_trainable_problem(policy: Policy) -> str | None:
    """Why ``policy`` cannot be the starting point of a round, or None."""
    if policy.location_kind == LocationKind.GGUF:
        return (
            f"policy {policy.name!r} is a GGUF file; register a Hugging Face directory to train it "
            "(register_policy --embedded materialises the embedded model as one)"
        )
    if policy.adapter:
        return f"policy {policy.name!r} is a LoRA adapter on a base; register its merged model to train it"
    if policy.held_back:
        return f"policy {policy.name!r} is held back ({policy.held_back_reason}); staff must promote it first"
    return None


def round_pairs_count(
    *, policy: Policy, unpaired: bool = False, ai_judges: Sequence[AIJudge] = ()
) -> tuple[int, Counter[str]]:
    """How many preference pairs the policy's judged comparisons give now (``unpaired``: KTO's
    examples, thumbs items included; ``ai_judges``: their verdicts counted too), and what is left out."""
    report = ExportReport()
    extra: dict[str, Any] = {"ai_judges": ai_judges} if ai_judges else {}
    if unpaired:
        for _ in dataset_rows(
            report=report, dataset_type="unpaired", policy=policy, confidence=False, **extra
        ):
            pass
        return report.rows or 0, report.excluded
    for _ in preference_rows(report=report, policy=policy, confidence=False, **extra):
        pass
    return report.written, report.excluded


@dataclass(frozen=True)
class RoundRequest:
    """What a round is asked to do: the one list of a round's settings. The start form, the API and
    ``train_round`` build one; ``round_create`` checks it; a retry asks a round's own again."""

    policy: Policy
    reference: Policy | None = None  # None: by reference_mode
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # DPOConfig fields (training.options)
    min_pairs: int | None = None  # None: PREFLOOP_MIN_PAIRS
    then_generate: int = 0  # train prompts the new policy answers next
    generation: dict[str, Any] = field(default_factory=dict)  # sampling of those answers
    guards: dict[str, Any] = field(default_factory=dict)  # drift budgets
    reference_mode: str = ""  # parent (rolling, the default) or base (anchored at the lineage's base)
    aggregation: str = "majority"  # how a comparison's judgments become its label
    ai_judges: tuple[AIJudge, ...] = ()  # AI judges whose verdicts count beside people's (asked for)

    @classmethod
    def of(cls, training_round: TrainingRound) -> RoundRequest:
        """The request ``training_round`` was made from, as it was stored (what a retry asks again)."""
        return cls(
            policy=training_round.policy,
            reference=training_round.reference,
            hyperparameters=training_round.hyperparameters,
            min_pairs=training_round.min_pairs,
            then_generate=training_round.then_generate,
            generation=training_round.generation,
            guards=training_round.guards,
            aggregation=training_round.aggregation,
            ai_judges=tuple(training_round.ai_judges.all()),
        )


@transaction.atomic
def round_create(*, request: RoundRequest, started_by: AbstractBaseUser | None = None) -> TrainingRound:
    """A queued round, after every check that needs no model: trainable policy (not held back) and
    reference, valid settings and guards (``training.options``), at least ``min_pairs`` pairs
    (default ``PREFLOOP_MIN_PAIRS``). ``reference_mode``: ``parent`` (rolling: the reference is the
    starting policy, the default) or ``base`` (anchored at the base of its lineage); an explicit
    ``reference`` wins. ``aggregation``: how each comparison's judgments become its label
    (``majority`` or ``dawid-skene``: weighted by each annotator's estimated reliability)."""
    policy, aggregation, reference_mode = request.policy, request.aggregation, request.reference_mode
    then_generate, min_pairs = request.then_generate, request.min_pairs
    if aggregation not in AGGREGATIONS:
        raise NotTrainable(f"aggregation must be one of {', '.join(AGGREGATIONS)} (got {aggregation!r})")
    if reference_mode not in REFERENCE_MODES:
        raise NotTrainable(
            f"reference_mode must be one of {', '.join(REFERENCE_MODES)} (got {reference_mode!r})"
        )
    reference = request.reference or (policy_root(policy) if reference_mode == "base" else policy)
    for candidate in {policy, reference}:
        problem = policy_trainable_problem(candidate)
        if problem:
            raise NotTrainable(problem)
    try:
        hyperparameters = round_hyperparameters(dict(request.hyperparameters or {}))
        # Sampling settings serve the held-out answers too, so they are kept even without then_generate.
        generation = generation_settings(request.generation or {})
        guards = guard_settings(request.guards or {})
        early_stop = early_stop_fields(
            hyperparameters, guards=guards, generation=generation, prompts_path="-"
        )
        dpo_config(hyperparameters, policy_path="-", data_path="-", output_dir="-", **early_stop)
    except (TypeError, ValueError) as exc:
        raise NotTrainable(str(exc)) from exc
    if early_stop and not Prompt.objects.filter(split=Split.EVAL).exists():
        raise NotTrainable("the early stop (kl_every) needs held-out prompts: import some with --split eval")
    if then_generate < 0:
        raise NotTrainable(f"then_generate must be 0 or more (got {then_generate})")
    needed = settings.PREFLOOP_MIN_PAIRS if min_pairs is None else min_pairs
    if needed < 1:
        raise NotTrainable(f"min_pairs must be at least 1 (got {needed})")
    unpaired = hyperparameters.get("loss") == "kto"
    pairs, excluded = round_pairs_count(policy=policy, unpaired=unpaired, ai_judges=request.ai_judges)
    if pairs < needed:
        left_out = ", ".join(f"{reason}: {n}" for reason, n in sorted(excluded.items())) or "none"
        what = "unpaired examples (KTO: pairs and thumbs)" if unpaired else "preference pairs"
        raise NotEnoughPairs(
            f"policy {policy.name!r} has {pairs} {what} from judged comparisons; a round needs "
            f"at least {needed} (left out: {left_out})",
            pairs=pairs,
            needed=needed,
        )
    created = TrainingRound.objects.create(
        policy=policy,
        reference=reference,
        hyperparameters=hyperparameters,
        min_pairs=needed,
        then_generate=then_generate,
        generation=generation,
        guards=guards,
        aggregation=aggregation,
        started_by=started_by,
    )
    created.ai_judges.set(request.ai_judges)
    return created


def round_cancel(*, training_round: TrainingRound) -> TrainingRound:
    """Cancel a round: a queued one at once; a running one at the worker's next step (or at once if
    its worker has shown no sign of life for ``PREFLOOP_ROUND_STALE_SECONDS``). A succeeded round
    still following up (generating its new policy's answers) stays succeeded: its follow-up stops at
    the next progress report, keeping what was generated."""
    now = timezone.now()
    with transaction.atomic():
        current = TrainingRound.objects.select_for_update().get(pk=training_round.pk)
        if current.following_up:
            current.cancel_requested = True
            if current.is_silent:
                current.following_up = False
                current.log += f"{now:%H:%M:%S} follow-up cancelled: the worker stopped answering\n"
            current.save(update_fields=["cancel_requested", "following_up", "log"])
            return current
        if current.is_finished:
            raise RoundFinished(f"round {current.pk} has already {current.status}", round=current.pk)
        if current.status == RoundStatus.QUEUED or current.is_silent:
            if current.status == RoundStatus.RUNNING:
                current.log += f"{now:%H:%M:%S} cancelled: the worker stopped answering\n"
            current.status, current.finished_at, current.cancel_requested = RoundStatus.CANCELLED, now, True
        else:
            current.cancel_requested = True
        current.save(update_fields=["status", "finished_at", "cancel_requested", "log"])
    return current


def round_abandon(*, training_round: TrainingRound, why: str) -> TrainingRound:
    """A round whose process died: failed if it had not finished training, else (its policy is good)
    its follow-up is marked stopped. Nothing is done to a round that ended properly."""
    now = timezone.now()
    line = f"{now:%H:%M:%S} stopped: {why}\n"
    with transaction.atomic():
        current = TrainingRound.objects.select_for_update().get(pk=training_round.pk)
        if current.status in (RoundStatus.QUEUED, RoundStatus.RUNNING):
            current.status, current.finished_at = RoundStatus.FAILED, now
            current.error, current.log = f"the round stopped: {why}", current.log + line
        elif current.following_up:
            current.following_up = False
            current.error, current.log = f"after training: {why}", current.log + line
        else:
            return current
        current.save(update_fields=["status", "finished_at", "following_up", "error", "log"])
    return current


def rounds_reap_stale(*, now: datetime | None = None) -> list[TrainingRound]:
    """Rounds whose worker died without a word (killed with SIGKILL, the machine lost): running, or
    following up, with no heartbeat for ``PREFLOOP_ROUND_STALE_SECONDS``. Each is abandoned (failed,
    nothing registered; or its follow-up stopped) with the reason in its log. Called by every worker
    before it runs a round and by a round's start, so a dead round does not stay "running" for long;
    the pages only show it as silent (``TrainingRound.is_silent``: a GET never writes), and Cancel
    ends it at once. Returns the rounds it ended."""
    stale = silent_before(now)
    silent = TrainingRound.objects.filter(
        Q(status=RoundStatus.RUNNING) | Q(following_up=True),
    ).filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale))
    seconds = settings.PREFLOOP_ROUND_STALE_SECONDS
    return [
        round_abandon(
            training_round=found, why=f"its worker stopped answering (no heartbeat for {seconds} s)"
        )
        for found in silent
    ]
