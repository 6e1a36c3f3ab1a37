from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from annotate.errors import AlreadyJudged, ComparisonFull, NotServed
from annotate.models import (
    Assignment,
    Choice,
    Comparison,
    Judgment,
    JudgmentRevision,
    Kind,
    Side,
    Source,
    Strength,
)
from annotate.oracles import VERDICTS as VERDICT_CHOICES
from annotate.oracles import oracle_resolve
from annotate.preference_files import PreferenceDraft
from annotate.selectors import comparisons_open_for
from config.errors import Invalid, NotAllowed
from generation.backends import Backend, Sampling
from generation.models import Policy, Prompt, Response
from generation.services import GenerationReport, prompts_import, prompts_pending, responses_generate

IMPORT_USERNAME = "imported"

# What the annotator clicked, in screen terms, mapped through the side shown on the left.
VERDICTS = ("left", "right", "tie", "both_bad")


@dataclass(frozen=True)
class PreferenceImport:
    prompts_created: int
    comparisons_created: int
    duplicates: int


def _system_user(username: str) -> AbstractBaseUser:
    """An inactive user without a password, that judgments not made by a person belong to."""
    user, created = get_user_model().objects.get_or_create(username=username, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def import_user() -> AbstractBaseUser:
    """The user imported judgments belong to (one judgment per comparison)."""
    return _system_user(IMPORT_USERNAME)


def _response_for(*, prompt: Prompt, text: str) -> Response:
    existing = Response.objects.filter(prompt=prompt, policy=None, text=text).first()
    return existing or Response.objects.create(prompt=prompt, policy=None, text=text)


@transaction.atomic
def preferences_import(
    *,
    drafts: Sequence[PreferenceDraft],
    split: str | None = None,
    tags: Sequence[str] = (),
    source: str = "",
    round_label: str = "imported",
    overlap: int = 1,
) -> PreferenceImport:
    """Prompts, responses, comparisons and one imported judgment (chosen = first) per pair.

    A pair already imported for the same prompt (same two texts, either order) is a duplicate. Give
    ``overlap`` > 1 to leave room for annotators to review the imported verdicts.
    """
    prompt_result = prompts_import(drafts=[d.prompt for d in drafts], split=split, tags=tags, source=source)
    prompts = {
        p.content_hash: p
        for p in Prompt.objects.filter(content_hash__in={d.prompt.content_hash for d in drafts})
    }
    annotator = import_user()
    created = duplicates = 0
    for draft in drafts:
        prompt = prompts[draft.prompt.content_hash]
        chosen = _response_for(prompt=prompt, text=draft.chosen)
        rejected = _response_for(prompt=prompt, text=draft.rejected)
        pair = Q(response_a=chosen, response_b=rejected) | Q(response_a=rejected, response_b=chosen)
        if Comparison.objects.filter(pair).exists():
            duplicates += 1
            continue
        comparison = Comparison.objects.create(
            prompt=prompt, response_a=chosen, response_b=rejected, round_label=round_label, overlap=overlap
        )
        Judgment.objects.create(
            comparison=comparison, annotator=annotator, choice=Choice.FIRST, source=Source.IMPORTED
        )
        created += 1
    return PreferenceImport(
        prompts_created=prompt_result.created, comparisons_created=created, duplicates=duplicates
    )


@transaction.atomic
def comparison_assign_next(
    *, annotator: AbstractBaseUser, round_label: str | None = None
) -> Assignment | None:
    """Serve the annotator their next comparison, reserving it with a lease; None when none is left.

    An unexpired, unjudged, unskipped assignment is served again (a reload shows the same comparison).
    Otherwise the oldest open comparison (``comparisons_open_for``); at ``PREFLOOP_GOLD_RATE`` a gold
    one is preferred while any is left. ``round_label`` serves that round's comparisons only. On PostgreSQL the candidate row is locked with SKIP LOCKED so
    concurrent annotators do not wait on each other; SQLite serialises writers (IMMEDIATE transactions).
    """
    now = timezone.now()
    leases = Assignment.objects.filter(annotator=annotator, expires_at__gt=now, skipped_at=None)
    if round_label is not None:
        leases = leases.filter(comparison__round_label=round_label)
    live = (
        leases.exclude(comparison__in=Judgment.objects.filter(annotator=annotator).values("comparison"))
        .select_related("comparison__prompt", "comparison__response_a", "comparison__response_b")
        .order_by("served_at")
        .first()
    )
    if live is not None:
        return live
    candidates = comparisons_open_for(annotator=annotator, now=now, round_label=round_label).order_by("id")
    preferred = (
        candidates.filter(kind=Kind.GOLD)
        if random.random() < settings.PREFLOOP_GOLD_RATE
        else candidates.exclude(kind=Kind.GOLD)
    )
    comparison = _lock_open(preferred, annotator=annotator, now=now) or _lock_open(
        candidates, annotator=annotator, now=now
    )
    if comparison is None:
        return None
    assignment, _ = Assignment.objects.update_or_create(
        comparison=comparison,
        annotator=annotator,
        defaults={
            "left": random.choice(Side.values),
            "served_at": now,
            "expires_at": now + timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS),
            "skipped_at": None,
        },
    )
    return assignment


