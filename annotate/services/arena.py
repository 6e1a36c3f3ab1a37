"""The arena: an annotator writes a prompt, two policies of the campaign's pool answer it live, side
by side with their names hidden, the annotator votes, and the conversation goes on from the preferred
answer. Each voted turn becomes an ordinary comparison (the conversation so far is its prompt), so it
counts on the leaderboard, in agreement and in exports, and trains the next round.

Pairs are drawn so that every pair of the pool gets votes: the pair with the fewest voted turns in
the campaign so far, ties at random (not the pairs the leaderboard is least sure of: with few votes
every pair is unsure, and a pair that never meets has no estimate at all). Sides are random per
conversation and recorded (``ArenaConversation.left``, then each comparison's assignment).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, F, Min
from django.utils import timezone

from annotate.errors import ArenaBusy, CampaignNotOpen, TurnChanged
from annotate.models import (
    ArenaConversation,
    ArenaRequest,
    ArenaTurn,
    Assignment,
    Campaign,
    CampaignStatus,
    Choice,
    Comparison,
    Judgment,
    Kind,
    Side,
    Task,
    TurnStatus,
)
from annotate.selectors import campaign_open_to, campaigns_open_for
from annotate.services.judgments import ScreenAnswer, judgment_from_screen
from config.errors import Invalid, NotAllowed
from generation.backends import GenerationFailed, Sampling, StreamDelta
from generation.backends.vllm import vllm_urls
from generation.context import context_window, messages_tokens, words
from generation.messages import messages_hash, messages_problem
from generation.models import FinishReason, Policy, Prompt, Response, Split, Tag
from generation.streaming import chat_stream, endpoint_for, models_listed, served_id

logger = logging.getLogger("prefloop.arena")

# A pair the annotator stopped is not voted: a fragment voted better would teach the model to stop
# early, and one voted worse only for being cut short says nothing about the model.
STOPPED_NOT_VOTED = (
    "you stopped these answers, so they are not voted (a cut-short answer would teach the model "
    "the wrong thing): regenerate both, or start a new conversation"
)

ARENA_TAG = "arena"  # prompts written in the arena are tagged so, for later rounds
ARENA_SOURCE = "arena"  # and come from there: never shown to another annotator as an example
ARENA_SAMPLING = {"temperature": 0.7, "top_p": 0.9}
READY_TTL = 5.0  # seconds the generation process's list of ready engines is trusted for a draw
UPDATE_SECONDS = 0.2  # how often the runner stores the answers so far (and looks for a Stop)
HEARTBEAT_SECONDS = 2.0  # how often it says it is alive while neither answer grows
HEARTBEAT_DEAD = 30.0  # a turn taken but not written for this long lost its runner


def arena_pool(campaign: Campaign) -> list[Policy]:
    """The policies that may meet in ``campaign``: its pool, less those held back for drift."""
    return list(campaign.arena_policies.filter(held_back=False).order_by("id"))


def arena_pools_follow(*, policy: Policy, parent: Policy) -> int:
    """A round's new policy joins every arena pool its parent is in, so the newest round meets its
    parent (and the rest of the pool) without staff editing the campaign. Returns how many."""
    campaigns = list(Campaign.objects.filter(task=Task.ARENA, arena_policies=parent))
    for campaign in campaigns:
        campaign.arena_policies.add(policy)
    return len(campaigns)


def arena_pair_draw(
    *, campaign: Campaign, rng: random.Random | None = None, ready: set[int] | None = None
) -> tuple[Policy, Policy]:
    """Two policies of the pool, the pair with the fewest voted turns first (ties at random), in
    random order. A pool of one meets itself: two samples of the same policy, an on-policy pair
    that trains it like any other but is no game for the leaderboard."""
    rng = rng or random.Random()
    pool = arena_pool(campaign)
    if not pool:
        raise Invalid(f"the arena {campaign.name!r} has no policy to answer yet: staff add one to its pool")
    if len(pool) == 1:
        return pool[0], pool[0]
    voted = Counter(
        frozenset(pair)
        for pair in ArenaTurn.objects.filter(
            conversation__campaign=campaign, status=TurnStatus.VOTED
        ).values_list("conversation__policy_a", "conversation__policy_b")
    )
    pairs = [(a, b) for i, a in enumerate(pool) for b in pool[i + 1 :]]
    ready = policies_ready(pool) if ready is None else ready
    pairs = [(a, b) for a, b in pairs if a.pk in ready and b.pk in ready] or pairs  # others still warm
    fewest = min(voted[frozenset((a.pk, b.pk))] for a, b in pairs)
    first, second = rng.choice([p for p in pairs if voted[frozenset((p[0].pk, p[1].pk))] == fewest])
    return (first, second) if rng.random() < 0.5 else (second, first)


def _served(policy: Policy) -> str:
    return served_id(policy.location, policy.adapter)


def policies_ready(policies: list[Policy]) -> set[int]:
    """Which of ``policies`` answer at once: served by a named vLLM deployment, or by an engine of the
    generation process that is up (its ``/v1/models``, read at most every few seconds)."""
    deployments = vllm_urls()
    answering = set(models_listed(settings.PREFLOOP_ARENA_URL, ttl=READY_TTL))
    ready = set()
    for policy in policies:
        url, _ = endpoint_for(_served(policy), vllm_urls=deployments, fallback_url="")
        if url or _served(policy) in answering:
            ready.add(policy.pk)
    return ready


def pools_warm() -> int:
    """Ask the generation process to start the engines of every open arena's pool (it answers at
    once; engines start in the background), so a policy that joined a pool answers its first turn
    without waiting for a start. Returns how many were asked for."""
    policies = Policy.objects.filter(
        held_back=False, arena_campaigns__task=Task.ARENA, arena_campaigns__status=CampaignStatus.OPEN
    ).distinct()
    deployments = vllm_urls()
    asked = 0
    for policy in policies:
        if endpoint_for(_served(policy), vllm_urls=deployments, fallback_url="")[0]:
            continue  # a deployment serves it
        try:
            httpx.post(f"{settings.PREFLOOP_ARENA_URL}/v1/warm", json={"model": _served(policy)}, timeout=5.0)
            asked += 1
        except httpx.HTTPError as exc:  # at start-up it may not listen yet: the runner asks again in 30 s
            logger.info(
                "arena: the generation process did not take a warm-up for %s yet: %s", policy.name, exc
            )
    return asked


def campaign_prompt_example(*, campaign: Campaign, annotator: AbstractBaseUser, rng: random.Random) -> str:
    """A prompt to start from (a plain one, or a conversation's first message), drawn only from what
    ``annotator`` may already see: training prompts of comparisons in campaigns open to them, never
    one written in an arena (another annotator's); empty when there is none."""
    visible = Comparison.objects.filter(campaign__in=campaigns_open_for(annotator=annotator))
    ids = list(
        Prompt.objects.filter(split=Split.TRAIN, pk__in=visible.values("prompt_id"))
        .exclude(source=ARENA_SOURCE)
        .values_list("id", flat=True)[:1000]
    )
    if not ids:
        return ""
    return Prompt.objects.get(pk=rng.choice(ids)).as_messages()[-1]["content"]


def _text_checked(text: str, history: list[dict[str, str]]) -> list[dict[str, str]]:
    text = text.replace("\r\n", "\n").replace("\x00", "\ufffd").strip()
    if not text:
        raise Invalid("write a message first")
    messages = [*history, {"role": "user", "content": text}]
    if problem := messages_problem(messages):
        raise Invalid(problem)
    return messages


RUNNER_DIED = "the process writing these answers stopped"
NEVER_TAKEN = "no generation slot took these answers in time"


def turn_stalled(
    *, claimed_at: datetime | None, requested_at: datetime, heartbeat_at: datetime | None
) -> str:
    """Why a turn still generating has nobody writing it ("" while it is fine): the runner took it
    and has not written for ``HEARTBEAT_DEAD`` seconds (its process died), or no runner took it
    within ``queue_wait()`` (none is running, or all are full). ``turns_abandon_dead`` writes the
    same rule in SQL; the stream reads it off the row it relays."""
    now = timezone.now()
    if claimed_at is None and requested_at < now - timedelta(seconds=queue_wait()):
        return NEVER_TAKEN
    if claimed_at is not None and heartbeat_at and heartbeat_at < now - timedelta(seconds=HEARTBEAT_DEAD):
        return RUNNER_DIED
    return ""


def turns_abandon_dead(*, annotator: AbstractBaseUser | None = None) -> int:
    """Turns still generating that nobody is writing (``turn_stalled``'s rule), marked failed with its
    reason (what was stored is kept) so the page says so and Regenerate works. ``annotator``: only
    theirs. Returns how many."""
    now = timezone.now()
    turns = ArenaTurn.objects.filter(status=TurnStatus.GENERATING)
    if annotator is not None:
        turns = turns.filter(conversation__annotator=annotator)
    died = turns.filter(claimed_at__isnull=False, heartbeat_at__lt=now - timedelta(seconds=HEARTBEAT_DEAD))
    unclaimed = turns.filter(claimed_at__isnull=True, requested_at__lt=now - timedelta(seconds=queue_wait()))
    return died.update(status=TurnStatus.FAILED, error=RUNNER_DIED, finished_at=now) + unclaimed.update(
        status=TurnStatus.FAILED, error=NEVER_TAKEN, finished_at=now
    )


def queue_wait() -> float:
    """How long a turn may wait for the runner to take it before it is given up as failed."""
    return max(settings.PREFLOOP_ARENA_TIMEOUT, 30.0)


def prompt_token_limit(policies: list[Policy]) -> int:
    """The most tokens of conversation a turn may send to ``policies``: the arena's cap, and within
    each one's context window room for its answer (at least half the window is the prompt's)."""
    limit = settings.PREFLOOP_ARENA_MAX_PROMPT_TOKENS
    answer = settings.PREFLOOP_ARENA_MAX_NEW_TOKENS
    for policy in policies:
        if window := context_window(policy.location):
            limit = min(limit, window - min(answer, window // 2))
    return limit


def _length_check(messages: list[dict[str, str]], policies: list[Policy]) -> None:
    """Refuse a conversation longer than the policies read, in words, before anything is generated."""
    limit = prompt_token_limit(policies)
    used = max(messages_tokens(policy.location, messages) for policy in policies)
    if used > limit:
        last = messages[-1]["content"]
        cut = max(1, round((used - limit) / used * len(last) * 1.05))  # in proportion, and a little more
        raise Invalid(
            f"this conversation is {used:,} tokens long; these models read at most {limit:,} tokens with "
            f"room for their answers (about {words(limit):,} words of plain English; code, numbers and "
            f"other languages take more tokens a word): shorten your message by about {cut:,} of its "
            f"{len(last):,} characters" + (" or start a new conversation" if len(messages) > 1 else "")
        )


def _limits_check(*, annotator: AbstractBaseUser) -> None:
    """One answer pair at a time per annotator, from the moment it is asked for (taken by the runner
    or still waiting); at most PREFLOOP_ARENA_TURNS_PER_MINUTE generations asked for a minute, new
    turns and regenerations alike."""
    turns_abandon_dead(annotator=annotator)
    mine = ArenaTurn.objects.filter(conversation__annotator=annotator)
    if mine.filter(status=TurnStatus.GENERATING, stop_requested=False).exists():
        raise ArenaBusy("an answer pair is still being written for you: stop it or wait for it first")
    if mine.filter(status=TurnStatus.GENERATING, stop_requested=True).exists():
        raise ArenaBusy("the answers you stopped are still being put away: try again in a moment")
    window = ArenaRequest.objects.filter(
        annotator=annotator, created_at__gte=timezone.now() - timedelta(minutes=1)
    ).aggregate(recent=Count("id"), oldest=Min("created_at"))
    recent, oldest = window["recent"], window["oldest"]
    if recent >= settings.PREFLOOP_ARENA_TURNS_PER_MINUTE:
        wait = max(1, 60 - int((timezone.now() - oldest).total_seconds())) if oldest else 60
        raise ArenaBusy(
            f"{recent} answer pairs asked for in the last minute; the limit is "
            f"{settings.PREFLOOP_ARENA_TURNS_PER_MINUTE}: try again in {wait} s"
        )


def _requested(turn: ArenaTurn, annotator: AbstractBaseUser) -> ArenaTurn:
    ArenaRequest.objects.create(annotator=annotator, turn=turn)
    return turn


def _open_check(campaign: Campaign, annotator: AbstractBaseUser) -> None:
    if campaign.task != Task.ARENA:
        raise Invalid(f"campaign {campaign.name!r} is not an arena")
    if not campaign_open_to(campaign=campaign, annotator=annotator):
        raise CampaignNotOpen(f"campaign {campaign.name!r} is not open to you", campaign=campaign.pk)


def _lock_annotator(annotator: AbstractBaseUser) -> None:
    """Serialise one annotator's requests (two tabs sending at once), so the limits count each."""
    get_user_model().objects.select_for_update().filter(pk=annotator.pk).first()


def conversation_start(*, campaign: Campaign, annotator: AbstractBaseUser, text: str) -> ArenaTurn:
    """A new conversation with two policies drawn from the pool, and its first turn (generating)."""
    # Which engines are up is asked over HTTP, before the transaction (on SQLite it holds the write
    # lock from its start) and the annotator's row lock.
    ready = policies_ready(arena_pool(campaign))
    with transaction.atomic():
        _open_check(campaign, annotator)
        messages = _text_checked(text, [])
        _lock_annotator(annotator)
        _limits_check(annotator=annotator)
        policy_a, policy_b = arena_pair_draw(campaign=campaign, ready=ready)
        _length_check(messages, [policy_a, policy_b])
        conversation = ArenaConversation.objects.create(
            campaign=campaign,
            annotator=annotator,
            policy_a=policy_a,
            policy_b=policy_b,
            left=random.choice([Side.FIRST, Side.SECOND]),
        )
        return _requested(
            ArenaTurn.objects.create(conversation=conversation, number=1, messages=messages), annotator
        )


def preferred_side(turn: ArenaTurn) -> str:
    """Which answer (``"a"`` or ``"b"``) the conversation goes on from: the one voted better (a tie
    or both bad: the one shown left); an empty answer gives way to the other."""
    judgment = Judgment.objects.filter(comparison=turn.comparison).first() if turn.comparison_id else None
    left_is_a = turn.conversation.left == Side.FIRST
    if judgment is None or judgment.choice not in ("first", "second"):
        side = "a" if left_is_a else "b"
    else:
        side = "a" if judgment.choice == "first" else "b"
    other = "b" if side == "a" else "a"
    return (
        side if getattr(turn, f"text_{side}").strip() or not getattr(turn, f"text_{other}").strip() else other
    )


def preferred_text(turn: ArenaTurn) -> str:
    """The text of the answer the conversation goes on from (``preferred_side``)."""
    return getattr(turn, f"text_{preferred_side(turn)}").strip()


@transaction.atomic
def turn_continue(*, conversation: ArenaConversation, annotator: AbstractBaseUser, text: str) -> ArenaTurn:
    """The next user turn of ``conversation``, after its last turn was voted on; both policies answer
    the conversation as it went on from the preferred answer."""
    if conversation.annotator_id != annotator.pk:
        raise NotAllowed("not your conversation")
    _open_check(conversation.campaign, annotator)
    _lock_annotator(annotator)
    last = conversation.turns.order_by("-number").first()
    if last is not None and last.status == TurnStatus.GENERATING:
        raise TurnChanged(
            "answers are still being written in this conversation (perhaps in another tab): vote on them "
            "once they are done, then go on; your message is kept here"
        )
    if last is None or last.status != TurnStatus.VOTED:
        raise TurnChanged("vote on the last answers before going on")
    if last.number >= settings.PREFLOOP_ARENA_MAX_TURNS:
        raise Invalid(
            f"this conversation has {last.number} turns, the most one may have "
            "(PREFLOOP_ARENA_MAX_TURNS): start a new conversation"
        )
    answer = preferred_text(last)
    if not answer:
        raise Invalid("both answers were empty: start a new conversation")
    messages = _text_checked(text, [*last.messages, {"role": "assistant", "content": answer}])
    _length_check(messages, [conversation.policy_a, conversation.policy_b])
    _limits_check(annotator=annotator)
    turn = ArenaTurn.objects.create(conversation=conversation, number=last.number + 1, messages=messages)
    return _requested(turn, annotator)


def turn_stop(*, turn: ArenaTurn) -> None:
    """Ask the runner generating ``turn`` to stop (it keeps what was written, marked cut off)."""
    ArenaTurn.objects.filter(pk=turn.pk, status=TurnStatus.GENERATING).update(stop_requested=True)


@transaction.atomic
def turn_regenerate(*, turn: ArenaTurn, annotator: AbstractBaseUser) -> ArenaTurn:
    """Both answers again, for a turn not yet voted on (after a failure, a stop, or by choice): a new
    attempt, queued for the runner; whatever still writes the old one stops at its next write. It
    counts against the annotator's limits like a new turn."""
    conversation = turn.conversation
    if conversation.annotator_id != annotator.pk:
        raise NotAllowed("not your conversation")
    _open_check(conversation.campaign, annotator)
    _lock_annotator(annotator)
    locked = ArenaTurn.objects.select_for_update().get(pk=turn.pk)
    if locked.status == TurnStatus.VOTED:
        raise Invalid("this turn is voted on already: continue or start a new conversation")
    if locked.status == TurnStatus.GENERATING and not locked.stop_requested:
        turns_abandon_dead(annotator=annotator)
        locked.refresh_from_db()
        if locked.status == TurnStatus.GENERATING:
            raise ArenaBusy("these answers are still being written: stop them first")
    if locked.status != TurnStatus.GENERATING:  # a stopped attempt still putting itself away is replaced
        _limits_check(annotator=annotator)
    ArenaTurn.objects.filter(pk=turn.pk).update(
        status=TurnStatus.GENERATING,
        attempt=F("attempt") + 1,
        text_a="",
        text_b="",
        finish_a="",
        finish_b="",
        tokens_a=None,
        tokens_b=None,
        error="",
        stop_requested=False,
        requested_at=timezone.now(),
        claimed_at=None,
        heartbeat_at=None,
        finished_at=None,
    )
    turn.refresh_from_db()
    return _requested(turn, annotator)


def turn_next_claim() -> ArenaTurn | None:
    """The oldest turn waiting for answers, taken by the caller (the arena runner): None when there
    is none. Two runners never take the same attempt."""
    while True:
        waiting = (
            ArenaTurn.objects.filter(status=TurnStatus.GENERATING, claimed_at__isnull=True)
            .order_by("requested_at", "id")
            .values_list("pk", "attempt")
            .first()
        )
        if waiting is None:
            return None
        now = timezone.now()
        taken = ArenaTurn.objects.filter(
            pk=waiting[0], attempt=waiting[1], status=TurnStatus.GENERATING, claimed_at__isnull=True
        ).update(claimed_at=now, heartbeat_at=now)
        if taken:
            return ArenaTurn.objects.select_related("conversation__policy_a", "conversation__policy_b").get(
                pk=waiting[0]
            )


@dataclass
class _Answer:
    text: list[str] = field(default_factory=list)
    finish: str = ""
    tokens: int | None = None
    error: str = ""


def _answer_write(answer: _Answer, *, policy: Policy, messages: list, stop: threading.Event) -> None:
    """One side's answer from its policy's engine, piece by piece into ``answer``."""
    sampling = Sampling(samples=1, max_new_tokens=settings.PREFLOOP_ARENA_MAX_NEW_TOKENS, **ARENA_SAMPLING)
    url, model = endpoint_for(
        served_id(policy.location, policy.adapter),
        vllm_urls=vllm_urls(),
        fallback_url=settings.PREFLOOP_ARENA_URL,
    )
    try:
        piece: StreamDelta
        for piece in chat_stream(
            url=url,
            model=model,
            messages=messages,
            sampling=sampling,
            stop=stop,
            timeout=settings.PREFLOOP_ARENA_TIMEOUT,
        ):
            answer.text.append(piece.text.replace("\x00", "\ufffd"))  # no database stores NUL
            if piece.finish_reason is not None:
                answer.finish, answer.tokens = piece.finish_reason, piece.tokens
    except GenerationFailed as exc:
        logger.warning("arena turn: %s", exc)
        answer.finish, answer.error = "error", exc.public
    except Exception:  # never lost in the thread: the card says so, the log has the rest
        logger.exception("arena turn: an answer failed")
        answer.finish, answer.error = "error", "the generation service failed"


class TurnRun:
    """One claimed attempt being generated: its two answers, each written by a thread of its own
    from its policy's engine (HTTP only: the threads never touch the database)."""

    def __init__(self, turn: ArenaTurn) -> None:
        self.turn, self.attempt = turn, turn.attempt
        self.stop = threading.Event()
        self.answers = {"a": _Answer(), "b": _Answer()}
        self.shown = ("", "")
        self.beat = time.monotonic()
        self.threads = [
            threading.Thread(
                target=_answer_write,
                args=(self.answers[side],),
                kwargs={"policy": policy, "messages": turn.messages, "stop": self.stop},
                daemon=True,
            )
            for side, policy in (("a", turn.conversation.policy_a), ("b", turn.conversation.policy_b))
        ]
        for thread in self.threads:
            thread.start()

    def texts(self) -> tuple[str, str]:
        return "".join(self.answers["a"].text), "".join(self.answers["b"].text)

    def ended(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)


def turns_tick(runs: list[TurnRun]) -> list[TurnRun]:
    """One step of the attempts being generated, in one transaction: each stores what grew (a
    heartbeat otherwise, every ``HEARTBEAT_SECONDS``) only while it is its turn's current attempt and
    still generating; one asked to stop is stopped; one no longer current (regenerated, voted,
    deleted) stops without writing; one whose answers ended stores them. Returns those still going.
    The runner calls it every ``UPDATE_SECONDS`` for all its attempts: one connection, however many."""
    if not runs:  # an idle runner opens no transaction (on SQLite, IMMEDIATE takes the write lock)
        return []
    stopping = set(
        ArenaTurn.objects.filter(pk__in=[run.turn.pk for run in runs], stop_requested=True).values_list(
            "pk", flat=True
        )
    )
    going = []
    with transaction.atomic():
        for run in runs:
            if run.ended():
                _turn_store(run.turn, run.attempt, run.answers)
                continue
            if run.turn.pk in stopping:
                run.stop.set()
            now = run.texts()
            if now == run.shown and time.monotonic() - run.beat < HEARTBEAT_SECONDS:
                going.append(run)
                continue
            run.shown, run.beat = now, time.monotonic()
            current = ArenaTurn.objects.filter(
                pk=run.turn.pk, attempt=run.attempt, status=TurnStatus.GENERATING
            )
            if current.update(text_a=now[0], text_b=now[1], heartbeat_at=timezone.now()):
                going.append(run)
            else:
                run.stop.set()  # regenerated or voted meanwhile: this attempt is not shown any more
    return going


def turn_generate(*, turn: ArenaTurn) -> None:
    """Generate one claimed turn's two answers at once, storing both as they grow, then their end
    (``turns_tick``, every ``UPDATE_SECONDS``, until it ends). The arena runner does the same for
    all its turns at once; never a web request: a closed page neither stops nor loses the turn."""
    runs = [TurnRun(turn)]
    while runs:
        time.sleep(UPDATE_SECONDS)
        runs = turns_tick(runs)


def _turn_store(turn: ArenaTurn, attempt: int, answers: dict[str, _Answer]) -> None:
    """A finished attempt's answers, stored only while it is the turn's current attempt and still
    generating: never over a vote, a regeneration or a failure already recorded."""
    a, b = answers["a"], answers["b"]
    left_is_a = turn.conversation.left == Side.FIRST
    named = {"a": "left" if left_is_a else "right", "b": "right" if left_is_a else "left"}
    errors = [
        f"the {named[side]} answer: {answers[side].error}" for side in ("a", "b") if answers[side].error
    ]
    ArenaTurn.objects.filter(pk=turn.pk, attempt=attempt, status=TurnStatus.GENERATING).update(
        status=TurnStatus.FAILED if errors else TurnStatus.ANSWERED,
        text_a="".join(a.text),
        text_b="".join(b.text),
        finish_a=a.finish or "cancelled",
        finish_b=b.finish or "cancelled",
        tokens_a=a.tokens,
        tokens_b=b.tokens,
        error="; ".join(errors),
        heartbeat_at=timezone.now(),
        finished_at=timezone.now(),
    )


def _prompt_for(messages: list[dict[str, str]]) -> Prompt:
    """The conversation so far as a prompt of the training split, tagged ``arena`` (found again if
    someone asked the same before)."""
    found = Prompt.objects.filter(content_hash=messages_hash(messages)).first()
    if found is None:
        single = len(messages) == 1
        found = Prompt.objects.create(
            text=messages[0]["content"] if single else "",
            messages=None if single else messages,
            split=Split.TRAIN,
            source=ARENA_SOURCE,
        )
    found.tags.add(Tag.objects.get_or_create(name=ARENA_TAG)[0])
    return found


def _response(prompt: Prompt, policy: Policy, text: str, finish: str, tokens: int | None) -> Response:
    return Response.objects.create(
        prompt=prompt,
        policy=policy,
        text=text,
        sampling={**ARENA_SAMPLING, "max_new_tokens": settings.PREFLOOP_ARENA_MAX_NEW_TOKENS},
        token_count=tokens,
        finish_reason=FinishReason.STOP if finish == "stop" else FinishReason.LENGTH,  # stopped: cut off
    )


IDENTICAL_NOT_PREFERRED = (
    "both answers are the same text, so neither is better: vote tie or both bad to go on (neither trains "
    "a preference), or regenerate both"
)


def answers_identical(turn: ArenaTurn) -> bool:
    """The two answers are the same text (one policy sampled twice often says the same short thing):
    a preference between them would teach nothing, and a trainer refuses such a pair."""
    return turn.text_a.strip() == turn.text_b.strip()


@transaction.atomic
def turn_vote(
    *, turn: ArenaTurn, annotator: AbstractBaseUser, verdict: str, strength: str = "", rationale: str = ""
) -> Judgment:
    """The annotator's vote on a turn's two answers, stored like any comparison: a prompt (the
    conversation so far), the two answers as responses by their policies, a comparison in the arena
    campaign with the side shown left, and the judgment through the one judging path."""
    conversation = turn.conversation
    if conversation.annotator_id != annotator.pk:
        raise NotAllowed("not your conversation")
    locked = ArenaTurn.objects.select_for_update().get(pk=turn.pk)
    if locked.status == TurnStatus.VOTED:
        raise TurnChanged("this turn is voted on already")
    if locked.status != TurnStatus.ANSWERED:
        raise TurnChanged("wait for both answers (or regenerate them) before voting")
    if locked.stopped:
        raise TurnChanged(STOPPED_NOT_VOTED)
    if answers_identical(locked) and verdict not in (Choice.TIE, Choice.BOTH_BAD):
        raise TurnChanged(IDENTICAL_NOT_PREFERRED)
    prompt = _prompt_for(locked.messages)
    response_a = _response(prompt, conversation.policy_a, locked.text_a, locked.finish_a, locked.tokens_a)
    response_b = _response(prompt, conversation.policy_b, locked.text_b, locked.finish_b, locked.tokens_b)
    comparison = Comparison.objects.create(
        prompt=prompt,
        response_a=response_a,
        response_b=response_b,
        campaign=conversation.campaign,
        kind=Kind.TRAIN,
        overlap=1,
    )
    now = timezone.now()
    Assignment.objects.create(
        comparison=comparison,
        annotator=annotator,
        left=conversation.left,
        served_at=locked.created_at,
        expires_at=now + timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS),
    )
    judgment = judgment_from_screen(
        comparison_id=comparison.pk,
        annotator=annotator,
        answer=ScreenAnswer(verdict=verdict, strength=strength, rationale=rationale),
    )
    voted = ArenaTurn.objects.filter(pk=turn.pk, status=TurnStatus.ANSWERED, comparison__isnull=True)
    if not voted.update(status=TurnStatus.VOTED, comparison=comparison):  # pragma: no cover - locked above
        raise TurnChanged("this turn changed while the vote was recorded: reload the page")
    turn.refresh_from_db()
    return judgment
