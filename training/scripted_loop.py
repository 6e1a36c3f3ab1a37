"""The loop, scripted (``loop_run``, which ``manage.py run_loop`` prints): the base answers train
prompts → simulated judges judge them → a round trains and follows up → the judges judge its blind
evaluations → the next round starts from the new policy. Rounds run as a worker runs them
(``execution.round_execute``); this module only drives them and reads their results.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Avg
from django.db.models.functions import Length
from django.utils.text import Truncator

from annotate.models import Campaign, Choice
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.simulation import comparisons_simulate
from config.errors import Invalid
from generation.backends import ModelSpec, backend_load
from generation.models import FinishReason, Policy, Response
from generation.services import (
    TokenMeter,
    policy_register_embedded,
)
from training.answering import Queueing, train_prompts_answer
from training.execution import round_execute
from training.leaderboard import check_win_rate, controlled_head_to_head, head_to_head, policy_games
from training.models import Evaluation, RoundStatus, TrainingRound
from training.options import GENERATION_DEFAULTS, sampling_from
from training.round_follow_up import evaluation_campaign, evaluations_queue, heldout_answer, pairing_notes
from training.rounds import RoundRequest, round_create
from training.selectors import heldout_least_likely
from training.stats import (
    WinRate,
)

EVERYTHING = 10**9


@dataclass
class LoopReport:
    rounds: list[dict[str, Any]] = field(default_factory=list)
    minutes: float = 0.0


def _rate_row(rate: WinRate | None, opponent: Policy) -> dict[str, Any] | None:
    return rate and {
        "opponent": opponent.name,
        "rate": rate.rate,
        "low": rate.low,
        "high": rate.high,
        "wins": rate.wins,
        "ties": rate.ties,
        "losses": rate.losses,
    }


def _rate_text(rate: dict[str, Any] | None) -> str:
    if rate is None:
        return "no games"
    return (
        f"{rate['rate']:.3f} [95% {rate['low']:.3f}, {rate['high']:.3f}] "
        f"({rate['wins']} won, {rate['ties']} tied, {rate['losses']} lost)"
    )


# A round whose judges tie on more than this share of its pairs learns from few of them.
TIED_WARNING_SHARE = 0.5


def tied_warning(oracle: str, verdicts: Counter[str]) -> str | None:
    """A warning when the judges tied on most of a round's pairs: they find little to choose between
    the answers (a judge the policy already satisfies), so the round learns from few pairs and a
    policy cannot beat answers that already satisfy the judge by much. None otherwise."""
    judged, tied = sum(verdicts.values()), verdicts.get(Choice.TIE, 0)
    if not judged or tied / judged <= TIED_WARNING_SHARE:
        return None
    return (
        f"warning: {oracle} tied {tied} of {judged} judgments ({tied / judged:.0%}): the judges find little to "
        "choose between these answers, so the round learns from few pairs and its win rate over answers "
        "that already satisfy them cannot rise far above 0.5"
    )


# run_loop prints and reports each round's least likely held-out answers: the drift figures' evidence.
LEAST_LIKELY_SHOWN = 3


def _sft(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """A preference round's settings for its SFT round: loss sft, no RPO (it anchors pairs)."""
    return {**{k: v for k, v in hyperparameters.items() if k != "rpo_alpha"}, "loss": "sft"}


def _base_answers(
    *,
    base: Policy,
    campaign: Campaign,
    prompts: int,
    gen: dict[str, Any],
    sampling: Any,
    say: Callable[[str], None],
) -> None:
    """The base answers up to ``prompts`` train prompts (queued as comparisons in ``campaign``) and
    every held-out prompt, with one loaded model."""

    def meter(what: str) -> TokenMeter:
        return TokenMeter(lambda tokens, rate: say(f"  {what}: {tokens} tokens, {rate:.0f} tokens/s"))

    backend = backend_load(gen["backend"], ModelSpec(base.location, base.adapter))

    say(f"  {base.name} answers up to {prompts} train prompts ({gen['samples']} answers each)")
    answered, _ = train_prompts_answer(
        policy=base,
        campaign=campaign,
        limit=prompts,
        sampling=sampling,
        queueing=Queueing.of(gen),
        backend=backend,
        on_tokens=meter(f"{base.name} answering"),
    )
    if answered is not None:
        say(
            f"  {base.name} answered {answered.prompts} prompts: {answered.extra['comparisons']} comparisons "
            f"{pairing_notes(gen['pairs'], answered)}"
        )
    heldout = heldout_answer(
        policy=base,
        sampling=sampling,
        backend=backend,
        on_tokens=meter(f"{base.name} answering held-out prompts"),
    )
    backend.close()  # a vLLM server started for the base stops here
    if not heldout:
        raise Invalid("no held-out (eval split) prompts: import some with --split eval")
    say(f"  {base.name} answered {heldout} held-out prompts")


