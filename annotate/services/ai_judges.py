"""AI judges: register one, let it judge a campaign's pairs in both orders, and measure it against
people (``training.judge_agreement`` computes; this module reads and writes).

A reading asks the judge's endpoint (an OpenAI-compatible ``/v1/chat/completions``) for one token,
greedy, with the log-probabilities of its candidates: the probability that the answer shown as "A" is
better is p(A) / (p(A) + p(B)). An endpoint that gives no log-probabilities is read from its text
(A: 1, B: 0). Each pair is read twice, its answers swapped, and stored as one ``AIVerdict`` in its own
transaction: a run stopped by an error keeps what was judged, and a rerun judges what is left.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotate.errors import JudgeFailed
from annotate.judge_agreement import (
    Agreement,
    JudgedPair,
    OrderedVerdict,
    both_orders,
    judge_agreement,
    verdict_probability,
)
from annotate.models import (
    AIJudge,
    AIVerdict,
    Assignment,
    Campaign,
    Choice,
    Comparison,
    JudgeRun,
    JudgeRunStatus,
    Judgment,
    Side,
    Source,
    Task,
)
from annotate.selectors import majority
from config.errors import Conflict, Invalid, NotFound
from generation.backends.vllm import vllm_urls
from generation.models import Policy
from generation.streaming import endpoint_for, served_id

TIMEOUT = 120.0  # seconds one reading may take
ENGINE_WAIT = 300.0  # seconds a policy's engine may take to start (vLLM on a CPU: ~40 s)
TOP_LOGPROBS = 5


def judge_register(
    *,
    name: str,
    policy: Policy | None = None,
    url: str = "",
    model: str = "",
    api_key_env: str = "",
    rubric: str = "",
) -> AIJudge:
    """A new AI judge; its endpoint is a policy the project serves, or a URL with its model name."""
    if not name.strip():
        raise Invalid("a judge needs a name")
    if (policy is None) == (not url):
        raise Invalid("a judge has one endpoint: a policy, or a URL with its model name")
    if url and not model:
        raise Invalid(f"name the model the URL {url} serves")
    if url and not url.startswith(("http://", "https://")):
        raise Invalid(f"the URL must start with http:// or https:// (got {url!r})")
    if api_key_env and not api_key_env.replace("_", "").isalnum():
        raise Invalid(f"api_key_env names an environment variable, not a key (got {api_key_env[:8]!r}...)")
    judge = AIJudge(
        name=name.strip(), policy=policy, url=url.rstrip("/"), model=model, api_key_env=api_key_env
    )
    if rubric:
        missing = [f"{{{k}}}" for k in ("prompt", "first", "second") if f"{{{k}}}" not in rubric]
        if missing:
            raise Invalid(f"the rubric must hold {', '.join(missing)}")
        judge.rubric = rubric
    if AIJudge.objects.filter(name=judge.name).exists():
        raise Invalid(f"a judge named {judge.name!r} exists already")
    judge.save()
    return judge


def judges_named(names: Iterable[str]) -> list[AIJudge]:
    """The AI judges called ``names``; an unknown name is refused, naming it."""
    judges = []
    for name in names:
        judge = AIJudge.objects.filter(name=name).first()
        if judge is None:
            raise NotFound(f"no AI judge named {name!r} (register_judge registers one)")
        judges.append(judge)
    return judges


def _conversation(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def judge_messages(judge: AIJudge, comparison: Comparison, *, swapped: bool) -> list[dict[str, str]]:
    """The one-message chat the judge reads: its rubric filled with the campaign's guidelines, the
    conversation, and the two answers (response_a as A, or as B when ``swapped``)."""
    first, second = comparison.response_a.text, comparison.response_b.text
    if swapped:
        first, second = second, first
    guidelines = comparison.campaign.guidelines.strip()
    filled = (
        judge.rubric.replace(
            "{guidelines}", f"The guidelines people follow:\n{guidelines}" if guidelines else ""
        )
        .replace("{prompt}", _conversation(comparison.prompt.as_messages()))
        .replace("{first}", first)
        .replace("{second}", second)
    )
    return [{"role": "user", "content": filled}]


@dataclass
class Endpoint:
    """Where a judge's readings go: a base URL (no /v1), a model name, headers."""

    url: str
    model: str
    headers: dict[str, str]


