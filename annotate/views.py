"""The annotator's pages: the queue (judge or skip, in one campaign or all open to them), my
judgments (review, change); and the staff's campaign pages (create, edit, pause, close, members).

Every page works as plain form posts; with htmx, judging and skipping swap the ``#comparison``
fragment in place and refresh ``#progress`` out of band.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotate.errors import AlreadyJudged, CampaignNotFound, CampaignNotOpen, ComparisonNotFound
from annotate.forms import CampaignForm
from annotate.models import (
    AIJudge,
    Assignment,
    Campaign,
    CampaignStatus,
    Comparison,
    JudgeRun,
    Judgment,
    Side,
    Task,
)
from annotate.selectors import (
    campaign_closed_reason,
    campaign_open_to,
    campaign_visible_to,
    campaigns_open_for,
)
from annotate.services.ai_judges import (
    ROUTE_CONFIDENCE,
    judge_agreement_with_people,
    judge_register,
    judge_route,
    judge_run_start,
    suggestion_effect,
    suggestion_for,
)
from annotate.services.campaigns import (
    campaign_arena_pool_set,
    campaign_create,
    campaign_members_set,
    campaign_update,
)
from annotate.services.judgments import (
    ScreenAnswer,
    judgment_change,
    judgment_from_screen,
    judgment_steered,
    ranking_change,
)
from annotate.services.queue import assignment_skip, assignment_unskip, comparison_assign_next
from config.errors import NotFound, object_or_404
from config.security import staff_required
from generation.models import Policy

SESSION_CAMPAIGN = "annotate_campaign"  # the campaign the annotator picked; absent: all open to them
SESSION_RECORDED = "annotate_recorded"  # the judgment just recorded: shown once, with its undo
SESSION_NOT_RECORDED = "annotate_not_recorded"  # set when an answer came for a comparison already judged
SESSION_SKIPPED = "annotate_skipped"  # the comparison just skipped: said once, with its undo
SESSION_NOTICE = (
    "annotate_notice"  # why the queue changed under the annotator (a campaign paused), shown once
)


def _sides(assignment: Assignment | Judgment) -> dict:
    """The two responses in the order the annotator sees (or saw) them."""
    comparison = assignment.comparison
    if comparison.is_ranking:  # its answers in the order this annotator is shown them
        return {"ranked": comparison.answers_in(getattr(assignment, "order", ""))}
    first, second = comparison.response_a, comparison.response_b
    left, right = (first, second) if (assignment.left or Side.FIRST) == Side.FIRST else (second, first)
    return {"left": left, "right": right}


def _judging_elsewhere(request: HttpRequest, campaign: Campaign) -> None:
    """The picked ``campaign`` is not open to the annotator any more: drop the pick, and say why once."""
    request.session.pop(SESSION_CAMPAIGN, None)
    reason = campaign_closed_reason(campaign=campaign, annotator=request.user)
    request.session[SESSION_NOTICE] = f"{reason}; you are judging in all your campaigns now"


def _picked(request: HttpRequest) -> Campaign | None:
    """The campaign the annotator picked, while it is still open to them (else: all of theirs)."""
    pk = request.session.get(SESSION_CAMPAIGN)
    if pk is None:
        return None
    picked = campaigns_open_for(annotator=request.user).filter(pk=pk).first()
    if picked is None:
        request.session.pop(SESSION_CAMPAIGN, None)
        gone = Campaign.objects.filter(pk=pk).first()
        if gone is not None and SESSION_NOTICE not in request.session:
            _judging_elsewhere(request, gone)
    return picked


def _queue(request: HttpRequest, *, status: int = 200, recorded: Judgment | None = None) -> HttpResponse:
    """The judging page (or, with htmx, its fragment): the next comparison, with what was just done
    (``recorded``: the judgment just stored, else the one the session names)."""
    picked = _picked(request)
    assignment = comparison_assign_next(annotator=request.user, campaign=picked)
    recorded_pk = request.session.pop(SESSION_RECORDED, None)
    if recorded is None and recorded_pk:
        recorded = (
            Judgment.objects.select_related("comparison__campaign")
            .filter(pk=recorded_pk, annotator=request.user)
            .first()
        )
    skipped = request.session.pop(SESSION_SKIPPED, None)
    skipped_in = Campaign.objects.filter(comparisons=skipped).first() if skipped else None
    context = {
        "assignment": assignment,
        "picked": picked,
        "notice": request.session.pop(SESSION_NOTICE, ""),
        "rationale_max": settings.PREFLOOP_MAX_RATIONALE_CHARS,
        "skipped": skipped,
        "skipped_noun": skipped_in.item_noun if skipped_in else "comparison",
        "recorded": recorded,
        "not_recorded": request.session.pop(SESSION_NOT_RECORDED, False) and recorded is not None,
        **(_sides(assignment) if assignment else {}),
        "suggestion": suggestion_for(assignment, request.user) if assignment else None,
    }
    if request.htmx:
        return render(request, "annotate/_comparison_swap.html", context, status=status)
    context["campaigns"] = campaigns_open_for(annotator=request.user)
    return render(request, "annotate/compare.html", context, status=status)


def _rank(value: str | None) -> int:
    """A posted rank ("1".."4"); 0 (refused by the service, with its message) when missing or not a number."""
    return int(value) if value and value.isdigit() else 0


def _parse_answer(answer: str) -> tuple[str, str]:
    """``left``, ``right:clear``, ``tie`` ... → (verdict, strength)."""
    verdict, _, strength = answer.partition(":")
    return verdict, strength


@never_cache  # Back must not show a comparison already judged as if it were still open
@login_required
def queue(request: HttpRequest) -> HttpResponse:
    if "campaign" in request.GET:  # the picker: a campaign's id, or empty for all open to me
        wanted = request.GET["campaign"]
        known = Campaign.objects.filter(pk=wanted).first() if wanted.isdigit() else None
        if (
            known is not None
            and known.task == Task.ARENA
            and campaign_visible_to(campaign=known, annotator=request.user)
        ):
            return redirect("annotate:arena", pk=known.pk)  # an arena is judged on its own page
        if known is not None and campaign_visible_to(campaign=known, annotator=request.user):
            if campaign_open_to(campaign=known, annotator=request.user):
                request.session[SESSION_CAMPAIGN] = known.pk
            else:  # a bookmark of a paused or closed campaign: say so, judge in the others
                _judging_elsewhere(request, known)
        elif wanted:
            picked = object_or_404(
                campaigns_open_for(annotator=request.user),
                error=CampaignNotFound,
                what="open campaign",
                pk=wanted,
            )
            request.session[SESSION_CAMPAIGN] = picked.pk
        else:
            request.session.pop(SESSION_CAMPAIGN, None)
    return _queue(request)


@never_cache
@login_required
@require_POST
def judge(request: HttpRequest) -> HttpResponse:
    posted = request.POST.get("comparison", "")
    answer = request.POST.get("answer", "")
    if answer in ("skip", "unskip"):
        comparison = object_or_404(Comparison, error=ComparisonNotFound, pk=posted)
        if answer == "skip":
            assignment_skip(comparison=comparison, annotator=request.user)
            request.session[SESSION_SKIPPED] = comparison.pk
        else:  # U right after a skip: that comparison comes back, next
            assignment_unskip(comparison=comparison, annotator=request.user)
        return _queue(request) if request.htmx else redirect("annotate:queue")
    verdict, strength = _parse_answer(answer)
    try:
        judgment = judgment_from_screen(
            comparison_id=posted,
            annotator=request.user,
            answer=ScreenAnswer(
                verdict=verdict,
                strength=strength,
                # a ranking item's ranks, one per answer as shown (a pair posts none)
                ranks=[
                    _rank(request.POST.get(f"rank_{i}")) for i in range(1, 5) if f"rank_{i}" in request.POST
                ],
                rationale=request.POST.get("rationale", "").strip(),
                edit=request.POST.get("edit", ""),
                edit_of=request.POST.get("edit_of", ""),
            ),
        )
    except AlreadyJudged:
        # A double submit, or an answer to a page kept in the browser's history: the first answer
        # stands, and the page says so beside the link that changes it (never dropped silently).
        earlier = Judgment.objects.filter(comparison_id=posted, annotator=request.user).first()
        if earlier is not None:
            request.session[SESSION_RECORDED] = earlier.pk
            request.session[SESSION_NOT_RECORDED] = True
    except CampaignNotOpen as exc:
        # Paused or closed while the annotator held one of its comparisons: say so and serve the
        # next comparison from their other campaigns, so the keys keep working without a reload.
        # Someone outside the campaign (never a member, or taken off) is refused as before (403).
        if Campaign.objects.filter(pk=exc.context.get("campaign"), status=CampaignStatus.OPEN).exists():
            raise
        if request.session.get(SESSION_CAMPAIGN) == exc.context.get("campaign"):
            request.session.pop(SESSION_CAMPAIGN)
        request.session[SESSION_NOTICE] = exc.detail
    else:
        if request.htmx:  # shown in the answer itself: the session is not written for it
            return _queue(request, recorded=judgment)
        request.session[SESSION_RECORDED] = judgment.pk
    return _queue(request) if request.htmx else redirect("annotate:queue")


@login_required
def mine(request: HttpRequest) -> HttpResponse:
    judgments = (
        Judgment.objects.filter(annotator=request.user)
        .select_related(
            "comparison__prompt",
            "comparison__campaign",
            "comparison__response_a",
            "comparison__response_b",
            "edit",
        )
        .prefetch_related("revisions")
        .order_by("-created_at")
    )
    page = Paginator(judgments, 25).get_page(request.GET.get("page"))
    # No gold score here: watching it move after each judgment tells which items are gold and what
    # their answer is. Staff see it per annotator on the dashboard (docs/security.md).
    return render(request, "annotate/mine.html", {"page": page})


@login_required
@require_http_methods(["GET", "POST"])
def change(request: HttpRequest, pk: int) -> HttpResponse:
    judgment = object_or_404(
        Judgment.objects.select_related(
            "comparison__prompt", "comparison__response_a", "comparison__response_b"
        ),
        what="judgment of yours",
        pk=pk,
        annotator=request.user,  # someone else's judgment is simply not found
    )
    if request.method == "POST" and judgment.ranking:
        ranking_change(
            judgment=judgment,
            annotator=request.user,
            ranks=[_rank(request.POST.get(f"rank_{i}")) for i in range(1, len(judgment.ranking) + 1)],
            rationale=request.POST.get("rationale", "").strip(),
        )
        return _changed(request, judgment)
    if request.method == "POST":
        verdict, strength = _parse_answer(request.POST.get("answer", ""))
        judgment_change(
            judgment=judgment,
            annotator=request.user,
            verdict=verdict,
            strength=strength,
            rationale=request.POST.get("rationale", "").strip(),
        )
        return _changed(request, judgment)
    return render(
        request,
        "annotate/change.html",
        {
            "judgment": judgment,
            "next": "queue" if request.GET.get("next") == "queue" else "mine",
            "current": _current_answer(judgment),
            "steered": judgment_steered(judgment),
            **(_ranked_now(judgment) if judgment.ranking else _sides(judgment)),
        },
    )


def _changed(request: HttpRequest, judgment: Judgment) -> HttpResponse:
    """Back where the change began, saying what was saved."""
    judgment.refresh_from_db()
    messages.success(request, f"Saved: your judgment is now “{judgment.verdict_label}”.")
    return redirect("annotate:queue" if request.POST.get("next") == "queue" else "annotate:mine")


def _ranked_now(judgment: Judgment) -> dict:
    """A ranking's answers in the order the annotator was shown them, each with its rank now."""
    shown = judgment.shown_order or "abcd"[: len(judgment.ranking)]
    answers = judgment.comparison.answers_in(shown)
    rank_of = dict(zip("abcd", judgment.ranking, strict=False))
    return {"ranked": [(answer, rank_of[letter]) for answer, letter in zip(answers, shown, strict=True)]}


