"""The annotator's pages: the queue (judge or skip), my judgments (review, change), guidelines.

Every page works as plain form posts; with htmx, judging and skipping swap the ``#comparison``
fragment in place and refresh ``#progress`` out of band.
"""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotate.errors import AlreadyJudged
from annotate.models import Assignment, Comparison, Guideline, Judgment, Side
from annotate.selectors import annotator_gold_accuracy
from annotate.services import assignment_skip, comparison_assign_next, judgment_change, judgment_submit
from config.errors import Invalid


def _sides(assignment_or_judgment: Assignment | Judgment) -> dict:
    """The two responses in the order the annotator sees them."""
    comparison = assignment_or_judgment.comparison
    first, second = comparison.response_a, comparison.response_b
    left, right = (
        (first, second) if (assignment_or_judgment.left or Side.FIRST) == Side.FIRST else (second, first)
    )
    return {"left": left, "right": right}


def _queue(request: HttpRequest, *, status: int = 200) -> HttpResponse:
    assignment = comparison_assign_next(annotator=request.user)
    context = {
        "assignment": assignment,
        **(_sides(assignment) if assignment else {}),
    }
    if request.htmx:
        return render(request, "annotate/_comparison_swap.html", context, status=status)
    context["guideline"] = Guideline.objects.first()
    return render(request, "annotate/compare.html", context, status=status)


def _parse_answer(answer: str) -> tuple[str, str]:
    """``left``, ``right:clear``, ``tie`` ... → (verdict, strength)."""
    verdict, _, strength = answer.partition(":")
    return verdict, strength


@login_required
def queue(request: HttpRequest) -> HttpResponse:
    return _queue(request)


@login_required
@require_POST
def judge(request: HttpRequest) -> HttpResponse:
    comparison = get_object_or_404(Comparison, pk=request.POST.get("comparison"))
    answer = request.POST.get("answer", "")
    if answer == "skip":
        assignment_skip(comparison=comparison, annotator=request.user)
        return _queue(request) if request.htmx else redirect("annotate:queue")
    verdict, strength = _parse_answer(answer)
    try:
        judgment_submit(
            comparison=comparison,
            annotator=request.user,
            verdict=verdict,
            strength=strength,
            rationale=request.POST.get("rationale", "").strip(),
        )
    except AlreadyJudged:
        pass  # a double submit: the first one counted, carry on with the next comparison
    return _queue(request) if request.htmx else redirect("annotate:queue")


@login_required
def mine(request: HttpRequest) -> HttpResponse:
    judgments = (
        Judgment.objects.filter(annotator=request.user)
        .select_related("comparison__prompt")
        .prefetch_related("revisions")
        .order_by("-created_at")
    )
    page = Paginator(judgments, 25).get_page(request.GET.get("page"))
    correct, gold = annotator_gold_accuracy(annotator=request.user)
    return render(
        request,
        "annotate/mine.html",
        {"page": page, "gold": gold, "gold_correct": correct},
    )


@login_required
@require_http_methods(["GET", "POST"])
def change(request: HttpRequest, pk: int) -> HttpResponse:
    judgment = get_object_or_404(
        Judgment.objects.select_related(
            "comparison__prompt", "comparison__response_a", "comparison__response_b"
        ),
        pk=pk,
        annotator=request.user,  # someone else's judgment is simply not found
    )
    if request.method == "POST":
        verdict, strength = _parse_answer(request.POST.get("answer", ""))
        judgment_change(
            judgment=judgment,
            annotator=request.user,
            verdict=verdict,
            strength=strength,
            rationale=request.POST.get("rationale", "").strip(),
        )
        return redirect("annotate:mine")
    return render(
        request,
        "annotate/change.html",
        {
            "judgment": judgment,
            "current": _current_answer(judgment),
            **_sides(judgment),
        },
    )


def _current_answer(judgment: Judgment) -> str:
    """The judgment as the annotator gave it, in screen terms (left/right:clear/tie ...)."""
    if judgment.choice in (Side.FIRST, Side.SECOND):
        verdict = "left" if judgment.choice == (judgment.left or Side.FIRST) else "right"
        return f"{verdict}:{judgment.strength}" if judgment.strength else verdict
    return judgment.choice


@staff_member_required
@require_http_methods(["GET", "POST"])
def guidelines(request: HttpRequest) -> HttpResponse:
    current = Guideline.objects.first()
    if request.method == "POST":
        text = request.POST.get("text", "").strip()
        if not text:
            raise Invalid("the guidelines are empty")
        Guideline.objects.create(text=text, updated_by=request.user)
        return redirect("annotate:guidelines")
    return render(request, "annotate/guidelines.html", {"guideline": current})
