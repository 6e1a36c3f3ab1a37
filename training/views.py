"""Staff pages: the dashboard (rounds, annotation quality, leaderboard), a round's live page, and
starting and cancelling rounds. Training itself runs in a db_worker, never in these requests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from annotate.models import Campaign
from annotate.selectors import AGGREGATIONS, DATASET_TYPES, EXPORT_SPLITS
from config.errors import DomainError, object_or_404
from config.security import staff_required
from generation.errors import PolicyNotFound
from generation.models import Policy
from generation.services import policy_promote
from training.charts import round_charts
from training.drift import FLUENCY_MIN_ANSWERS, drift_breaches
from training.errors import RoundNotFound
from training.forms import StartRoundForm
from training.leaderboard import both_bad_rates, leaderboard, policy_games
from training.models import TrainingRound
from training.options import GUARD_DEFAULTS
from training.rounds import round_cancel, round_pairs_count
from training.selectors import annotation_stats, heldout_least_likely, rounds_recent
from training.stats import MIN_RATED_GAMES
from training.tasks import round_retry, round_start
from training.trust import (
    CHANCE_KAPPA,
    FAST_SHARE,
    MIN_COMPARED,
    MIN_FLAGGED,
    ONE_SIDE,
    READING_WPM,
    trust_rows,
)


def _include_simulated(request: HttpRequest) -> bool:
    return request.GET.get("simulated") == "1"


@dataclass(frozen=True)
class PolicyChoice:
    """A policy a round could start from, with the pairs its judged comparisons give now."""

    policy: Policy
    pairs: int
    needed: int
    left_out: str  # "no majority 2, not judged 30": why the other comparisons give no pair

    @property
    def ready(self) -> bool:
        return self.pairs >= self.needed


def _policy_choices() -> list[PolicyChoice]:
    """The newest policies, each with its pairs against the minimum a round needs, and why not more."""
    choices = []
    for policy in Policy.objects.order_by("-id")[:20]:
        pairs, excluded = round_pairs_count(policy=policy)
        left_out = ", ".join(f"{reason} {n}" for reason, n in sorted(excluded.items()))
        choices.append(PolicyChoice(policy, pairs, settings.PREFLOOP_MIN_PAIRS, left_out))
    return choices


def _default_policy(choices: list[PolicyChoice]) -> Policy | None:
    with_pairs = [choice.policy for choice in choices if choice.pairs]
    return with_pairs[0] if with_pairs else (choices[0].policy if choices else None)


@staff_required
def dashboard(request: HttpRequest) -> HttpResponse:
    simulated = _include_simulated(request)
    campaign_stats, annotators = annotation_stats(include_simulated=simulated)
    choices = _policy_choices()
    default = _default_policy(choices)
    form = StartRoundForm(initial={"policy": default.pk if default else None})
    return render(
        request,
        "training/dashboard.html",
        {
            "simulated": simulated,
            "training_rounds": rounds_recent(),
            "campaign_stats": campaign_stats,
            "annotators": annotators,
            "leaderboard": leaderboard(include_simulated=simulated),
            "games": Counter(
                "arena" if game.arena else "blind" for game in policy_games(include_simulated=simulated)
            ),
            "min_rated_games": MIN_RATED_GAMES,
            "form": form,
            "policy_choices": choices,
            "export_campaigns": Campaign.objects.order_by("name").values_list("name", flat=True),
            "export_types": DATASET_TYPES,
            "export_aggregations": AGGREGATIONS,
            "export_splits": EXPORT_SPLITS,
        },
    )


@staff_required
def trust(request: HttpRequest) -> HttpResponse:
    """Whom to trust: every annotator, person or AI judge, with the flags for the suspicious."""
    simulated = _include_simulated(request)
    return render(
        request,
        "training/trust.html",
        {
            "rows": trust_rows(include_simulated=simulated),
            "simulated": simulated,
            "wpm": READING_WPM,
            "fast_share": f"{FAST_SHARE:.0%}",
            "one_side": f"{ONE_SIDE:.0%}",
            "chance_kappa": CHANCE_KAPPA,
            "min_flagged": MIN_FLAGGED,
            "min_compared": MIN_COMPARED,
        },
    )


@staff_required
@require_POST
def start(request: HttpRequest) -> HttpResponse:
    form = StartRoundForm(request.POST)
    error = None
    if form.is_valid():
        try:
            started = round_start(request=form.round_request(), started_by=request.user)
        except DomainError as exc:
            error = exc.detail
        else:
            return redirect("training:round", pk=started.pk)
    choices = _policy_choices()
    return render(
        request,
        "training/start.html",
        {"form": form, "error": error, "policy_choices": choices},
        status=400,
    )


def _round_context(training_round: TrainingRound) -> dict:
    metrics = list(training_round.metrics.values_list("step", "values"))
    output = training_round.output_policy
    guards = {**GUARD_DEFAULTS, **training_round.guards}
    return {
        "guards": guards,
        # said in words on the page: the round measured its drift and it is within every guard
        "within_guards": bool(training_round.drift) and not drift_breaches(training_round.drift, guards),
        "fluency_min_answers": FLUENCY_MIN_ANSWERS,
        "both_bad": both_bad_rates(policy=output).get(output.pk) if output else None,
        "least_likely": heldout_least_likely(policy=output) if output and training_round.drift else [],
        "round": training_round,
        "charts": round_charts(metrics),
        "latest": metrics[-1][1] if metrics else None,
        "log_tail": training_round.log.splitlines()[-40:],
    }


def _round(pk: int) -> TrainingRound:
    return object_or_404(
        TrainingRound.objects.select_related(
            "policy", "reference", "output_policy", "started_by", "campaign", "eval_campaign"
        ),
        error=RoundNotFound,
        what="round",
        pk=pk,
    )


@staff_required
def round_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "training/round.html", _round_context(_round(pk)))


@staff_required
def round_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The part of the round page that changes; polled every 2 s until the round has finished."""
    training_round = _round(pk)
    response = render(request, "training/_round_live.html", _round_context(training_round))
    return HttpResponseStopPolling(response.content) if training_round.is_settled else response


@staff_required
@require_POST
def promote(request: HttpRequest, pk: int) -> HttpResponse:
    """Staff vouch for a held-back policy; back to where they pressed it."""
    policy = object_or_404(Policy, error=PolicyNotFound, what="policy", pk=pk)
    policy_promote(policy=policy, by=request.user.get_username())
    trained_by = TrainingRound.objects.filter(output_policy=policy).first()
    return redirect("training:round", pk=trained_by.pk) if trained_by else redirect("training:dashboard")


@staff_required
@require_POST
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    training_round = round_cancel(training_round=_round(pk))
    if request.htmx:
        return render(request, "training/_round_live.html", _round_context(training_round))
    return redirect("training:round", pk=training_round.pk)


@staff_required
@require_POST
def retry(request: HttpRequest, pk: int) -> HttpResponse:
    """A failed or cancelled round again, with the same policy, reference and settings."""
    retried = round_retry(training_round=_round(pk), started_by=request.user)
    return redirect("training:round", pk=retried.pk)
