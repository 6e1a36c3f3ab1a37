"""The arena's pages: a conversation with two hidden policies, their answers streamed to the page
as server-sent events (the htmx SSE extension; no inline script), the vote, the reveal, and going on.

The web process never loads a model: ``services.arena.turn_generate`` relays the generation server
(or a vLLM deployment). Every answer reaches the page as escaped text while it streams, then as
sanitised Markdown; nothing from a model or a prompt is executed in the browser.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.html import escape
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from annotate.errors import CampaignNotFound, TurnNotFound
from annotate.models import ArenaConversation, ArenaTurn, Campaign, Side, Task, TurnStatus
from annotate.rendering import markdown_html
from annotate.selectors import campaign_visible_to
from annotate.services import arena
from config.errors import DomainError, object_or_404

WAIT_SECONDS = 0.5  # a second stream (a reload) looks this often for the first one's answers


def _campaign(request: HttpRequest, pk: int) -> Campaign:
    found = object_or_404(Campaign, error=CampaignNotFound, what="arena campaign", pk=pk, task=Task.ARENA)
    if not campaign_visible_to(campaign=found, annotator=request.user):
        raise CampaignNotFound(f"no arena campaign with pk {pk}", pk=str(pk))
    return found


def _turn(request: HttpRequest, pk: int) -> ArenaTurn:
    return object_or_404(
        ArenaTurn.objects.select_related(
            "conversation__campaign", "conversation__policy_a", "conversation__policy_b"
        ),
        error=TurnNotFound,
        what="arena turn",
        pk=pk,
        conversation__annotator=request.user,
    )


def _sides(turn: ArenaTurn) -> dict:
    """What the page shows left and right: each side's text, how it ended, and (after the vote) who."""
    conversation = turn.conversation
    a = {
        "text": turn.text_a,
        "finish": turn.finish_a,
        "tokens": turn.tokens_a,
        "policy": conversation.policy_a,
    }
    b = {
        "text": turn.text_b,
        "finish": turn.finish_b,
        "tokens": turn.tokens_b,
        "policy": conversation.policy_b,
    }
    left, right = (a, b) if conversation.left == Side.FIRST else (b, a)
    for side in (left, right):
        side["html"] = markdown_html(side["text"]) if side["text"] else ""
    return {"left": left, "right": right}


def _context(campaign: Campaign, turn: ArenaTurn | None, draft: str = "", error: str = "") -> dict:
    history = []
    if turn is not None:
        for earlier in turn.conversation.turns.filter(number__lt=turn.number).order_by("number"):
            history.append({"user": earlier.messages[-1]["content"], "answer": arena.preferred_text(earlier)})
    return {
        "campaign": campaign,
        "turn": turn,
        "sides": _sides(turn) if turn is not None else None,
        "history": history,
        "draft": draft,
        "judgment": turn.comparison.judgments.first() if turn is not None and turn.comparison_id else None,
        "user_text": turn.messages[-1]["content"] if turn is not None else "",
        "max_turns": settings.PREFLOOP_ARENA_MAX_TURNS,
        "prompt_max": settings.PREFLOOP_MAX_PROMPT_CHARS,
        "error": error,
    }


