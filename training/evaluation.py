"""Evaluation: does the loop improve the model? Everything that sets policies against each other.

- Held-out answers: each policy answers every held-out (eval split) prompt once (``Response.heldout``),
  so its answers are generated once and compared with any other policy's.
- Blind policy-vs-policy comparisons: kind eval, in a campaign, each with an ``Evaluation`` row
  saying which policy is evaluated against which opponent and which round asked for it.
- A round's follow-up (what the worker does after training) and the whole round as a task runs it.
- Reads: the games, head-to-head win rates, the Bradley-Terry leaderboard.
- The loop (``loop_run``): generate → simulate → train → evaluate, round after round; ``run_loop``
  parses its options and prints what this returns.
"""

from __future__ import annotations

import logging
import math
import random
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction
from django.db.models import Avg, Prefetch, QuerySet
from django.db.models.functions import Length
from django.utils.text import Truncator

from annotate.models import Campaign, Choice, Comparison, Judgment, Kind, Source
from annotate.oracles import oracle_resolve
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.pairing import train_prompts_answer
from annotate.services.simulation import comparisons_simulate
from config.errors import Invalid
from generation.backends import Backend, ModelSpec, Sampling, TokenCallback, backend_load
from generation.models import FinishReason, Policy, Prompt, Response, Split
from generation.services import (
    GenerationReport,
    TokenMeter,
    policy_register_embedded,
    policy_root,
    prompts_without_heldout_answer,
    responses_generate,
    responses_score,
    scorer_load,
)
from training.drift import drift_breaches, drift_summary
from training.errors import RoundCancelled
from training.models import Evaluation, RoundStatus, TrainingRound
from training.options import GENERATION_DEFAULTS, GUARD_DEFAULTS, sampling_from
from training.rounds import round_create
from training.selectors import heldout_least_likely
from training.stats import (
    ELO_SCALE,
    MIN_RATED_GAMES,
    ControlledFit,
    Game,
    WinRate,
    bootstrap_interval,
    bradley_terry,
    bradley_terry_controlled,
    length_difference,
    win_rate,
)
from training.worker import Recorder, round_run

logger = logging.getLogger("prefloop.rounds")