def judge_endpoint(judge: AIJudge) -> Endpoint:
    """The judge's endpoint: its URL and key, or for a policy the generation process (or the vLLM
    engine it has up for the policy, which gives log-probabilities)."""
    if judge.policy is None:
        headers = {}
        if judge.api_key_env:
            key = os.environ.get(judge.api_key_env, "")
            if not key:
                raise JudgeFailed(
                    f"the environment variable {judge.api_key_env} holding {judge.name}'s key is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        return Endpoint(judge.url.removesuffix("/v1"), judge.model, headers)
    return _policy_endpoint(judge.policy)


def _policy_endpoint(policy: Policy) -> Endpoint:
    """A named vLLM deployment that serves the policy; else its engine in the generation process,
    warmed and waited for (a vLLM engine is asked directly: it gives log-probabilities; a plain one
    through the generation process, read from its text)."""
    model = served_id(policy.location, policy.adapter)
    url, name = endpoint_for(model, vllm_urls=vllm_urls(), fallback_url="")
    if url:
        return Endpoint(url, name, {})
    base = settings.PREFLOOP_ARENA_URL
    deadline = time.monotonic() + ENGINE_WAIT
    try:
        httpx.post(f"{base}/v1/warm", json={"model": model}, timeout=10.0).raise_for_status()
        while time.monotonic() < deadline:
            listed = httpx.get(f"{base}/v1/models", timeout=10.0).raise_for_status().json()
            for engine in listed.get("engines", []):
                if engine.get("engine") != policy.location and model not in engine.get("adapters", []):
                    continue
                if engine.get("status") == "failed":
                    raise JudgeFailed(
                        f"the engine for {policy.name} failed to start: see the generation process's log"
                    )
                if engine.get("status") == "ready":
                    if engine.get("kind") == "vllm" and engine.get("url"):
                        return Endpoint(engine["url"], model, {})
                    return Endpoint(base, model, {})
            time.sleep(1.0)
    except httpx.HTTPError as exc:
        raise JudgeFailed(f"the generation process at {base} could not be reached: {exc}") from exc
    raise JudgeFailed(f"the engine for {policy.name} was not up within {ENGINE_WAIT:.0f} s")


class Unreadable(JudgeFailed):
    """A reading with no verdict: neither A nor B among the verdict token's candidates or in its text."""


FIRST_READABLE = 5  # a run whose first pairs (this many, or all) give no verdict at all fails


@dataclass(frozen=True)
class Reading:
    """One reading: the probability that the answer shown as A is better, the judge's answer, and
    the verdict token's candidates with their log-probabilities (empty where the endpoint gives none)."""

    probability: float
    answer: str
    top_logprobs: dict[str, float]


def reading(client: httpx.Client, endpoint: Endpoint, messages: list[dict[str, str]]) -> Reading:
    """One reading of ``messages`` (``judge_messages``) by the endpoint."""

    body = {
        "model": endpoint.model,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
    }
    where = f"{endpoint.url}/v1/chat/completions"
    try:
        answer = client.post(where, json=body, headers=endpoint.headers)
    except httpx.TimeoutException as exc:
        raise JudgeFailed(f"{where} gave no answer within {TIMEOUT:.0f} s") from exc
    except httpx.HTTPError as exc:
        raise JudgeFailed(f"{where} could not be reached: {exc}") from exc
    if answer.status_code != 200:
        raise JudgeFailed(f"{where} answered {answer.status_code}: {answer.text[:300]}")
    try:
        choice = answer.json()["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise JudgeFailed(
            f"{where} answered something that is not a chat completion: {answer.text[:300]}"
        ) from exc
    candidates: dict[str, float] = {}
    for token in ((choice.get("logprobs") or {}).get("content") or [])[:1]:
        for candidate in token.get("top_logprobs") or []:
            candidates[candidate["token"]] = max(
                candidates.get(candidate["token"], -1e9), candidate["logprob"]
            )
    if (probability := verdict_probability(candidates)) is not None:
        return Reading(probability, text, candidates)
    letter = text.strip()[:1].upper()
    if letter in ("A", "B"):
        return Reading(1.0 if letter == "A" else 0.0, text, candidates)
    raise Unreadable(f"the judge answered {text.strip()[:80]!r}, not A or B")


def campaign_pairs_unjudged(judge: AIJudge, campaign: Campaign) -> Iterable[Comparison]:
    """The campaign's pairs (two answers) this judge has not judged, oldest first."""
    return (
        Comparison.objects.filter(campaign=campaign, response_b__isnull=False, response_c__isnull=True)
        .exclude(ai_verdicts__judge=judge)
        .select_related("prompt", "response_a", "response_b", "campaign")
        .order_by("id")
    )


def judge_campaign(
    *,
    judge: AIJudge,
    campaign: Campaign,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_skip: Callable[[str], None] | None = None,
    client: httpx.Client | None = None,
) -> int:
    """The judge reads each of the campaign's unjudged pairs in both orders and stores its verdict;
    returns how many it judged. ``on_progress(done, total)`` before the first and after each. A pair
    the judge gives no verdict on (neither A nor B) is skipped, told to ``on_skip(why)``, and left
    unjudged; a run whose first ``FIRST_READABLE`` pairs all give none fails (its rubric or model
    cannot judge). Thumbs, rankings and arena
    campaigns: pairs only (an arena's voted turns are pairs)."""
    if campaign.task in (Task.THUMBS, Task.RANKINGS):
        raise Invalid(f"campaign {campaign.name!r} holds {campaign.task}; an AI judge judges pairs")
    pending = list(campaign_pairs_unjudged(judge, campaign))[: limit if limit else None]
    endpoint = judge_endpoint(judge)
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(TIMEOUT, connect=10.0))
    if on_progress is not None:
        on_progress(0, len(pending))
    skipped = 0
    try:
        for done, comparison in enumerate(pending, start=1):
            try:
                straight = reading(client, endpoint, judge_messages(judge, comparison, swapped=False))
                swapped = reading(client, endpoint, judge_messages(judge, comparison, swapped=True))
            except Unreadable as exc:
                skipped += 1
                if skipped == done and done >= min(FIRST_READABLE, len(pending)):
                    raise JudgeFailed(
                        f"{exc.detail} on each of the first {done} pairs: check its rubric and model"
                    ) from exc
                if on_skip is not None:
                    on_skip(exc.detail)
                if on_progress is not None:
                    on_progress(done, len(pending))
                continue
            verdict = both_orders(straight.probability, swapped.probability)
            with transaction.atomic():
                AIVerdict.objects.create(
                    judge=judge,
                    comparison=comparison,
                    choice=verdict.choice,
                    probability_first=verdict.probability_first,
                    consistent=verdict.consistent,
                    readings=[
                        {
                            "shown_first": shown,
                            "probability_shown_first": read.probability,
                            "answer": read.answer,
                            "top_logprobs": read.top_logprobs,
                        }
                        for shown, read in (("a", straight), ("b", swapped))
                    ],
                )
            if on_progress is not None:
                on_progress(done, len(pending))
    finally:
        if own:
            client.close()
    return len(pending) - skipped