def _fragment(
    request: HttpRequest, campaign: Campaign, turn: ArenaTurn | None, *, error: DomainError | None = None
) -> HttpResponse:
    """The arena as it stands; a refused action says why above it, with its status, and keeps the
    conversation on the page (an error page would replace it) and what was typed."""
    draft = request.POST.get("text", "") if error else ""
    context = _context(campaign, turn, draft, error.detail if error else "")
    return render(request, "annotate/_arena.html", context, status=error.status if error else 200)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def arena_page(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the annotator's current conversation in this arena (its last turn), or a new one to
    start; ``?example=1`` fills the box with one of the campaign's prompts. POST: start one."""
    campaign = _campaign(request, pk)
    if request.method == "POST":
        try:
            turn = arena.conversation_start(
                campaign=campaign, annotator=request.user, text=request.POST.get("text", "")
            )
        except DomainError as exc:
            return _fragment(request, campaign, None, error=exc)
        return _fragment(request, campaign, turn)
    draft = ""
    if request.GET.get("example"):
        draft = arena.campaign_prompt_example(campaign=campaign, rng=random.Random())
    turn = None
    if not request.GET.get("new") and not draft:
        turn = (
            ArenaTurn.objects.filter(conversation__campaign=campaign, conversation__annotator=request.user)
            .select_related("conversation__policy_a", "conversation__policy_b", "conversation__campaign")
            .order_by("-conversation_id", "-number")
            .first()
        )
    context = _context(campaign, turn, draft)
    template = "annotate/_arena.html" if request.htmx else "annotate/arena.html"
    return render(request, template, context)


@never_cache
@login_required
def turn_fragment(request: HttpRequest, pk: int) -> HttpResponse:
    turn = _turn(request, pk)
    return _fragment(request, turn.conversation.campaign, turn)


@login_required
@require_POST
def turn_continue(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = object_or_404(
        ArenaConversation, error=TurnNotFound, what="arena conversation", pk=pk, annotator=request.user
    )
    last = conversation.turns.order_by("-number").first()
    try:
        turn = arena.turn_continue(
            conversation=conversation, annotator=request.user, text=request.POST.get("text", "")
        )
    except DomainError as exc:
        return _fragment(request, conversation.campaign, last, error=exc)
    return _fragment(request, conversation.campaign, turn)


@login_required
@require_POST
def turn_vote(request: HttpRequest, pk: int) -> HttpResponse:
    turn = _turn(request, pk)
    verdict, _, strength = request.POST.get("answer", "").partition(":")
    try:
        arena.turn_vote(
            turn=turn,
            annotator=request.user,
            verdict=verdict,
            strength=strength,
            rationale=request.POST.get("rationale", "").strip(),
        )
    except DomainError as exc:
        turn.refresh_from_db()
        return _fragment(request, turn.conversation.campaign, turn, error=exc)
    return _fragment(request, turn.conversation.campaign, turn)


@login_required
@require_POST
def turn_stop(request: HttpRequest, pk: int) -> HttpResponse:
    arena.turn_stop(turn=_turn(request, pk))
    return HttpResponse(status=204)


@login_required
@require_POST
def turn_regenerate(request: HttpRequest, pk: int) -> HttpResponse:
    turn = _turn(request, pk)
    try:
        turn = arena.turn_regenerate(turn=turn)
    except DomainError as exc:
        return _fragment(request, turn.conversation.campaign, turn, error=exc)
    return _fragment(request, turn.conversation.campaign, turn)


def _event(name: str, html: str) -> str:
    """One server-sent event whose data is an HTML fragment (each line its own ``data:`` line)."""
    lines = html.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _streaming(text: str) -> str:
    return f'<div class="answer-text streaming">{escape(text)}</div>' if text else '<p class="muted">…</p>'


@never_cache
@login_required
def turn_stream(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """Server-sent events for a turn: ``left`` and ``right`` (each answer so far, escaped text) as
    they are written, then ``done`` with the turn's whole fragment (the answers rendered, the vote
    buttons), after which the page closes the stream. A second stream of the same turn (a reload)
    waits for the first one's answers; a finished turn answers ``done`` at once."""
    turn = _turn(request, pk)
    left_is_a = turn.conversation.left == Side.FIRST

    def events() -> Iterator[str]:
        yield ": stream open\n\n"  # past any buffering proxy at once
        if arena.turn_claim(turn=turn):
            for text_a, text_b in arena.turn_generate(turn=turn):
                left, right = (text_a, text_b) if left_is_a else (text_b, text_a)
                yield _event("left", _streaming(left)) + _event("right", _streaming(right))
        else:
            while ArenaTurn.objects.filter(pk=turn.pk, status=TurnStatus.GENERATING).exists():
                if arena.turn_abandon_if_dead(turn=turn):  # its stream died: say so, never wait forever
                    break
                time.sleep(WAIT_SECONDS)
                yield ": waiting\n\n"
        turn.refresh_from_db()
        html = render_to_string(
            "annotate/_arena.html", _context(turn.conversation.campaign, turn), request=request
        )
        yield _event("done", html)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response