EVAL_PRIORITY = 10  # evaluation campaigns are served before training ones: they decide the leaderboard
SCORE = {Choice.FIRST: 1.0, Choice.SECOND: 0.0, Choice.TIE: 0.5, Choice.BOTH_BAD: 0.5}


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
                pairs=gen["pairs"],
                overlap=gen["overlap"],
                budget=gen["budget"],
                beta=float(training_round.hyperparameters.get("beta", 0.1)),
                backend=backend,
                on_start=lambda n: _generating(recorder, policy, gen["samples"], n),
                on_tokens=recorder.meter(f"{policy.name} answering"),
            )
            if report is not None:
                recorder.log(
                    f"queued {report.extra.get('comparisons', 0)} comparisons in campaign {campaign.name!r} "
                    f"{_pairing_notes(gen['pairs'], report)}"
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
        TrainingRound.objects.filter(pk=training_round.pk).update(following_up=False)
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


def _pairing_notes(pairs: str, report: GenerationReport) -> str:
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


def round_execute(*, round_id: int, on_progress: Callable[[str], None] | None = None) -> TrainingRound:
    """A queued round, whole: train and register (``worker.round_run``), then, if it succeeded, the
    follow-up. What the task, ``train_round`` and ``run_loop`` call."""
    training_round = round_run(round_id=round_id, on_progress=on_progress)
    if training_round.status == RoundStatus.SUCCEEDED and training_round.following_up:
        round_follow_up(training_round, Recorder(training_round, echo=on_progress))
    return training_round


# --- Reads: games, head-to-head, leaderboard -------------------------------------------------------


def _sources(include_simulated: bool) -> list[str]:
    return [Source.HUMAN, Source.IMPORTED] + ([Source.SIMULATED] if include_simulated else [])


@dataclass(frozen=True)
class PolicyGame:
    comparison_id: int
    a: int  # policy ids: a wrote response_a
    b: int
    score: float  # a's mean score over the comparison's judgments
    length_a: int = 0  # the two answers' lengths in characters (the length-controlled fit's covariate)
    length_b: int = 0


def policy_games(
    *, include_simulated: bool = False, evaluations: QuerySet[Evaluation] | None = None
) -> list[PolicyGame]:
    """Every judged blind eval comparison (or those of ``evaluations``), scored for response_a's policy."""
    evaluations = Evaluation.objects.all() if evaluations is None else evaluations
    judged = Judgment.objects.filter(source__in=_sources(include_simulated)).only("comparison_id", "choice")
    comparisons = (
        Comparison.objects.filter(pk__in=evaluations.values("comparison"))
        .select_related("response_a", "response_b")
        .prefetch_related(Prefetch("judgments", queryset=judged))
        .order_by("id")
    )
    games = []
    for comparison in comparisons:
        choices = [j.choice for j in comparison.judgments.all()]
        if not choices:
            continue
        games.append(
            PolicyGame(
                comparison_id=comparison.pk,
                a=comparison.response_a.policy_id,
                b=comparison.response_b.policy_id,
                score=sum(SCORE[c] for c in choices) / len(choices),
                length_a=len(comparison.response_a.text),
                length_b=len(comparison.response_b.text),
            )
        )
    return games


def head_to_head(games: Iterable[PolicyGame], *, policy: int, opponent: int, seed: int = 0) -> WinRate | None:
    """``policy``'s win rate over ``opponent`` in their games (ties and both-bad count one half)."""
    scores = [g.score if g.a == policy else 1.0 - g.score for g in games if {g.a, g.b} == {policy, opponent}]
    return win_rate(scores, seed=seed)


def _controlled(sample: Sequence[PolicyGame]) -> ControlledFit:
    """The length-controlled fit of ``sample`` (players are policy ids as strings)."""
    return bradley_terry_controlled(
        [Game(str(g.a), str(g.b), g.score) for g in sample],
        [length_difference(g.length_a, g.length_b) for g in sample],
    )


def _implied_rate(rating: float, other: float) -> float:
    """The win rate two Elo-scale ratings imply."""
    return 1.0 / (1.0 + math.exp(-(rating - other) / ELO_SCALE))


def controlled_head_to_head(
    games: Iterable[PolicyGame], *, policy: int, opponent: int, seed: int = 0, resamples: int = 200
) -> dict[str, float] | None:
    """``policy``'s length-controlled win rate over ``opponent`` in their games: the rate their
    ratings imply at equal answer lengths (``stats.bradley_terry_controlled``), with a 95% bootstrap
    interval, and the judges' length coefficient."""
    mine = [g for g in games if {g.a, g.b} == {policy, opponent}]
    if not mine:
        return None

    def rate_of(fit: ControlledFit) -> float:
        return _implied_rate(fit.ratings[str(policy)], fit.ratings[str(opponent)])

    def rate(sample: Sequence[PolicyGame]) -> float:
        return rate_of(_controlled(sample))

    low, high = bootstrap_interval(mine, rate, resamples=resamples, seed=seed)  # type: ignore[arg-type]
    fit = _controlled(mine)  # the point estimate: one fit for the rate and the coefficient
    return {"rate": rate_of(fit), "low": low, "high": high, "length_coefficient": fit.length}


@dataclass
class LeaderboardRow:
    policy: Policy
    rating: float | None
    low: float | None
    high: float | None
    games: int
    versus_parent: WinRate | None
    drift: dict[str, Any] = field(default_factory=dict)  # from the round that trained it
    both_bad: float | None = None  # share of both-bad verdicts in its blind evaluations
    # length-controlled (Bradley-Terry with the answers' length difference as a covariate): the rating
    # at equal lengths with its interval, and the win rate over the parent that rating implies
    lc_rating: float | None = None
    lc_low: float | None = None
    lc_high: float | None = None
    lc_versus_parent: tuple[float, float, float] | None = None  # rate, low, high
    length_coefficient: tuple[float, float, float] | None = None  # γ and its interval (every row alike)


def both_bad_rates(*, include_simulated: bool = False, policy: Policy | None = None) -> dict[int, float]:
    """Per evaluated policy (or ``policy`` alone), the share of its blind eval judgments that found
    both answers bad."""
    judged = Judgment.objects.filter(
        source__in=_sources(include_simulated), comparison__evaluation__isnull=False
    )
    if policy is not None:
        judged = judged.filter(comparison__evaluation__policy=policy)
    judged = judged.values_list("comparison__evaluation__policy", "choice")
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for policy_id, choice in judged:
        counts[policy_id][0] += choice == Choice.BOTH_BAD
        counts[policy_id][1] += 1
    return {policy_id: bad / total for policy_id, (bad, total) in counts.items()}


def leaderboard(
    *, include_simulated: bool = False, resamples: int = 200, seed: int = 0
) -> list[LeaderboardRow]:
    """Bradley-Terry ratings (Elo scale, centred on 1000) with 95% bootstrap intervals (games
    resampled with replacement, ratings refitted), and each policy's win rate over its parent; beside
    them the length-controlled fit (``stats.bradley_terry_controlled``: the length difference of the
    two answers as a covariate), its ratings, the win rate over the parent they imply at equal
    lengths, and the judges' length coefficient, each with the same bootstrap's interval."""
    games = policy_games(include_simulated=include_simulated)
    policies = list(Policy.objects.select_related("parent", "trained_by").order_by("id"))
    both_bad = both_bad_rates(include_simulated=include_simulated)

    def fit(sample: Sequence[PolicyGame]) -> dict[str, float]:
        return bradley_terry([Game(str(g.a), str(g.b), g.score) for g in sample])

    ratings, controlled = fit(games), _controlled(games)
    draws: dict[str, list[float]] = defaultdict(list)
    lc_draws: list[ControlledFit] = []
    rng = random.Random(seed)
    for _ in range(resamples if games else 0):
        sample = [games[rng.randrange(len(games))] for _ in games]
        for player, value in fit(sample).items():
            draws[player].append(value)
        lc_draws.append(_controlled(sample))

    def interval(values: list[float]) -> tuple[float, float] | tuple[None, None]:
        spread = sorted(values)
        if not spread:
            return None, None
        return spread[int(0.025 * (len(spread) - 1))], spread[int(0.975 * (len(spread) - 1) + 0.5)]

    length_coefficient = (controlled.length, *interval([d.length for d in lc_draws])) if games else None
    played = Counter(p for g in games for p in (g.a, g.b))
    rows = []
    for policy in policies:
        key = str(policy.pk)
        rated = played.get(policy.pk, 0) >= MIN_RATED_GAMES  # else too few games for an honest interval
        low, high = interval(draws.get(key, []) if rated else [])
        rows.append(
            LeaderboardRow(
                policy=policy,
                rating=ratings.get(key),
                low=low,
                high=high,
                games=played.get(policy.pk, 0),
                versus_parent=(
                    head_to_head(games, policy=policy.pk, opponent=policy.parent_id)
                    if policy.parent_id
                    else None
                ),
                drift=getattr(getattr(policy, "trained_by", None), "drift", {}) or {},
                both_bad=both_bad.get(policy.pk),
            )
        )
        row = rows[-1]
        row.lc_rating = controlled.ratings.get(key)
        row.lc_low, row.lc_high = interval(
            [d.ratings[key] for d in lc_draws if key in d.ratings] if rated else []
        )
        row.length_coefficient = length_coefficient
        parent = str(policy.parent_id)
        if rated and policy.parent_id and row.lc_rating is not None and parent in controlled.ratings:
            implied = [
                _implied_rate(d.ratings[key], d.ratings[parent])
                for d in lc_draws
                if {key, parent} <= set(d.ratings)
            ]
            low, high = interval(implied)
            if low is not None and high is not None:
                row.lc_versus_parent = (_implied_rate(row.lc_rating, controlled.ratings[parent]), low, high)
    rows.sort(key=lambda r: (r.rating is None, -(r.rating or 0.0), r.policy.pk))
    return rows


# --- A second judge ----------------------------------------------------------------------------------

FLUENCY_CHECK = "fluency"
FLUENCY_MARGIN = 0.05  # nats/token: closer than this, the two answers are equally fluent to the base


def _fluency_verdict(first: Response, second: Response) -> str:
    """The answer the base finds likelier per token wins (``base_nll``, measured with drift)."""
    if (
        first.base_nll is None
        or second.base_nll is None
        or abs(first.base_nll - second.base_nll) < FLUENCY_MARGIN
    ):
        return Choice.TIE
    return Choice.FIRST if first.base_nll < second.base_nll else Choice.SECOND


def check_win_rate(
    *, evaluations: QuerySet[Evaluation], policy: Policy, opponent: Policy, check: str, seed: int = 0
) -> WinRate | None:
    """``policy``'s win rate over ``opponent`` on the same blind comparisons, judged by a second
    criterion: ``fluency`` (the base's per-token NLL of each answer: lower wins) or any oracle
    (``annotate.oracles``: a name or a dotted path). Nothing is stored: it reads beside the training
    judge's win rate, so a judge that is being gamed shows in the numbers."""
    oracle = None if check == FLUENCY_CHECK else oracle_resolve(check)
    games = []
    for evaluation in evaluations.filter(policy=policy, opponent=opponent).select_related(
        "comparison__prompt", "comparison__response_a", "comparison__response_b"
    ):
        comparison = evaluation.comparison
        first, second = comparison.response_a, comparison.response_b
        if oracle is None:
            verdict = _fluency_verdict(first, second)
        else:
            verdict = oracle(comparison.prompt.as_messages()[-1]["content"], first.text, second.text)
        if verdict not in SCORE:
            raise Invalid(f"check {check!r} answered {verdict!r}; expected one of {', '.join(SCORE)}")
        games.append(PolicyGame(comparison.pk, first.policy_id, second.policy_id, SCORE[verdict]))
    return head_to_head(games, policy=policy.pk, opponent=opponent.pk, seed=seed)


# --- The loop ----------------------------------------------------------------------------------------

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
    backend = backend_load(gen["backend"], ModelSpec(base.location, base.adapter))

    def meter(what: str) -> TokenMeter:
        return TokenMeter(lambda tokens, rate: say(f"  {what}: {tokens} tokens, {rate:.0f} tokens/s"))

    say(f"  {base.name} answers up to {prompts} train prompts ({gen['samples']} answers each)")
    answered, _ = train_prompts_answer(
        policy=base,
        campaign=campaign,
        limit=prompts,
        sampling=sampling,
        pairs=gen["pairs"],
        overlap=gen["overlap"],
        budget=gen["budget"],
        backend=backend,
        on_tokens=meter(f"{base.name} answering"),
    )
    if answered is not None:
        say(
            f"  {base.name} answered {answered.prompts} prompts: {answered.extra['comparisons']} comparisons "
            f"{_pairing_notes(gen['pairs'], answered)}"
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

    current, report = base, LoopReport()
    plan = (["sft"] if sft_first else []) + ["preference"] * rounds
    for number, method in enumerate(plan, start=1):
        say(f"round {number}/{len(plan)}" + (" (SFT on the chosen answers)" if method == "sft" else ""))
        verdicts = simulate(campaign, noise, judge_flips)
        judged = sum(verdicts.values())
        if warning := tied_warning(oracle, verdicts):
            say(f"  {warning}")
        created = round_create(
            policy=current,
            hyperparameters=_sft(hyperparameters) if method == "sft" else hyperparameters,
            min_pairs=1,
            then_generate=prompts if number < len(plan) else 0,
            generation=generation,
            guards=guards,
            reference_mode=reference_mode,
            aggregation=aggregation,
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
        for key, opponent in (("vs_previous", current), ("vs_base", base)):
            games = policy_games(
                include_simulated=True,
                evaluations=Evaluation.objects.filter(training_round=finished, policy=new, opponent=opponent),
            )
            rate = head_to_head(games, policy=new.pk, opponent=opponent.pk, seed=judge_seed)
            row[key] = _rate_row(rate, opponent)
            controlled = controlled_head_to_head(games, policy=new.pk, opponent=opponent.pk, seed=judge_seed)
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
                    seed=judge_seed,
                )
                row.setdefault("check", {"judge": check})[key] = _rate_row(second, opponent)
                if key == "vs_previous" or current.pk != base.pk:
                    say(f"    judged by {check} instead: {_rate_text(row['check'][key])}")
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
        row["drift"] = finished.drift
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
