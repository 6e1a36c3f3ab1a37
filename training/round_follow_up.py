"""A round's follow-up: what the worker does with a round's new policy once it is registered.

- Held-out answers: each policy answers every held-out (eval split) prompt once (``Response.heldout``),
  so its answers are generated once and compared with any other policy's (``heldout_answer``).
- Drift: how far the new policy moved, measured on those answers, and the guards that hold it back
  (``round_drift_measure``; the figures are ``training.drift``'s).
- Blind policy-vs-policy comparisons: kind eval, in an evaluation campaign, each with an
  ``Evaluation`` row saying which policy is evaluated against which opponent and which round asked
  for it (``evaluations_queue``).
- ``round_follow_up`` runs them in that order, with the next train prompts' answers between.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate.models import Campaign, Comparison, Kind
from annotate.services.campaigns import campaign_get_or_create
from config.errors import Invalid
from generation.backends import Backend, ModelSpec, Sampling, TokenCallback, backend_load
from generation.models import FinishReason, Policy, Prompt, Response, Split
from generation.services import (
    GenerationReport,
    policy_root,
    prompts_without_heldout_answer,
    responses_generate,
    responses_score,
    scorer_load,
)
from training.answering import Queueing, train_prompts_answer
from training.drift import drift_breaches, drift_summary
from training.errors import RoundCancelled
from training.models import Evaluation, TrainingRound
from training.options import GENERATION_DEFAULTS, GUARD_DEFAULTS, sampling_from
from training.recorder import Recorder

logger = logging.getLogger("prefloop.rounds")

EVAL_PRIORITY = 10  # evaluation campaigns are served before training ones: they decide the leaderboard


# --- Held-out answers and blind comparisons (writes) -----------------------------------------------


def heldout_answer(
    *,
    policy: Policy,
    sampling: Sampling,
    backend_name: str = "auto",
    backend: Backend | None = None,
    on_start: Callable[[int], Callable[[int, int], None] | None] | None = None,
    on_tokens: TokenCallback | None = None,
) -> int:
    """One answer from ``policy`` to every held-out prompt it has not answered yet (``heldout``):
    generated once per policy, compared with any other policy's. ``on_start(n)`` is told how many
    prompts it answers and may return an ``on_progress(prompts, tokens)``. Returns how many held-out
    prompts the policy has answered in all."""
    pending = list(prompts_without_heldout_answer(policy=policy))
    if pending:
        on_progress = on_start(len(pending)) if on_start is not None else None
        backend = backend or backend_load(backend_name, ModelSpec(policy.location, policy.adapter))
        responses_generate(
            policy=policy,
            prompts=pending,
            sampling=replace(sampling, samples=1),
            backend=backend,
            heldout=True,
            on_progress=on_progress,
            on_tokens=on_tokens,
        )
    return Response.objects.filter(policy=policy, heldout=True).values("prompt").distinct().count()


def evaluation_campaign(*, name: str) -> Campaign:
    """The campaign blind eval comparisons go to (created open to all, served before training ones)."""
    return campaign_get_or_create(name=name[:100], priority=EVAL_PRIORITY)


@transaction.atomic
def evaluations_queue(
    *,
    policy: Policy,
    opponent: Policy,
    campaign: Campaign,
    training_round: TrainingRound | None = None,
    overlap: int | None = None,
    seed: int = 0,
) -> GenerationReport:
    """Blind eval comparisons of ``policy``'s held-out answers against ``opponent``'s, one per prompt
    both answered, sides in random order, each with its Evaluation row. Prompts already evaluated
    for this pair in ``campaign`` are skipped (a rerun adds nothing); identical answers are counted,
    not compared."""
    if policy.pk == opponent.pk:
        raise Invalid(f"a policy is not evaluated against itself ({policy.name!r})")
    report = GenerationReport()
    rng = random.Random(seed)
    theirs = {r.prompt_id: r for r in Response.objects.filter(policy=opponent, heldout=True).order_by("-id")}
    done = set(
        Evaluation.objects.filter(
            policy=policy, opponent=opponent, comparison__campaign=campaign
        ).values_list("comparison__prompt_id", flat=True)
    )
    mine: dict[int, Response] = {}
    for response in Response.objects.filter(policy=policy, heldout=True).order_by("id"):
        mine.setdefault(response.prompt_id, response)
    for prompt_id, response in mine.items():
        other = theirs.get(prompt_id)
        if other is None or prompt_id in done:
            continue
        if response.text == other.text:
            report.extra["identical answers"] += 1
            continue
        pair = [response, other]
        rng.shuffle(pair)
        comparison = Comparison.objects.create(
            prompt_id=prompt_id,
            response_a=pair[0],
            response_b=pair[1],
            campaign=campaign,
            kind=Kind.EVAL,
            overlap=overlap or campaign.overlap,
        )
        Evaluation.objects.create(
            comparison=comparison, policy=policy, opponent=opponent, training_round=training_round
        )
        report.extra["comparisons"] += 1
    return report


# --- The round as the worker runs it ---------------------------------------------------------------


def round_follow_up(training_round: TrainingRound, recorder: Recorder) -> None:
    """After a successful round, with its new policy: answer the held-out prompts once, measure its
    drift there (``round_drift_measure``) and hold it back if it is beyond the round's guards; unless
    held back, answer the next ``then_generate`` train prompts (fewest answered first) and queue their
    comparisons in the round's campaign; queue blind eval comparisons against the parent in its
    evaluation campaign either way (they are the evidence staff promote on). A failure here leaves
    the round succeeded (its policy is good) and says so in the log and the error.
    """
    policy = training_round.output_policy
    assert policy is not None
    gen = {**GENERATION_DEFAULTS, **training_round.generation}
    sampling = sampling_from(gen)
    parent = training_round.policy
    try:
        recorder.check_cancelled()
        heldout_prompts = Prompt.objects.filter(split=Split.EVAL).exists()
        # One load of the new policy serves its held-out answers, its drift and its train answers;
        # none when there is nothing to do.
        backend = (
            backend_load(gen["backend"], ModelSpec(policy.location, policy.adapter))
            if heldout_prompts or training_round.then_generate
            else None
        )
        if heldout_prompts and _heldout(policy, sampling, gen["backend"], recorder, backend):
            _heldout(parent, sampling, gen["backend"], recorder)
            round_drift_measure(
                training_round, recorder, backend=backend, sampling=sampling, backend_name=gen["backend"]
            )
            policy.refresh_from_db()
        if training_round.then_generate and policy.held_back:
            recorder.log(f"{policy.name} is held back: no answers to train prompts until staff promote it")
        elif training_round.then_generate:
            campaign = campaign_get_or_create(
                name=f"Round {training_round.pk} answers", pair_budget=gen["budget"]
            )
            TrainingRound.objects.filter(pk=training_round.pk).update(campaign=campaign)
            report, backend = train_prompts_answer(
                policy=policy,
                campaign=campaign,
                limit=training_round.then_generate,
                sampling=sampling,
                queueing=Queueing.of(gen, beta=float(training_round.hyperparameters.get("beta", 0.1))),
                backend=backend,
                on_start=lambda n: _generating(recorder, policy, gen["samples"], n),
                on_tokens=recorder.meter(f"{policy.name} answering"),
            )
            if report is not None:
                recorder.log(
                    f"queued {report.extra.get('comparisons', 0)} comparisons in campaign {campaign.name!r} "
                    f"{pairing_notes(gen['pairs'], report)}"
                )
        if Response.objects.filter(policy=policy, heldout=True).exists():
            # blind: annotators see the campaign's name, so it names no policy (the round's FK says which)
            campaign = evaluation_campaign(name=f"Round {training_round.pk} blind evaluation")
            TrainingRound.objects.filter(pk=training_round.pk).update(eval_campaign=campaign)
            report = evaluations_queue(
                policy=policy,
                opponent=parent,
                campaign=campaign,
                training_round=training_round,
                overlap=gen["overlap"],
                seed=int(gen["seed"]),
            )
            recorder.log(
                f"queued {report.extra.get('comparisons', 0)} blind eval comparisons of {policy.name} "
                f"against {parent.name} in campaign {campaign.name!r}"
            )
    except RoundCancelled:
        recorder.log("follow-up cancelled by staff (what was generated so far is kept)")
    except Exception as exc:
        recorder.log(f"follow-up failed: {type(exc).__name__}: {exc}")
        logger.error("round %s follow-up failed\n%s", training_round.pk, traceback.format_exc())
        TrainingRound.objects.filter(pk=training_round.pk).update(
            error=f"after training: {type(exc).__name__}: {exc}"
        )
    finally:
        # its end is the worker's last sign of life: the round page says when the follow-up ended
        TrainingRound.objects.filter(pk=training_round.pk).update(
            following_up=False, heartbeat_at=timezone.now()
        )
        training_round.refresh_from_db()


def round_drift_measure(
    training_round: TrainingRound,
    recorder: Recorder,
    *,
    backend: Backend | None,
    sampling: Sampling,
    backend_name: str = "auto",
) -> dict[str, Any]:
    """How far the round's new policy drifted, on its held-out answers (``training.drift``): KL from
    the round's reference, fluency under the base of its lineage and under the reference against
    their own answers', outliers beyond the base's 95th NLL percentile, repetition, length, endings.
    Stored on the round (and each answer's ``base_nll``); a policy beyond the round's guards is held
    back with the reasons. ``backend``: the new policy's, already loaded."""
    policy = training_round.output_policy
    assert policy is not None
    base, reference = policy_root(policy), training_round.reference
    for other in {base, reference} - {policy}:
        _heldout(other, sampling, backend_name, recorder)
    mine = list(
        Response.objects.filter(policy=policy, heldout=True).select_related("prompt").order_by("prompt")
    )
    theirs = {
        who.pk: list(
            Response.objects.filter(policy=who, heldout=True).select_related("prompt").order_by("prompt")
        )
        for who in {base, reference}
    }
    recorder.log(
        f"measuring drift on {len(mine)} held-out answers (base {base.name}, reference {reference.name})"
    )
    new_self = responses_score(scorer_load(policy, backend), mine)
    base_scorer = scorer_load(base)
    new_under_base, base_own = (
        responses_score(base_scorer, mine),
        responses_score(base_scorer, theirs[base.pk]),
    )
    if reference.pk == base.pk:
        new_under_reference, reference_own = new_under_base, base_own
    else:
        del base_scorer
        reference_scorer = scorer_load(reference)
        new_under_reference = responses_score(reference_scorer, mine)
        reference_own = responses_score(reference_scorer, theirs[reference.pk])
    for answer, value in zip(mine, new_under_base, strict=True):
        answer.base_nll = -value
    for answer, value in zip(theirs[base.pk], base_own, strict=True):
        answer.base_nll = -value
    Response.objects.bulk_update([*mine, *theirs[base.pk]], ["base_nll"])
    drift = drift_summary(
        new_self=new_self,
        new_under_reference=new_under_reference,
        new_under_base=new_under_base,
        base_own=base_own,
        reference_own=reference_own,
        new_texts=[a.text for a in mine],
        base_texts=[a.text for a in theirs[base.pk]],
        new_tokens=[a.token_count or 0 for a in mine],
        new_ended=[a.finish_reason == FinishReason.STOP for a in mine],
    )
    drift.update(base=base.name, reference=reference.name)
    TrainingRound.objects.filter(pk=training_round.pk).update(drift=drift)
    training_round.drift = drift
    recorder.log(
        f"drift: KL {drift['kl']:.3f}/token from {reference.name}; NLL under {base.name} {drift['nll_base']:.2f} "
        f"({drift['fluency_ratio']:.2f}x its own {drift['nll_base_own']:.2f}); {drift['beyond_p95']:.0%} beyond its "
        f"95th percentile; repetition {drift['repetition']:.2f}; {drift['stopped']:.0%} ended by the model"
    )
    breaches = drift_breaches(drift, {**GUARD_DEFAULTS, **training_round.guards})
    if breaches:
        reason = "; ".join(breaches)
        Policy.objects.filter(pk=policy.pk).update(held_back=True, held_back_reason=reason)
        recorder.log(f"held back {policy.name}: {reason}")
    return drift


def pairing_notes(pairs: str, report: GenerationReport) -> str:
    """``(uncertain pairs; pairs left out by the budget: 12)``: how a generation's pairs were chosen."""
    notes = "".join(f"; {k}: {v}" for k, v in report.extra.items() if k != "comparisons" and v)
    return f"({pairs} pairs{notes})"


def _generating(recorder: Recorder, policy: Policy, samples: int, n: int) -> Callable[[int, int], None]:
    recorder.log(f"generating {samples} answers to {n} prompts with {policy.name}")
    return recorder.progress(n, "prompts answered")


def _heldout(
    policy: Policy, sampling: Sampling, backend_name: str, recorder: Recorder, backend: Backend | None = None
) -> int:
    def start(n: int) -> Callable[[int, int], None]:
        recorder.log(f"{policy.name} answers {n} held-out prompts")
        return recorder.progress(n, "held-out prompts answered")

    return heldout_answer(
        policy=policy,
        sampling=sampling,
        backend_name=backend_name,
        backend=backend,
        on_start=start,
        on_tokens=recorder.meter(f"{policy.name} answering held-out prompts"),
    )