def _current_answer(judgment: Judgment) -> str:
    """The judgment as the annotator gave it, in screen terms (left/right:clear/tie ...)."""
    return f"{judgment.verdict}:{judgment.strength}" if judgment.strength else judgment.verdict


# --- Campaigns (staff) -------------------------------------------------------------------------------


@staff_required
@require_http_methods(["GET", "POST"])
def campaigns(request: HttpRequest) -> HttpResponse:
    """Every campaign with its progress; the form creates one."""
    form = CampaignForm(request.POST or None, initial={"open_to_all": True})
    if request.method == "POST" and form.is_valid():
        created = campaign_create(
            **form.values(),
            members=form.cleaned_data["members"],
            arena_policies=form.cleaned_data["arena_policies"],
        )
        return redirect("annotate:campaign", pk=created.pk)
    rows = Campaign.objects.annotate(
        comparison_count=Count("comparisons", distinct=True), member_count=Count("members", distinct=True)
    ).order_by("-priority", "id")
    status = 400 if request.method == "POST" else 200
    return render(request, "annotate/campaigns.html", {"campaigns": rows, "form": form}, status=status)


@staff_required
@require_http_methods(["GET", "POST"])
def campaign(request: HttpRequest, pk: int) -> HttpResponse:
    """One campaign's settings, guidelines and members; pause, resume and close are one click."""
    current = object_or_404(Campaign, error=CampaignNotFound, pk=pk)
    if request.method == "POST" and request.POST.get("status_only"):
        campaign_update(campaign=current, status=request.POST.get("status", ""))
        return redirect("annotate:campaign", pk=current.pk)
    form = CampaignForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        campaign_update(campaign=current, **form.values())
        campaign_members_set(campaign=current, members=form.cleaned_data["members"])
        campaign_arena_pool_set(campaign=current, policies=form.cleaned_data["arena_policies"])
        return redirect("annotate:campaign", pk=current.pk)
    if request.method == "POST":  # ModelForm validation changed the instance in memory: reload it
        current.refresh_from_db()
    return render(
        request,
        "annotate/campaign.html",
        {"campaign": current, "form": form, "comparisons": current.comparisons.count(), **_judges(current)},
        status=400 if request.method == "POST" else 200,
    )