def _rates_add(
    row: dict[str, Any],
    *,
    finished: TrainingRound,
    new: Policy,
    current: Policy,
    base: Policy,
    check: str,
    seed: int,
    say: Callable[[str], None],
) -> None:
    """The round's win rates on held-out prompts (against the previous policy and the base; raw,
    length-controlled, and by a second judge with ``check``) into ``row``, each said as it comes."""
    for key, opponent in (("vs_previous", current), ("vs_base", base)):
        games = policy_games(
            include_simulated=True,
            evaluations=Evaluation.objects.filter(training_round=finished, policy=new, opponent=opponent),
        )
        rate = head_to_head(games, policy=new.pk, opponent=opponent.pk, seed=seed)
        row[key] = _rate_row(rate, opponent)
        controlled = controlled_head_to_head(games, policy=new.pk, opponent=opponent.pk, seed=seed)
        if row[key] is not None and controlled is not None:
            row[key]["length_controlled"] = controlled
        if key == "vs_previous" or current.pk != base.pk:  # round 1: the previous is the base
            say(f"  {new.name} over {opponent.name} on held-out prompts: {_rate_text(row[key])}")
            if controlled is not None:
                say(
                    f"    length-controlled: {controlled['rate']:.3f} [{controlled['low']:.3f}, "
                    f"{controlled['high']:.3f}] (the judges' length coefficient "
                    f"{controlled['length_coefficient']:.2f})"
                )
        if check:
            second = check_win_rate(
                evaluations=Evaluation.objects.filter(training_round=finished),
                policy=new,
                opponent=opponent,
                check=check,
                seed=seed,
            )
            row.setdefault("check", {"judge": check})[key] = _rate_row(second, opponent)
            if key == "vs_previous" or current.pk != base.pk:
                say(f"    judged by {check} instead: {_rate_text(row['check'][key])}")


def _heldout_add(row: dict[str, Any], *, new: Policy, base: Policy, say: Callable[[str], None]) -> None:
    """What the new policy's held-out answers look like (length, endings) and its least likely ones
    under the base, into ``row``, each said."""
    answers = Response.objects.filter(policy=new, heldout=True)
    row["heldout_answers"] = {
        "count": answers.count(),
        "mean_chars": round(answers.aggregate(n=Avg(Length("text")))["n"] or 0, 1),
        "stopped": answers.filter(finish_reason=FinishReason.STOP).count(),
    }
    say(
        f"  {new.name}'s held-out answers: {row['heldout_answers']['mean_chars']} characters on "
        f"average, {row['heldout_answers']['stopped']} of {row['heldout_answers']['count']} ended by "
        "the model (the rest hit --max-new-tokens)"
    )
    row["least_likely"] = [
        {
            "prompt": str(unlikely.answer.prompt),
            "answer": unlikely.answer.text,
            "base_nll": unlikely.answer.base_nll,
            "beyond_p95": unlikely.beyond_p95,
            "base_answer": unlikely.base_answer.text if unlikely.base_answer else None,
        }
        for unlikely in heldout_least_likely(policy=new, limit=LEAST_LIKELY_SHOWN)
    ]
    if row["least_likely"]:
        say(f"  {new.name}'s least likely held-out answers under {base.name} (NLL per token):")
        for item in row["least_likely"]:
            excerpt = Truncator(" ".join(item["answer"].split())).chars(120)
            say(f"    {item['base_nll']:.2f} {item['prompt']!r} -> {excerpt!r}")