def judge_agreement_with_people(
    *, judge: AIJudge, campaign: Campaign, resamples: int = 1000, seed: int = 0
) -> Agreement:
    """The judge against the people's majority on the campaign's pairs both judged (people: every
    judgment stored as a ``Judgment``; the judge's verdicts are never among them)."""
    verdicts = AIVerdict.objects.filter(judge=judge, comparison__campaign=campaign).select_related(
        "comparison__response_a", "comparison__response_b"
    )
    people: dict[int, list[str]] = {}
    for comparison_id, choice in Judgment.objects.filter(
        comparison__ai_verdicts__judge=judge, comparison__campaign=campaign
    ).values_list("comparison_id", "choice"):
        people.setdefault(comparison_id, []).append(choice)
    pairs = []
    for verdict in verdicts:
        choices = people.get(verdict.comparison_id, [])
        winner = majority(choices)[0] if choices else None
        pairs.append(
            JudgedPair(
                people=winner,
                judge=OrderedVerdict(verdict.choice, verdict.probability_first, verdict.consistent),
                length_first=len(verdict.comparison.response_a.text),
                length_second=len(verdict.comparison.response_b.text),
            )
        )
    return judge_agreement(pairs, resamples=resamples, seed=seed)


def judge_run_start(*, judge: AIJudge, campaign: Campaign) -> JudgeRun:
    """A background run of ``judge`` over ``campaign`` (its task enqueued in the same transaction);
    refused while one is queued or running for the two."""
    if campaign.task in (Task.THUMBS, Task.RANKINGS):
        raise Invalid(f"campaign {campaign.name!r} holds {campaign.task}; an AI judge judges pairs")
    from annotate.tasks import judge_run_task

    with transaction.atomic():
        if (
            JudgeRun.objects.select_for_update()
            .filter(judge=judge, campaign=campaign, status__in=["queued", "running"])
            .exists()
        ):
            raise Conflict(f"{judge.name} is already judging {campaign.name!r}: wait for that run to end")
        run = JudgeRun.objects.create(judge=judge, campaign=campaign)
        judge_run_task.enqueue(run_id=run.pk)
    return run