def _judges(campaign: Campaign) -> dict:
    """The campaign page's AI judges: each one's agreement with people here, and the latest runs."""
    rows = [
        {
            "judge": judge,
            "verdicts": judge.verdicts.filter(comparison__campaign=campaign).count(),
            "agreement": judge_agreement_with_people(judge=judge, campaign=campaign, resamples=500),
        }
        for judge in AIJudge.objects.order_by("name")
    ]
    runs = list(JudgeRun.objects.filter(campaign=campaign).select_related("judge").order_by("-id")[:5])
    return {
        "judge_rows": rows,
        "runs": runs,
        "active_run": any(run.active for run in runs),
        "can_judge": campaign.task not in (Task.THUMBS, Task.RANKINGS),
        "route_confidence": ROUTE_CONFIDENCE,
        "suggestions": suggestion_effect(campaign=campaign),
        "policies": Policy.objects.order_by("name"),
    }


@staff_required
def campaign_judges(request: HttpRequest, pk: int) -> HttpResponse:
    """The AI judges' part of the campaign page, polled every 2 s while a run is queued or running."""
    current = object_or_404(Campaign, error=CampaignNotFound, pk=pk)
    context = {"campaign": current, **_judges(current)}
    response = render(request, "annotate/_judges.html", context)
    return response if context["active_run"] else HttpResponseStopPolling(response.content)


