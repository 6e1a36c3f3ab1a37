"""Recording verdicts: every judgment a person or a simulated judge gives goes through
``judgment_record`` (one at a time, under the comparison's lock, every rule checked). Imports are the
one exception: ``annotate.services.imports`` writes an import's judgments directly, onto the
comparisons it creates in the same transaction (nothing else can have judged them; the database's
constraints still hold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate import sql
from annotate.errors import (
    AlreadyJudged,
    AlreadySkipped,
    CampaignNotOpen,
    ComparisonFull,
    ComparisonNotFound,
    JudgmentSteered,
    NotServed,
)
from annotate.models import (
    ADJUDICATIONS,
    PAIR_VERDICTS,
    THUMBS_VERDICTS,
    ArenaTurn,
    Assignment,
    Campaign,
    CampaignStatus,
    Choice,
    Comparison,
    Judgment,
    JudgmentRevision,
    Kind,
    Side,
    Source,
    Strength,
    Verdict,
)
from annotate.selectors import campaign_closed_reason, campaign_open_to, implied_pairs, majority
from config.errors import Invalid, NotAllowed, object_or_404
from config.limits import too_long
from generation.models import FinishReason, Response

IMPORT_USERNAME = "imported"


def system_user(username: str) -> AbstractBaseUser:
    """An inactive user without a password, that judgments not made by a person belong to."""
    user, created = get_user_model().objects.get_or_create(username=username, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def import_user() -> AbstractBaseUser:
    """The user imported judgments belong to (one judgment per comparison)."""
    return system_user(IMPORT_USERNAME)


def judgment_record(
    *,
    comparison: Comparison,
    annotator: AbstractBaseUser,
    choice: str,
    source: str,
    assignment: Assignment | None = None,
    strength: str = "",
    rationale: str = "",
    locked: Comparison | None = None,
    ranking: list[int] | None = None,
) -> Judgment:
    """The one way a judgment is stored, whoever gives it. The caller holds a transaction (and, as
    ``locked``, may pass the comparison it has already locked with its campaign).

    Rules: one judgment per annotator and comparison (AlreadyJudged); never more judgments than the
    comparison's overlap, gold excepted (ComparisonFull; the comparison row is locked first, so two
    annotators finishing together cannot both take the last slot); a served comparison records the
    side shown left and the server-measured time on task, and its lease ends.
    """
    if locked is None:
        locked = _lock(comparison.pk)
    # Known when the caller locked the annotator's assignment and then the comparison (``_lock_open``):
    # no other judgment of theirs can arrive before this transaction ends.
    judged: bool | None = getattr(locked, "judged_by_annotator", None)
    full = locked.kind != Kind.GOLD and locked.judgment_count >= locked.overlap
    if judged is None and full:  # unknown: asked only to tell the two refusals apart
        judged = Judgment.objects.filter(comparison=locked, annotator=annotator).exists()
    if judged:
        raise AlreadyJudged("you have already judged this comparison", comparison=comparison.pk)
    if full:
        raise ComparisonFull("this comparison already has all its judgments", comparison=comparison.pk)
    now = timezone.now()
    judgment = Judgment(
        comparison=locked,
        annotator=annotator,
        choice=choice,
        strength=strength,
        rationale=rationale,
        ranking=ranking,
        left=assignment.left if assignment else "",
        time_on_task_ms=(int((now - assignment.served_at).total_seconds() * 1000) if assignment else None),
        source=source,
    )
    if judged is False:  # checked under the locks: the insert needs no savepoint to fall back on
        judgment.save(force_insert=True)
    else:
        try:
            with transaction.atomic():
                judgment.save(force_insert=True)
        except IntegrityError as exc:  # one judgment per annotator, enforced by the database
            raise AlreadyJudged("you have already judged this comparison", comparison=comparison.pk) from exc
    if assignment is not None:  # its lease ends
        sql.execute("UPDATE {assignment} SET expires_at = %s WHERE id = %s", [sql.moment(now), assignment.pk])
    locked.judgment_count += 1
    _adjudicate(locked)
    locked.needs_judgments = locked.kind == Kind.GOLD or locked.judgment_count < locked.overlap
    sql.execute(
        "UPDATE {comparison} SET judgment_count = %s, overlap = %s, needs_judgments = %s WHERE id = %s",
        [locked.judgment_count, locked.overlap, locked.needs_judgments, locked.pk],
    )
    return judgment


def _adjudicate(comparison: Comparison) -> None:
    """A comparison whose judgments are all in and split with no majority asks for one more (its
    ``overlap`` grows by one), when its campaign adjudicates, up to ADJUDICATIONS beyond the campaign's
    overlap. (The caller holds the comparison's row lock and saves the overlap.)"""
    campaign = comparison.campaign
    if comparison.kind == Kind.GOLD or not campaign.adjudicate or comparison.response_c_id is not None:
        return  # (a ranking has no one majority to split: its pairs are counted in the export)
    if (
        comparison.judgment_count
        < max(2, comparison.overlap)  # not all in yet, or one vote: its own majority
        or comparison.overlap >= campaign.overlap + ADJUDICATIONS
    ):
        return
    choices = list(Judgment.objects.filter(comparison=comparison).values_list("choice", flat=True))
    winner, _ = majority(choices)
    if winner is None:
        comparison.overlap += 1


def _lock(comparison_id: int, *, annotator: AbstractBaseUser | None = None) -> Comparison:
    """The comparison, its row locked for the rest of the transaction, with its campaign; with
    ``annotator``, also whether they have judged it (``judged_by_annotator``), read in the same
    statement (so after any lock the caller already holds). SQL written out (``annotate/sql.py``):
    it is on every judgment."""
    judged = (
        ", EXISTS (SELECT 1 FROM {judgment} j WHERE j.comparison_id = c.id AND j.annotator_id = %s)"
        if annotator is not None
        else ""
    )
    values = sql.row(
        f"SELECT {sql.columns(Comparison, 'c')}, {sql.columns(Campaign, 'k')}{judged}"
        " FROM {comparison} c JOIN {campaign} k ON k.id = c.campaign_id WHERE c.id = %s" + sql.lock("c"),
        [annotator.pk, comparison_id] if annotator is not None else [comparison_id],
    )
    if values is None:
        raise Comparison.DoesNotExist(f"no comparison with id {comparison_id}")
    row = sql.Row(values)
    locked = row.take(Comparison)
    locked.campaign = row.take(Campaign)
    if annotator is not None:
        locked.judged_by_annotator = bool(row.rest()[0])  # type: ignore[attr-defined]
    return locked


def _validate_verdict(*, verdict: str, strength: str, rationale: str = "", thumbs: bool = False) -> None:
    if problem := too_long("rationale", rationale, field="the rationale"):
        raise Invalid(problem)
    allowed = THUMBS_VERDICTS if thumbs else PAIR_VERDICTS
    if verdict not in allowed:
        what = "a thumbs judgment's verdict" if thumbs else "verdict"
        raise Invalid(f"{what} must be one of {', '.join(allowed)} (got {verdict!r})")
    if strength and strength not in Strength.values:
        raise Invalid(f"strength must be one of {', '.join(Strength.values)} (got {strength!r})")
    if strength and verdict not in (Verdict.LEFT, Verdict.RIGHT):
        raise Invalid("a strength applies only when one response wins")


def choice_for(*, verdict: str, left: str) -> str:
    """The Choice (first/second/tie/both_bad) a screen verdict means, given the side shown left."""
    if verdict == Verdict.LEFT:
        return left
    if verdict == Verdict.RIGHT:
        return Side.SECOND if left == Side.FIRST else Side.FIRST
    return verdict


def _served(*, comparison_id: int | str, annotator: AbstractBaseUser) -> Assignment:
    """The annotator's assignment of the comparison (its id as posted), locked, with the comparison
    loaded beside it (not locked: ``_lock_open`` locks it next). Refused: ComparisonNotFound (Invalid
    for an id that is not one), NotServed when it was never served to them, AlreadySkipped when they
    skipped it. SQL written out (``annotate/sql.py``): it is on every judgment."""
    pk = sql.as_id(comparison_id)
    values = (
        sql.row(
            f"SELECT {sql.columns(Assignment, 'a')}, {sql.columns(Comparison, 'c')}"
            " FROM {assignment} a JOIN {comparison} c ON c.id = a.comparison_id"
            " WHERE a.comparison_id = %s AND a.annotator_id = %s" + sql.lock("a"),
            [pk, annotator.pk],
        )
        if pk is not None
        else None
    )
    if values is None:
        object_or_404(Comparison, error=ComparisonNotFound, pk=comparison_id)  # not one: 404 (or 400)
        raise NotServed("this comparison was not served to you", comparison=pk)
    row = sql.Row(values)
    assignment = row.take(Assignment)
    assignment.comparison = row.take(Comparison)
    if assignment.skipped_at is not None:
        raise AlreadySkipped("you skipped this comparison; it cannot be judged now", comparison=pk)
    return assignment


def _lock_open(*, comparison: Comparison, annotator: AbstractBaseUser) -> Comparison:
    """The comparison locked (``_lock``), while its campaign is still open to the annotator
    (CampaignNotOpen: paused, closed, or they were taken off its members). The caller holds the
    annotator's assignment locked (``_served``), so whether they have judged it is known for certain
    once the comparison is locked: a judgment of theirs is only ever stored under that lock."""
    locked = _lock(comparison.pk, annotator=annotator)
    if not campaign_open_to(campaign=locked.campaign, annotator=annotator):
        reason = campaign_closed_reason(campaign=locked.campaign, annotator=annotator)
        raise CampaignNotOpen(f"{reason}: your answer was not recorded", campaign=locked.campaign_id)
    return locked


@transaction.atomic
def judgment_submit(
    *,
    comparison: Comparison,
    annotator: AbstractBaseUser,
    verdict: str,
    strength: str = "",
    rationale: str = "",
    edit: str = "",
    edit_of: str = "",
) -> Judgment:
    """Record a verdict given in screen terms (left/right/tie/both_bad) on a comparison served to
    ``annotator``; the side shown and the time since serving come from the assignment.

    ``edit``: an answer the annotator wrote, rewriting the one shown on ``edit_of`` (left or right) or
    from scratch (blank): stored as a Response written by them (``author``, ``improves``) and linked
    from the judgment; it beats both of the comparison's answers in exports and trains SFT. An edit
    that only repeats one of the two answers is not one, and is dropped.

    A skipped comparison cannot be judged after (AlreadySkipped), nor one whose campaign is no longer
    open to the annotator (paused, closed, or they were taken off its members: CampaignNotOpen). A
    judgment on an expired lease is
    accepted while the comparison still has room (its row is locked, so overlap holds: the lease only
    reserved the slot) and refused with ComparisonFull once others have filled it."""
    return _verdict_record(
        assignment=_served(comparison_id=comparison.pk, annotator=annotator),
        annotator=annotator,
        verdict=verdict,
        strength=strength,
        rationale=rationale,
        edit=edit,
        edit_of=edit_of,
    )


def _verdict_record(
    *,
    assignment: Assignment,
    annotator: AbstractBaseUser,
    verdict: str,
    strength: str,
    rationale: str,
    edit: str,
    edit_of: str,
) -> Judgment:
    """``judgment_submit`` once the assignment is locked (``_served``)."""
    comparison = assignment.comparison
    if comparison.is_ranking:
        raise Invalid("a ranking item is judged with a ranking of its answers, not a verdict")
    _validate_verdict(
        verdict=verdict, strength=strength, rationale=rationale, thumbs=comparison.response_b_id is None
    )
    edit = edit.replace("\r\n", "\n").replace("\x00", "\ufffd").strip()
    if problem := too_long("response", edit, field="the edit"):
        raise Invalid(problem)
    if edit_of not in ("", Verdict.LEFT, Verdict.RIGHT):
        raise Invalid(f"edit_of must be left, right or blank (got {edit_of!r})")
    locked = _lock_open(comparison=comparison, annotator=annotator)
    judgment = judgment_record(
        locked=locked,
        comparison=comparison,
        annotator=annotator,
        choice=choice_for(verdict=verdict, left=assignment.left),
        source=Source.HUMAN,
        assignment=assignment,
        strength=strength or "",
        rationale=rationale,
    )
    if edit and edit not in {r.text for r in (comparison.response_a, comparison.response_b) if r is not None}:
        improves = None
        if edit_of:
            first = choice_for(verdict=edit_of, left=assignment.left) == Choice.FIRST
            improves = comparison.response_a if first else comparison.response_b
        judgment.edit = Response.objects.create(
            prompt=comparison.prompt,
            text=edit,
            author=annotator,
            improves=improves,
            finish_reason=FinishReason.STOP,
        )
        judgment.save(update_fields=["edit"])
    return judgment


def dense_ranks(ranks: Sequence[int]) -> list[int]:
    """1, 2, ... in order of ``ranks`` (equal ranks stay equal): 3, 1, 3 → 2, 1, 2."""
    levels = {rank: i + 1 for i, rank in enumerate(sorted(set(ranks)))}
    return [levels[rank] for rank in ranks]


@transaction.atomic
def ranking_submit(
    *, comparison: Comparison, annotator: AbstractBaseUser, ranks: Sequence[int], rationale: str = ""
) -> Judgment:
    """Record a ranking of a ranking item served to ``annotator``: ``ranks`` gives each answer's rank
    in the order they were shown (1 is best; equal ranks tie), stored in comparison order (a, b, c,
    d) with ``choice`` the a-vs-b verdict it implies. The same rules as ``judgment_submit``: served,
    not skipped, campaign open, room left. One judgment, however many pairs it implies."""
    return _ranking_record(
        assignment=_served(comparison_id=comparison.pk, annotator=annotator),
        annotator=annotator,
        ranks=ranks,
        rationale=rationale,
    )


def _ranking_record(
    *, assignment: Assignment, annotator: AbstractBaseUser, ranks: Sequence[int], rationale: str
) -> Judgment:
    """``ranking_submit`` once the assignment is locked (``_served``)."""
    comparison = assignment.comparison
    if not comparison.is_ranking:
        raise Invalid("a ranking is for a ranking item (three or four answers)")
    if problem := too_long("rationale", rationale, field="the rationale"):
        raise Invalid(problem)
    ranking, choice = _ranking_from_shown(comparison, assignment.order, ranks)
    locked = _lock_open(comparison=comparison, annotator=annotator)
    return judgment_record(
        locked=locked,
        comparison=comparison,
        annotator=annotator,
        choice=choice,
        source=Source.HUMAN,
        assignment=assignment,
        rationale=rationale,
        ranking=ranking,
    )


@dataclass(frozen=True)
class ScreenAnswer:
    """A judgment as a person gives it, on the judging page or through the API: a verdict in screen
    terms (left/right/tie/both_bad; thumbs: good/bad) with its strength and an optional edit, or, for
    a ranking item, each answer's rank in the order its answers were shown."""

    verdict: str = ""
    strength: str = ""
    ranks: Sequence[int] = ()
    rationale: str = ""
    edit: str = ""
    edit_of: str = ""


@transaction.atomic
def judgment_from_screen(
    *, comparison_id: int | str, annotator: AbstractBaseUser, answer: ScreenAnswer
) -> Judgment:
    """The one path from a screen to a judgment, for the page and the API alike, given the
    comparison's id as posted (the comparison is read with the annotator's assignment, not before):
    a ranking item is judged by its ranks (as ``ranking_submit``), a pair or thumbs item by its
    verdict (as ``judgment_submit``, with an edit if one was written)."""
    assignment = _served(comparison_id=comparison_id, annotator=annotator)
    if assignment.comparison.is_ranking:
        return _ranking_record(
            assignment=assignment, annotator=annotator, ranks=answer.ranks, rationale=answer.rationale
        )
    return _verdict_record(
        assignment=assignment,
        annotator=annotator,
        verdict=answer.verdict,
        strength=answer.strength,
        rationale=answer.rationale,
        edit=answer.edit,
        edit_of=answer.edit_of,
    )


def _changeable(judgment: Judgment) -> None:
    campaign = Campaign.objects.get(pk=judgment.comparison.campaign_id)  # its status now, not as cached
    if campaign.status == CampaignStatus.CLOSED:  # closing is how staff freeze the labels they export
        raise CampaignNotOpen(
            f"campaign {campaign.name!r} is closed: its judgments no longer change", campaign=campaign.pk
        )
    if reason := judgment_steered(judgment):
        raise JudgmentSteered(reason, judgment=judgment.pk)


def judgment_steered(judgment: Judgment) -> str:
    """Why ``judgment`` can no longer change when it is an arena vote the conversation went on from
    (its later turns answered the answer it preferred: reversed, the record would contradict them);
    "" otherwise."""
    turn = (
        ArenaTurn.objects.filter(comparison_id=judgment.comparison_id)
        .values("conversation_id", "number")
        .first()
    )
    if (
        turn
        and ArenaTurn.objects.filter(
            conversation_id=turn["conversation_id"], number__gt=turn["number"]
        ).exists()
    ):
        return "this arena vote chose the answer the conversation went on from, so it no longer changes"
    return ""


def _ranking_from_shown(comparison: Comparison, shown: str, ranks: Sequence[int]) -> tuple[list[int], str]:
    """Ranks given in the order the answers were shown → (ranks in comparison order, the a-vs-b
    choice they imply); Invalid naming the rule when they are not one rank per answer."""
    count = len(comparison.answers)
    if len(ranks) != count or not all(isinstance(r, int) and 1 <= r <= count for r in ranks):
        raise Invalid(f"a ranking gives each of the {count} answers a rank from 1 (best) to {count}")
    by_letter = dict(zip(shown or "abcd"[:count], dense_ranks(ranks), strict=True))
    ranking = [by_letter[letter] for letter in "abcd"[:count]]
    (_, _, choice), *_ = implied_pairs(ranking)  # a against b
    return ranking, choice


@transaction.atomic
def ranking_change(
    *, judgment: Judgment, annotator: AbstractBaseUser, ranks: Sequence[int], rationale: str = ""
) -> Judgment:
    """Change one's own ranking (ranks in the order the answers were shown, as when ranking); the
    previous one is kept as a JudgmentRevision. Not once its campaign is closed."""
    if judgment.annotator_id != annotator.pk:
        raise NotAllowed("you can only change your own judgments", judgment=judgment.pk)
    if not judgment.ranking:
        raise Invalid("only a ranking is changed by ranks")
    _changeable(judgment)
    if problem := too_long("rationale", rationale, field="the rationale"):
        raise Invalid(problem)
    ranking, choice = _ranking_from_shown(judgment.comparison, judgment.shown_order, ranks)
    if (ranking, rationale) == (judgment.ranking, judgment.rationale):
        return judgment
    JudgmentRevision.objects.create(
        judgment=judgment, choice=judgment.choice, rationale=judgment.rationale, ranking=judgment.ranking
    )
    judgment.ranking, judgment.choice, judgment.rationale = ranking, choice, rationale
    judgment.save(update_fields=["ranking", "choice", "rationale", "updated_at"])
    return judgment


@transaction.atomic
def judgment_change(
    *, judgment: Judgment, annotator: AbstractBaseUser, verdict: str, strength: str = "", rationale: str = ""
) -> Judgment:
    """Change one's own judgment (verdict in the screen terms it was judged in); the previous
    version is kept as a JudgmentRevision with the time of the change. Not once its campaign is
    closed (CampaignNotOpen): exports and rounds after that see the labels as they were."""
    if judgment.annotator_id != annotator.pk:
        raise NotAllowed("you can only change your own judgments", judgment=judgment.pk)
    if judgment.ranking:
        raise Invalid("a ranking is not changed by a verdict")
    _changeable(judgment)
    _validate_verdict(
        verdict=verdict,
        strength=strength,
        rationale=rationale,
        thumbs=judgment.comparison.response_b_id is None,
    )
    choice = choice_for(verdict=verdict, left=judgment.left or Side.FIRST)
    if (choice, strength, rationale) == (judgment.choice, judgment.strength, judgment.rationale):
        return judgment
    JudgmentRevision.objects.create(
        judgment=judgment, choice=judgment.choice, strength=judgment.strength, rationale=judgment.rationale
    )
    judgment.choice, judgment.strength, judgment.rationale = choice, strength, rationale
    judgment.save(update_fields=["choice", "strength", "rationale", "updated_at"])
    return judgment