def _lock_open(
    candidates: QuerySet[Comparison], *, annotator: AbstractBaseUser, now: datetime
) -> Comparison | None:
    """Lock the first open candidate, and make sure it is still open once locked.

    First pass: SKIP LOCKED, so concurrent annotators take different rows without waiting. Only if
    every candidate is held by someone else, a second pass waits for a lock (a few milliseconds:
    the holders' transactions are short) rather than report an empty queue that is not empty.
    The candidate query counts leases as of its snapshot; a lease committed by the previous lock
    holder after that snapshot is seen by the fresh query made here while we hold the lock.
    """
    passed: list[int] = []
    for skip_locked in (True, False):
        while True:
            comparison = (
                candidates.exclude(pk__in=passed)
                .select_for_update(skip_locked=skip_locked, of=("self",))
                .first()
            )
            if comparison is None:
                break
            if comparisons_open_for(annotator=annotator, now=now).filter(pk=comparison.pk).exists():
                return comparison
            passed.append(comparison.pk)
    return None


@transaction.atomic
def assignment_skip(*, comparison: Comparison, annotator: AbstractBaseUser) -> None:
    """Pass on a served comparison: its lease ends and it is not served to this annotator again."""
    now = timezone.now()
    updated = Assignment.objects.filter(comparison=comparison, annotator=annotator).update(
        skipped_at=now, expires_at=now
    )
    if not updated:
        raise NotServed("this comparison was not served to you", comparison=comparison.pk)


def _validate_verdict(*, verdict: str, strength: str) -> None:
    if verdict not in VERDICTS:
        raise Invalid(f"verdict must be one of {', '.join(VERDICTS)} (got {verdict!r})")
    if strength and strength not in Strength.values:
        raise Invalid(f"strength must be one of {', '.join(Strength.values)} (got {strength!r})")
    if strength and verdict not in ("left", "right"):
        raise Invalid("a strength applies only when one response wins")


def _choice_for(*, verdict: str, left: str) -> str:
    if verdict == "left":
        return left
    if verdict == "right":
        return Side.SECOND if left == Side.FIRST else Side.FIRST
    return verdict


@transaction.atomic
def judgment_submit(
    *,
    comparison: Comparison,
    annotator: AbstractBaseUser,
    verdict: str,
    strength: str = "",
    rationale: str = "",
) -> Judgment:
    """Record a verdict given in screen terms (left/right/tie/both_bad) on a comparison served to
    ``annotator``; the side shown and the time since serving come from the assignment."""
    assignment = (
        Assignment.objects.select_for_update().filter(comparison=comparison, annotator=annotator).first()
    )
    if assignment is None:
        raise NotServed("this comparison was not served to you", comparison=comparison.pk)
    if Judgment.objects.filter(comparison=comparison, annotator=annotator).exists():
        raise AlreadyJudged("you have already judged this comparison", comparison=comparison.pk)
    if (
        comparison.kind != Kind.GOLD
        and Judgment.objects.filter(comparison=comparison).count() >= comparison.overlap
    ):
        raise ComparisonFull("this comparison already has all its judgments", comparison=comparison.pk)
    _validate_verdict(verdict=verdict, strength=strength)
    choice = _choice_for(verdict=verdict, left=assignment.left)
    now = timezone.now()
    try:
        with transaction.atomic():
            judgment = Judgment.objects.create(
                comparison=comparison,
                annotator=annotator,
                choice=choice,
                strength=strength or "",
                rationale=rationale,
                left=assignment.left,
                time_on_task_ms=int((now - assignment.served_at).total_seconds() * 1000),
                source=Source.HUMAN,
            )
    except IntegrityError as exc:  # one judgment per annotator, enforced by the database
        raise AlreadyJudged("you have already judged this comparison", comparison=comparison.pk) from exc
    assignment.expires_at = now
    assignment.save(update_fields=["expires_at"])
    return judgment


@transaction.atomic
def comparison_create_from_texts(
    *, prompt: Prompt, first: str, second: str, round_label: str = "", overlap: int = 1
) -> Comparison:
    """A comparison of two texts written outside prefloop (responses with no policy)."""
    return Comparison.objects.create(
        prompt=prompt,
        response_a=_response_for(prompt=prompt, text=first),
        response_b=_response_for(prompt=prompt, text=second),
        round_label=round_label,
        overlap=overlap,
    )