@staff_required
@require_POST
def judge_new(request: HttpRequest, pk: int) -> HttpResponse:
    """Register an AI judge from a campaign's page (``judge_register``'s checks); back to its judges."""
    current = object_or_404(Campaign, error=CampaignNotFound, pk=pk)
    policy_pk = request.POST.get("policy", "")
    policy = object_or_404(Policy, error=NotFound, what="policy", pk=policy_pk) if policy_pk else None
    judge = judge_register(
        name=request.POST.get("name", ""),
        policy=policy,
        url=request.POST.get("url", "").strip(),
        model=request.POST.get("model", "").strip(),
        api_key_env=request.POST.get("api_key_env", "").strip(),
        rubric=request.POST.get("rubric", "").strip(),
    )
    messages.success(request, f"AI judge {judge.name} registered: judge this campaign's pairs with it below.")
    return redirect(f"{reverse('annotate:campaign', args=[current.pk])}#judges")


@staff_required
@require_POST
def campaign_route(request: HttpRequest, pk: int) -> HttpResponse:
    """Lower the overlap of the pairs a judge is sure of (``judge_route``); the page says how many."""
    current = object_or_404(Campaign, error=CampaignNotFound, pk=pk)
    judge = object_or_404(AIJudge, error=NotFound, what="AI judge", pk=request.POST.get("judge", ""))
    report = judge_route(judge=judge, campaign=current)
    messages.success(
        request,
        f"{judge.name}: {report.lowered} pairs need one person fewer ({report.judgments_saved} judgments saved); "
        f"{report.kept} it was unsure of or read differently in the two orders keep the campaign's overlap "
        "and are served first.",
    )
    return redirect(f"{reverse('annotate:campaign', args=[current.pk])}#judges")


@staff_required
@require_POST
def campaign_judge(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a judge's background run over the campaign's pairs; back to the campaign's judges."""
    current = object_or_404(Campaign, error=CampaignNotFound, pk=pk)
    judge = object_or_404(AIJudge, error=NotFound, what="AI judge", pk=request.POST.get("judge", ""))
    judge_run_start(judge=judge, campaign=current)
    return redirect(f"{reverse('annotate:campaign', args=[current.pk])}#judges")