def judge_run_execute(run_id: int) -> str:
    """Run a queued ``JudgeRun``: progress written as it goes; a failure ends it with its reason
    (what was judged is kept). Returns its status."""
    run = JudgeRun.objects.select_related("judge", "campaign").get(pk=run_id)
    JudgeRun.objects.filter(pk=run.pk).update(status=JudgeRunStatus.RUNNING)

    def progress(done: int, total: int) -> None:
        JudgeRun.objects.filter(pk=run.pk).update(done=done, total=total)

    def skip(why: str) -> None:
        JudgeRun.objects.filter(pk=run.pk).update(skipped=F("skipped") + 1)

    try:
        judge_campaign(judge=run.judge, campaign=run.campaign, on_progress=progress, on_skip=skip)
    except (JudgeFailed, Invalid) as exc:
        JudgeRun.objects.filter(pk=run.pk).update(
            status=JudgeRunStatus.FAILED, error=exc.detail, finished_at=timezone.now()
        )
        return JudgeRunStatus.FAILED
    except Exception as exc:
        JudgeRun.objects.filter(pk=run.pk).update(
            status=JudgeRunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        raise
    JudgeRun.objects.filter(pk=run.pk).update(status=JudgeRunStatus.SUCCEEDED, finished_at=timezone.now())
    return JudgeRunStatus.SUCCEEDED


ROUTE_CONFIDENCE = 0.8  # a verdict this sure (either way) with both orders agreeing lowers its pair's overlap


@dataclass(frozen=True)
class RouteReport:
    lowered: int  # comparisons whose overlap went down by one
    kept: int  # judged by the judge, but unsure or inconsistent: the campaign's overlap stays
    judgments_saved: int  # people's judgments no longer asked for


def judge_route(*, judge: AIJudge, campaign: Campaign, confidence: float = ROUTE_CONFIDENCE) -> RouteReport:
    """People where the judge is unsure: each train pair of ``campaign`` the judge read the same way in
    both orders with a probability of at least ``confidence`` for one answer needs one person fewer
    (its overlap lowered by one, never below one, and never below the judgments it has); the pairs it
    was unsure of or read differently in the two orders keep theirs and are served to people before
    the campaign's other pairs (``Comparison.people_first``). Gold pairs are untouched. Once per pair:
    a pair routed before is not routed again."""
    from annotate.models import Kind

    if not 0.5 < confidence <= 1.0:
        raise Invalid(f"confidence must be above 0.5 and at most 1 (got {confidence})")
    lowered = kept = saved = 0
    with transaction.atomic():
        verdicts = AIVerdict.objects.filter(
            judge=judge, comparison__campaign=campaign, comparison__routed_by__isnull=True
        ).select_related("comparison")
        for verdict in verdicts:
            comparison = verdict.comparison
            if comparison.kind == Kind.GOLD:
                continue
            sure = max(verdict.probability_first, 1 - verdict.probability_first) >= confidence
            if not (sure and verdict.consistent):  # people first: served before the campaign's others
                Comparison.objects.filter(pk=comparison.pk).update(people_first=True, routed_by=judge)
                kept += 1
                continue
            locked = Comparison.objects.select_for_update().get(pk=comparison.pk)
            overlap = max(1, locked.judgment_count, locked.overlap - 1)
            if overlap == locked.overlap:
                continue
            saved += locked.overlap - overlap
            Comparison.objects.filter(pk=locked.pk).update(
                overlap=overlap, needs_judgments=locked.judgment_count < overlap, routed_by=judge
            )
            lowered += 1
        if kept:
            Campaign.objects.filter(pk=campaign.pk).update(people_first=True)
    return RouteReport(lowered=lowered, kept=kept, judgments_saved=saved)


SUGGEST_SURE = 0.7  # a suggestion is shown only for a verdict this sure and the same in both orders


def sees_suggestions(campaign: Campaign, annotator_id: int) -> bool:
    """Whether ``annotator`` is in the half of ``campaign``'s annotators shown its judge's verdicts:
    fixed per campaign and annotator (a hash of the two), so each person stays in one half."""
    return zlib.crc32(f"{campaign.pk}:{annotator_id}".encode()) % 2 == 0


def suggestion_for(assignment: Assignment, annotator: AbstractBaseUser) -> dict[str, Any] | None:
    """The campaign's judge's verdict on a served pair, in screen terms, for an annotator in the half
    that sees them (None otherwise, or when the judge has not read the pair); the lease is marked
    ``suggested`` so the campaign page can tell the two halves apart."""
    comparison = assignment.comparison
    campaign = comparison.campaign
    if campaign.suggest_judge_id is None or comparison.response_b_id is None or comparison.response_c_id:
        return None
    if not sees_suggestions(campaign, annotator.pk):
        return None
    verdict = AIVerdict.objects.filter(judge_id=campaign.suggest_judge_id, comparison=comparison).first()
    sure = (
        verdict is not None and max(verdict.probability_first, 1 - verdict.probability_first) >= SUGGEST_SURE
    )
    if verdict is None or not verdict.consistent or not sure:  # a coin flip shown to people is noise
        return None
    if not assignment.suggested:
        Assignment.objects.filter(pk=assignment.pk).update(suggested=True)
        assignment.suggested = True
    first_left = (assignment.left or Side.FIRST) == Side.FIRST
    return {
        "judge": campaign.suggest_judge.name if campaign.suggest_judge else "",
        "side": "Left" if (verdict.choice == Choice.FIRST) == first_left else "Right",
        "sure": max(verdict.probability_first, 1 - verdict.probability_first),
        "consistent": verdict.consistent,
    }


@dataclass(frozen=True)
class SuggestionEffect:
    """People's agreement with the judge on the pairs it read: those shown its verdict, and the half
    not shown it. A gap between the two is the suggestion's pull (anchoring)."""

    shown_agreed: int
    shown: int
    hidden_agreed: int
    hidden: int

    @property
    def shown_share(self) -> float | None:
        return self.shown_agreed / self.shown if self.shown else None

    @property
    def hidden_share(self) -> float | None:
        return self.hidden_agreed / self.hidden if self.hidden else None


def suggestion_effect(*, campaign: Campaign) -> SuggestionEffect | None:
    """``SuggestionEffect`` over the people's decisive verdicts on pairs the campaign's judge read."""
    if campaign.suggest_judge_id is None:
        return None
    verdicts = dict(
        AIVerdict.objects.filter(
            judge_id=campaign.suggest_judge_id, comparison__campaign=campaign
        ).values_list("comparison_id", "choice")
    )
    counts = {True: [0, 0], False: [0, 0]}
    suggested = set(
        Assignment.objects.filter(comparison__campaign=campaign, suggested=True).values_list(
            "comparison_id", "annotator_id"
        )
    )
    people = Judgment.objects.filter(
        comparison_id__in=list(verdicts), source=Source.HUMAN, choice__in=[Choice.FIRST, Choice.SECOND]
    )
    for cid, who, choice in people.values_list("comparison_id", "annotator_id", "choice"):
        shown = (cid, who) in suggested
        if not shown and sees_suggestions(campaign, who):
            continue  # in the shown half, but served before the judge read the pair: neither half
        counts[shown][0] += choice == verdicts[cid]
        counts[shown][1] += 1
    return SuggestionEffect(counts[True][0], counts[True][1], counts[False][0], counts[False][1])