@transaction.atomic
def judgment_change(
    *, judgment: Judgment, annotator: AbstractBaseUser, verdict: str, strength: str = "", rationale: str = ""
) -> Judgment:
    """Change one's own judgment (verdict in the screen terms it was judged in); the previous
    version is kept as a JudgmentRevision with the time of the change."""
    if judgment.annotator_id != annotator.pk:
        raise NotAllowed("you can only change your own judgments", judgment=judgment.pk)
    _validate_verdict(verdict=verdict, strength=strength)
    choice = _choice_for(verdict=verdict, left=judgment.left or Side.FIRST)
    if (choice, strength, rationale) == (judgment.choice, judgment.strength, judgment.rationale):
        return judgment
    JudgmentRevision.objects.create(
        judgment=judgment, choice=judgment.choice, strength=judgment.strength, rationale=judgment.rationale
    )
    judgment.choice, judgment.strength, judgment.rationale = choice, strength, rationale
    judgment.save(update_fields=["choice", "strength", "rationale", "updated_at"])
    return judgment


PAIRINGS = ("random", "all", "best-worst-by-logprob")


def responses_pair(
    responses: Sequence[Response], *, how: str, rng: random.Random
) -> list[tuple[Response, Response]]:
    """Pairs of distinct responses to compare.

    random: disjoint pairs in a random order (K responses give K // 2); all: every pair (K·(K-1)/2);
    best-worst-by-logprob: the most likely response against the least likely one.
    """
    if len(responses) < 2:
        return []
    if how == "all":
        return list(itertools.combinations(responses, 2))
    if how == "best-worst-by-logprob":
        scored = [r for r in responses if r.mean_logprob is not None]
        if len(scored) >= 2:
            ranked = sorted(scored, key=lambda r: r.mean_logprob)
            return [(ranked[-1], ranked[0])]
        how = "random"  # a backend that gave no log-probs: fall back to a random pair
    if how != "random":
        raise Invalid(f"pairs must be one of {', '.join(PAIRINGS)} (got {how!r})")
    shuffled = list(responses)
    rng.shuffle(shuffled)
    return [(shuffled[i], shuffled[i + 1]) for i in range(0, len(shuffled) - 1, 2)]


