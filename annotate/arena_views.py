"""The arena's pages: a conversation with two hidden policies, their answers streamed to the page
as server-sent events (the htmx SSE extension; no inline script), the vote, the reveal, and going on.

The web process never loads a model nor waits on one: the arena runner (``manage.py arena_runner``)
writes the answers into the turn as they come, and the stream relays what is stored. Every answer reaches the page as escaped text while it streams, then as
sanitised Markdown; nothing from a model or a prompt is executed in the browser.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from annotate.errors import CampaignNotFound, TurnNotFound
from annotate.models import ArenaConversation, ArenaTurn, Campaign, Side, Task, TurnStatus
from annotate.rendering import markdown_html
from annotate.selectors import campaign_visible_to
from annotate.services import arena
from annotate.turn_watch import RELAY_SECONDS, closing, turn_row, turn_watch
from config.errors import DomainError, object_or_404
from generation.context import words

KEEPALIVE_SECONDS = 10.0  # a comment line this often while nothing changes (proxies close idle streams)
SLOW_START = 5.0  # seconds claimed with no text before an answer says its engine may be starting
RELAY_LIFE = 600.0  # a stream ends after this long; the page's fragment reconnects it


def _campaign(request: HttpRequest, pk: int) -> Campaign:
    found = Campaign.objects.filter(pk=pk, task=Task.ARENA).first()
    if found is None or not campaign_visible_to(campaign=found, annotator=request.user):
        # One answer for "none" and "not yours": a members-only arena's existence is not told.
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


def _went_on_from(turn: ArenaTurn) -> str:
    """Which answer, as shown, the next turn goes on from."""
    return (
        "left" if (arena.preferred_side(turn) == "a") == (turn.conversation.left == Side.FIRST) else "right"
    )


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
        "tokens_max": (limit := arena.prompt_token_limit(arena.arena_pool(campaign))),
        "words_max": words(limit),
        "went_on_from": _went_on_from(turn) if turn is not None and turn.status == TurnStatus.VOTED else "",
        "busy_elsewhere": "still being written" in error,
        "error": error,
        "stopped_note": arena.STOPPED_NOT_VOTED,
        "identical": turn is not None
        and turn.status == TurnStatus.ANSWERED
        and arena.answers_identical(turn),
        "identical_note": arena.IDENTICAL_NOT_PREFERRED,
    }


def _fragment(
    request: HttpRequest, campaign: Campaign, turn: ArenaTurn | None, *, error: DomainError | None = None
) -> HttpResponse:
    """The arena as it stands; a refused action says why beside it, with its status, and keeps the
    conversation on the page (an error page would replace it) and what was typed. Without htmx (no
    JavaScript) a done action redirects to the arena's page and a refused one renders that page
    whole: never a bare fragment as the page."""
    if not request.htmx and error is None:
        return redirect("annotate:arena", campaign.pk)
    draft = request.POST.get("text", "") if error else ""
    context = _context(campaign, turn, draft, error.detail if error else "")
    template = "annotate/_arena.html" if request.htmx else "annotate/arena.html"
    return render(request, template, context, status=error.status if error else 200)


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
        draft = arena.campaign_prompt_example(campaign=campaign, annotator=request.user, rng=random.Random())
    turn = (
        ArenaTurn.objects.filter(conversation__campaign=campaign, conversation__annotator=request.user)
        .select_related("conversation__policy_a", "conversation__policy_b", "conversation__campaign")
        .order_by("-conversation_id", "-number")
        .first()
    )
    note = ""
    if request.GET.get("new") or request.GET.get("example"):
        if turn is not None and turn.status == TurnStatus.GENERATING:  # a reload of ?new=1 mid-stream
            note = "these answers are still being written: a new conversation can start once they are done"
        else:
            turn = None
    context = _context(campaign, turn, draft, note)
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
        turn = arena.turn_regenerate(turn=turn, annotator=request.user)
    except DomainError as exc:
        return _fragment(request, turn.conversation.campaign, turn, error=exc)
    return _fragment(request, turn.conversation.campaign, turn)


def _event(name: str, html: str) -> str:
    """One server-sent event whose data is an HTML fragment (each line its own ``data:`` line)."""
    lines = html.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _streaming(text: str, waiting: str = "") -> str:
    if text:
        return f'<div class="answer-text streaming">{escape(text)}</div>'
    return f'<p class="muted">{escape(waiting) or "…"}</p>'


def _waiting(claimed_at: datetime | None) -> str:
    """What an answer with no text yet says: waiting for a slot, reading, and after ``SLOW_START``
    seconds why it can take longer (the model's engine may be starting)."""
    if claimed_at is None:
        return "Waiting for a free generation slot…"
    if timezone.now() - claimed_at < timedelta(seconds=SLOW_START):
        return "Reading the conversation…"
    return (
        "Still reading: the model may be starting up (after a quiet spell the first answer can take a "
        "minute); this page will show the answer as it comes…"
    )


class _Relay:
    """What one stream of a turn sends, read from what the arena runner stored: each answer so far as
    it grows, then ``done`` with the turn's fragment. It only reads; it never waits on an engine."""

    def __init__(self, request: HttpRequest, turn: ArenaTurn) -> None:
        self.request, self.turn = request, turn
        self.left_is_a = turn.conversation.left == Side.FIRST
        self.attempt = turn.attempt
        self.shown: tuple[str, str, str] | None = None
        self.stalled = ""
        self.began = time.monotonic()
        self.quiet = time.monotonic()

    def step(self, row: dict | None) -> str | None:
        """The events to send for the turn as ``row`` holds it ("" when nothing changed), or None when
        the stream should end."""
        if row is None or row["status"] != TurnStatus.GENERATING or row["attempt"] != self.attempt:
            return None
        if self.stalled_why(row):
            return None
        left, right = (row["text_a"], row["text_b"]) if self.left_is_a else (row["text_b"], row["text_a"])
        waiting = _waiting(row["claimed_at"])
        if (left, right, waiting) == self.shown:
            if time.monotonic() - self.quiet < KEEPALIVE_SECONDS:
                return ""
            self.quiet = time.monotonic()
            return ": waiting\n\n"
        self.shown, self.quiet = (left, right, waiting), time.monotonic()
        return _event("left", _streaming(left, waiting)) + _event("right", _streaming(right, waiting))

    def stalled_why(self, row: dict) -> str:
        self.stalled = arena.turn_stalled(
            claimed_at=row["claimed_at"], requested_at=row["requested_at"], heartbeat_at=row["heartbeat_at"]
        )
        if not self.stalled and time.monotonic() - self.began > RELAY_LIFE:
            return "relay life"  # the page reconnects with the fragment
        return self.stalled

    def done(self) -> str:
        self.turn.refresh_from_db()
        context = _context(self.turn.conversation.campaign, self.turn)
        context["stalled"] = self.stalled
        return _event("done", render_to_string("annotate/_arena.html", context, request=self.request))


@never_cache
@login_required
def turn_stream(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """Server-sent events for a turn: ``left`` and ``right`` (each answer so far, escaped text) as
    the arena runner stores them, then ``done`` with the turn's whole fragment (the answers rendered,
    the vote buttons), after which the page closes the stream. Any number of streams of one turn (a
    reload, a second tab) relay the same answers; closing one stops nothing. Served by ASGI, the
    relay is asynchronous and holds no thread while it waits; under WSGI (the development server) it
    holds its thread."""
    relay = _Relay(request, _turn(request, pk))

    def events() -> Iterator[str]:
        yield ": stream open\n\n"  # past any buffering proxy at once
        while (sent := relay.step(turn_row(pk))) is not None:
            if sent:
                yield sent
            time.sleep(RELAY_SECONDS)
        yield relay.done()

    async def events_async() -> AsyncIterator[str]:
        yield ": stream open\n\n"
        rows = turn_watch().rows(pk)
        try:
            async for row in rows:
                if (sent := relay.step(row)) is None:
                    break
                if sent:
                    yield sent
        finally:
            await rows.aclose()
        yield await sync_to_async(closing(relay.done), thread_sensitive=False)()

    if isinstance(request, ASGIRequest):
        connection.close()  # the stream may last minutes: its connection goes back to the pool now
        stream: Iterator[str] | AsyncIterator[str] = events_async()
    else:
        stream = events()
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response