def loop_run(
    *,
    rounds: int,
    oracle: str,
    prompts: int = 32,
    base: Policy | None = None,
    noise: float = 0.0,
    judge_flips: Sequence[float] = (),
    judge_seed: int = 0,
    hyperparameters: dict[str, Any] | None = None,
    generation: dict[str, Any] | None = None,
    guards: dict[str, Any] | None = None,
    reference_mode: str = "",
    aggregation: str = "majority",
    check: str = "",
    sft_first: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> LoopReport:
    """The whole loop, scripted, for ``rounds`` rounds: the base answers ``prompts`` train prompts →
    simulated judges (``oracle``, with ``noise``; ``judge_flips``: one judge per rate, each reversing
    that share of its verdicts) judge them → a round trains → the new policy's
    held-out answers meet the previous policy's and the base's in blind comparisons → the judges
    judge those (no noise) → the next round starts from the new policy. Returns one row per round
    (win rates with 95% bootstrap intervals, the held-out answers' length and endings); ``say`` is
    told what happens as it happens. ``sft_first``: one supervised round on the judges' chosen answers
    before the ``rounds`` preference rounds, for a base that is not yet an assistant."""
    if rounds < 1 or prompts < 1:
        raise Invalid("rounds and prompts must be at least 1")
    started = time.perf_counter()
    hyperparameters = hyperparameters or {}
    generation = generation or {}
    gen = {**GENERATION_DEFAULTS, **generation}
    sampling = sampling_from(gen)
    base = base or policy_register_embedded()
    say(f"base policy {base.name}; oracle {oracle}; {rounds} round(s) of {prompts} prompts")

    def simulate(campaign: Campaign, noise: float, flips: Sequence[float] = ()) -> Counter[str]:
        report = comparisons_simulate(
            oracle_name=oracle,
            count=EVERYTHING,
            noise=noise,
            seed=judge_seed,
            campaign=campaign,
            flips=flips,
        )
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(report.verdicts.items())) or "none"
        flipped = f"; {report.flipped} reversed by the judges' flip rates" if flips else ""
        say(f"  simulated {oracle}: {report.judged} judgments in {campaign.name!r} ({verdicts}){flipped}")
        return report.verdicts

    campaign = campaign_get_or_create(name=f"{base.name} answers (run_loop)"[:100])
    _base_answers(base=base, campaign=campaign, prompts=prompts, gen=gen, sampling=sampling, say=say)

    current, report = base, LoopReport()
    plan = (["sft"] if sft_first else []) + ["preference"] * rounds
    for number, method in enumerate(plan, start=1):
        say(f"round {number}/{len(plan)}" + (" (SFT on the chosen answers)" if method == "sft" else ""))
        verdicts = simulate(campaign, noise, judge_flips)
        judged = sum(verdicts.values())
        if warning := tied_warning(oracle, verdicts):
            say(f"  {warning}")
        created = round_create(
            request=RoundRequest(
                policy=current,
                hyperparameters=_sft(hyperparameters) if method == "sft" else hyperparameters,
                min_pairs=1,
                then_generate=prompts if number < len(plan) else 0,
                generation=generation,
                guards=guards or {},
                reference_mode=reference_mode,
                aggregation=aggregation,
            )
        )
        finished = round_execute(round_id=created.pk, on_progress=lambda line: say(f"    {line}"))
        if finished.status != RoundStatus.SUCCEEDED or finished.output_policy is None:
            raise Invalid(f"round {finished.pk} {finished.status}: {finished.error}")
        new = finished.output_policy
        if finished.eval_campaign is not None:
            simulate(finished.eval_campaign, 0.0)
        if current.pk != base.pk:
            versus_base = evaluation_campaign(name=f"Round {finished.pk} blind evaluation 2")
            evaluations_queue(
                policy=new, opponent=base, campaign=versus_base, training_round=finished, seed=judge_seed
            )
            simulate(versus_base, 0.0)
        last = finished.metrics.order_by("-step").first()
        row: dict[str, Any] = {
            "round": number,
            "method": finished.hyperparameters.get("loss", "sigmoid"),
            "training_round": finished.pk,
            "policy": new.name,
            "pairs": finished.pairs,
            "judgments": judged,
            "verdicts": {str(choice): count for choice, count in sorted(verdicts.items())},
            "aggregation": finished.aggregation,
            "final_metrics": last.values if last else {},
        }
        _rates_add(
            row, finished=finished, new=new, current=current, base=base, check=check, seed=judge_seed, say=say
        )
        _heldout_add(row, new=new, base=base, say=say)
        row["drift"] = finished.drift
        if finished.kl_checks:
            row["kl_checks"], row["stopped_early"] = finished.kl_checks, finished.stopped_early
        if finished.stopped_early:
            stop = finished.stopped_early
            say(
                f"  stopped early at step {stop['step']:.0f}: held-out KL {stop['kl']:.3f} > budget "
                f"{stop['budget']:g}; {new.name} is step {stop['kept_step']:.0f}'s checkpoint"
            )
        new.refresh_from_db()
        row["held_back"] = new.held_back_reason if new.held_back else None
        report.rounds.append(row)
        if new.held_back:
            say(f"  {new.name} is held back ({new.held_back_reason}); the loop stops here")
            break
        current = new
        if finished.campaign is not None:
            campaign = finished.campaign
    report.minutes = round((time.perf_counter() - started) / 60, 1)
    say(f"done in {report.minutes:.1f} min")
    return report