def comparisons_generate(
    *,
    policy: Policy,
    prompts: Sequence[Prompt],
    sampling: Sampling,
    backend: Backend,
    pairs: str = "random",
    round_label: str = "",
    overlap: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenerationReport:
    """Sample responses from ``policy`` and queue train comparisons of distinct ones, batch by batch
    (responses and their comparisons commit together)."""
    if pairs not in PAIRINGS:
        raise Invalid(f"pairs must be one of {', '.join(PAIRINGS)} (got {pairs!r})")
    rng = random.Random(sampling.seed)

    def queue(stored: dict[Prompt, list[Response]], report: GenerationReport) -> None:
        comparisons = [
            Comparison(prompt=prompt, response_a=a, response_b=b, round_label=round_label, overlap=overlap)
            for prompt, responses in stored.items()
            for a, b in responses_pair(responses, how=pairs, rng=rng)
        ]
        Comparison.objects.bulk_create(comparisons)
        report.extra["comparisons"] += len(comparisons)
        report.extra["prompts with fewer than 2 distinct responses"] += sum(
            1 for r in stored.values() if len(r) < 2
        )

    return responses_generate(
        policy=policy,
        prompts=prompts,
        sampling=sampling,
        round_label=round_label,
        backend=backend,
        on_batch=queue,
        on_progress=on_progress,
    )


def comparisons_generate_versus(
    *,
    new: Policy,
    old: Policy,
    prompts: Sequence[Prompt],
    sampling: Sampling,
    new_backend: Backend,
    old_backend: Backend,
    round_label: str,
    overlap: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenerationReport:
    """Blind policy-vs-policy comparisons: one response of each policy per prompt (kind eval).

    The old policy answers first (its responses are stored per batch, so a rerun does not redo
    them), then the new one; each new response is paired with the old policy's response in the same
    round, in random order.
    """
    one = Sampling(
        samples=1,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        seed=sampling.seed,
    )
    old_pending = list(
        prompts_pending(
            policy=old, round_label=round_label, prompts=Prompt.objects.filter(pk__in=[p.pk for p in prompts])
        )
    )
    responses_generate(
        policy=old,
        prompts=old_pending,
        sampling=one,
        round_label=round_label,
        backend=old_backend,
        on_progress=on_progress,
    )
    rng = random.Random(sampling.seed)

    def queue(stored: dict[Prompt, list[Response]], report: GenerationReport) -> None:
        mine = {prompt.pk: responses[0] for prompt, responses in stored.items() if responses}
        _versus_queue(
            mine,
            old=old,
            old_label=round_label,
            round_label=round_label,
            overlap=overlap,
            rng=rng,
            report=report,
        )

    new_pending = list(
        prompts_pending(
            policy=new, round_label=round_label, prompts=Prompt.objects.filter(pk__in=[p.pk for p in prompts])
        )
    )
    return responses_generate(
        policy=new,
        prompts=new_pending,
        sampling=one,
        round_label=round_label,
        backend=new_backend,
        on_batch=queue,
        on_progress=on_progress,
    )


def _versus_queue(
    mine: dict[int, Response],
    *,
    old: Policy,
    old_label: str,
    round_label: str,
    overlap: int,
    rng: random.Random,
    report: GenerationReport,
) -> None:
    """Eval comparisons of each of ``mine`` (by prompt id) against ``old``'s response to the same
    prompt in ``old_label``, sides in random order; identical answers are counted, not compared."""
    theirs = {
        r.prompt_id: r
        for r in Response.objects.filter(policy=old, round_label=old_label, prompt__in=list(mine))
    }
    comparisons = []
    for prompt_id, response in mine.items():
        other = theirs.get(prompt_id)
        if other is None:
            continue
        if response.text == other.text:
            report.extra["identical answers"] += 1
            continue
        pair = [response, other]
        rng.shuffle(pair)
        comparisons.append(
            Comparison(
                prompt_id=prompt_id,
                response_a=pair[0],
                response_b=pair[1],
                round_label=round_label,
                kind=Kind.EVAL,
                overlap=overlap,
            )
        )
    Comparison.objects.bulk_create(comparisons)
    report.extra["comparisons"] += len(comparisons)


@transaction.atomic
def comparisons_pair_policies(
    *,
    new: Policy,
    new_label: str,
    old: Policy,
    old_label: str,
    round_label: str,
    overlap: int = 1,
    seed: int = 0,
) -> GenerationReport:
    """Blind eval comparisons between answers both policies already gave (one each per prompt, in
    their own generation labels), so a policy's held-out answers are generated once and compared
    with several others (its parent, the base)."""
    report = GenerationReport()
    mine: dict[int, Response] = {}
    for response in Response.objects.filter(policy=new, round_label=new_label).order_by("id"):
        mine.setdefault(response.prompt_id, response)
    _versus_queue(
        mine,
        old=old,
        old_label=old_label,
        round_label=round_label,
        overlap=overlap,
        rng=random.Random(seed),
        report=report,
    )
    return report


@dataclass
class SimulationReport:
    judged: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)


def simulated_annotator(*, oracle_name: str, index: int) -> AbstractBaseUser:
    """The inactive user a simulated judge works as (``sim:<oracle>:<n>``, no password)."""
    return _system_user(f"sim:{oracle_name.rsplit('.', 1)[-1][:60]}:{index}")


def comparisons_simulate(
    *,
    oracle_name: str,
    count: int,
    noise: float = 0.0,
    seed: int = 0,
    annotators: int = 0,
    round_label: str | None = None,
) -> SimulationReport:
    """Judge up to ``count`` queued comparisons by a scripted oracle, as simulated annotators.

    Comparisons are served exactly as to people (assignment, overlap, leases); the judgments carry
    source "simulated". With probability ``noise`` the oracle's verdict is replaced by a random one.
    ``annotators`` simulated users take turns (default: as many as the largest overlap queued);
    ``round_label`` keeps them to one round's comparisons.
    """
    try:
        oracle = oracle_resolve(oracle_name)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    if not 0.0 <= noise <= 1.0:
        raise Invalid(f"noise must be between 0 and 1 (got {noise})")
    rng = random.Random(seed)
    width = annotators or max(Comparison.objects.aggregate(m=Max("overlap"))["m"] or 1, 1)
    users = [simulated_annotator(oracle_name=oracle_name, index=i + 1) for i in range(width)]
    report = SimulationReport()
    idle: set[int] = set()
    while report.judged < count and len(idle) < len(users):
        for user in users:
            if report.judged >= count or user.pk in idle:
                continue
            assignment = comparison_assign_next(annotator=user, round_label=round_label)
            if assignment is None:
                idle.add(user.pk)
                continue
            comparison = assignment.comparison
            verdict = oracle(
                comparison.prompt.as_messages()[-1]["content"],
                comparison.response_a.text,
                comparison.response_b.text,
            )
            if verdict not in VERDICT_CHOICES:
                raise Invalid(
                    f"oracle {oracle_name!r} answered {verdict!r}; expected one of {VERDICT_CHOICES}"
                )
            if rng.random() < noise:
                verdict = rng.choice(VERDICT_CHOICES)
            with transaction.atomic():
                Judgment.objects.create(
                    comparison=comparison,
                    annotator=user,
                    choice=verdict,
                    left=assignment.left,
                    source=Source.SIMULATED,
                    time_on_task_ms=0,
                )
                Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now())
            report.judged += 1
            report.verdicts[verdict] += 1
    return report
