from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import (
    Case,
    F,
    Prefetch,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from annotate import sql
from annotate.models import (
    AIJudge,
    AIVerdict,
    Campaign,
    CampaignStatus,
    Choice,
    Comparison,
    Judgment,
    Kind,
    Task,
)
from annotate.reliability import Reliability, reliability_estimate
from config.invalid_input import InvalidInput
from generation.models import Policy, Response

EXPORT_FORMATS = ("conversational", "standard")
# TRL's dataset types: preference (prompt, chosen, rejected: DPO and its family), unpaired preference
# (prompt, completion, label: KTO), prompt-completion (SFT on the chosen answers)
DATASET_TYPES = ("preference", "unpaired", "prompt-completion", "ranking")
# how a comparison's judgments become its label: the majority, or Dawid-Skene's most likely verdict
AGGREGATIONS = ("majority", "dawid-skene")


def comparisons_reliability(
    *, comparisons: QuerySet[Comparison], ai_votes: dict[int, list[tuple[int, str]]] | None = None
) -> Reliability:
    """Dawid-Skene over the judgments of ``comparisons``, gold comparisons held at their answer;
    ``ai_votes`` (comparison → [(judge id, choice)]) add AI judges as annotators of their own (ids
    negated: -judge id), so each judge's verdicts weigh by its fitted reliability as a person's do."""
    # thumbs items are not comparisons of two: left out of the fit. On gold the answer first given
    # counts: revising it after learning it was wrong must not raise an annotator's weight.
    votes = (
        Judgment.objects.filter(comparison__in=comparisons, comparison__response_b__isnull=False)
        .annotate(
            vote=Case(
                When(comparison__kind=Kind.GOLD, then=Coalesce(NullIf("first_choice", Value("")), "choice")),
                default=F("choice"),
            )
        )
        .values_list("comparison_id", "annotator_id", "vote")
    )
    gold = dict(
        comparisons.filter(kind=Kind.GOLD).exclude(gold_answer="").values_list("id", "gold_answer").order_by()
    )
    machine = [(cid, -judge, choice) for cid, votes_ in (ai_votes or {}).items() for judge, choice in votes_]
    return reliability_estimate(
        itertools.chain(votes.order_by("id").iterator(chunk_size=5000), machine), gold=gold
    )


EXPORT_SPLITS = ("train", "eval", "all")


@dataclass
class ExportReport:
    """Filled while the rows stream: what was written and what was left out, by reason."""

    written: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    rows: int | None = None  # unpaired / prompt-completion exports: rows written (a pair gives 1 or 2)
    edits: int = 0  # annotators' rewrites among them (each: two pairs, or one SFT / desirable row)
    ranking_pairs: int = 0  # pairs implied by rankings among them
    judge_votes: Counter[str] = field(
        default_factory=Counter
    )  # AI judges' verdicts in the written rows, by judge

    def summary(self) -> str:
        parts = [
            f"{self.written} pairs written"
            if self.rows is None
            else f"{self.rows} rows from {self.written} comparisons"
        ]
        if self.edits:
            parts[0] += f" (with {self.edits} annotators' edits)"
        if self.excluded:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.excluded.items()))
            parts.append(f"{sum(self.excluded.values())} comparisons excluded ({reasons})")
        return "; ".join(parts)


def campaigns_open_for(*, annotator: AbstractBaseUser) -> QuerySet[Campaign]:
    """Open campaigns the annotator may judge (open to all, or they are a member), highest priority first."""
    member_of = Campaign.members.through.objects.filter(user_id=annotator.pk).values("campaign_id")
    return (
        Campaign.objects.filter(status=CampaignStatus.OPEN)
        .filter(Q(open_to_all=True) | Q(pk__in=member_of))
        .order_by("-priority", "id")
    )


def campaign_open_sql(alias: str) -> str:
    """``campaigns_open_for``'s rule as an SQL condition on the campaign table aliased ``alias``, for
    the statements written out in SQL (``annotate/sql.py``); its parameters: the open status
    (``CampaignStatus.OPEN``), then the annotator's id."""
    return (
        f"{alias}.status = %s AND ({alias}.open_to_all OR EXISTS (SELECT 1 FROM {{campaign_member}} m"
        f" WHERE m.campaign_id = {alias}.id AND m.user_id = %s))"
    )


def unanswered_sql(alias: str) -> str:
    """The annotator has neither judged nor skipped the comparison aliased ``alias``, as an SQL
    condition for the statements written out in SQL; its parameters: the annotator's id, twice.

    Tested per candidate, whatever PostgreSQL's statistics say: two probes of unique indexes (one
    judgment and one lease per annotator and comparison). A plain ``NOT EXISTS`` is turned into an
    anti-join whose kind follows the statistics: with a campaign's 90,000 imported judgments it was a
    merge anti-join that read some 97,000 judgments in comparison order to find one open comparison.
    ``OFFSET`` keeps each ``NOT EXISTS`` a subplan, which the planner expects to pass half the rows,
    so it still walks the partial index in order and stops at the first that qualifies (a subquery
    ``IS NULL`` instead is expected to pass 0.5%, and PostgreSQL then sorted every open comparison
    of the campaign, testing each: 572,000 buffers for one serve). ``LIMIT 1`` because SQLite takes
    no ``OFFSET`` without it. docs/benchmarks.md, 2026-12-07."""
    return (
        f"NOT EXISTS (SELECT 1 FROM {{judgment}} j WHERE j.comparison_id = {alias}.id AND j.annotator_id = %s"
        " LIMIT 1 OFFSET 0)"
        f" AND NOT EXISTS (SELECT 1 FROM {{assignment}} s WHERE s.comparison_id = {alias}.id"
        " AND s.annotator_id = %s AND s.skipped_at IS NOT NULL LIMIT 1 OFFSET 0)"
    )


def campaign_open_to(*, campaign: Campaign, annotator: AbstractBaseUser) -> bool:
    """Whether ``annotator`` may judge in ``campaign`` now (``campaigns_open_for``, for one campaign
    already loaded: a query only for a members-only campaign)."""
    return campaign.status == CampaignStatus.OPEN and campaign_visible_to(
        campaign=campaign, annotator=annotator
    )


def campaign_closed_reason(*, campaign: Campaign, annotator: AbstractBaseUser) -> str:
    """Why ``campaign`` is not open to ``annotator``, in words they can act on."""
    if campaign.status == CampaignStatus.PAUSED:
        return f"campaign {campaign.name!r} was paused by staff"
    if campaign.status == CampaignStatus.CLOSED:
        return f"campaign {campaign.name!r} is closed"
    return f"you are not a member of campaign {campaign.name!r}"


def campaign_visible_to(*, campaign: Campaign, annotator: AbstractBaseUser) -> bool:
    """Whether ``annotator`` may know ``campaign`` exists (open to all, or they are a member)."""
    return campaign.open_to_all or campaign.members.filter(pk=annotator.pk).exists()


# The most comparisons left that the progress line counts one by one: it is on every judging page,
# so its cost stays bounded however large the campaigns (beyond it the page says "1,000+").
REMAINING_COUNTED = 1000


@dataclass(frozen=True)
class Progress:
    judged_today: int
    remaining: int  # at most REMAINING_COUNTED
    remaining_more: bool = False  # more than that are left


def annotator_progress(*, annotator: AbstractBaseUser) -> Progress:
    """Judged today, and what is left for the annotator: comparisons still wanting judgments in the
    campaigns open to them, that they have neither judged nor skipped, counted up to
    ``REMAINING_COUNTED``. (Shown on every page, so it does not count other annotators' leases per
    comparison: a comparison another annotator holds right now still counts as left.) One statement
    written out in SQL: on every page, the ORM took longer to build it than the database to answer."""
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    counts = sql.row(
        "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM {comparison} c WHERE c.needs_judgments"
        f" AND c.campaign_id IN (SELECT k.id FROM {{campaign}} k WHERE {campaign_open_sql('k')})"
        f" AND {unanswered_sql('c')} LIMIT %s) AS counted),"
        " (SELECT COUNT(*) FROM {judgment} t WHERE t.annotator_id = %s AND t.created_at >= %s)",
        [
            CampaignStatus.OPEN,
            annotator.pk,
            annotator.pk,
            annotator.pk,
            REMAINING_COUNTED + 1,
            annotator.pk,
            sql.moment(start_of_day),
        ],
    )
    assert counts is not None
    remaining, judged_today = counts
    return Progress(
        judged_today=judged_today,
        remaining=min(remaining, REMAINING_COUNTED),
        remaining_more=remaining > REMAINING_COUNTED,
    )


def annotator_gold_accuracy(*, annotator: AbstractBaseUser) -> tuple[int, int]:
    """(correct, judged) over the gold comparisons the annotator has judged, by the answer first given
    (changing a judgment after seeing it was wrong does not improve it)."""
    gold = Judgment.objects.filter(annotator=annotator, comparison__kind=Kind.GOLD)
    return gold.filter(first_choice=F("comparison__gold_answer")).count(), gold.count()


def judgments_visible_to(*, user: AbstractBaseUser) -> QuerySet[Judgment]:
    """Staff see every judgment, anyone else only their own."""
    judgments = Judgment.objects.select_related("annotator").order_by("-id")
    return judgments if user.is_staff else judgments.filter(annotator=user)


def majority(choices: Sequence[str]) -> tuple[str | None, float]:
    """The most frequent choice and its share; None when there is none or two share the top count.
    The one majority vote of the project: export, agreement and the dashboard all use it."""
    counts = Counter(choices).most_common()
    if not counts:
        return None, 0.0
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None, counts[0][1] / len(choices)
    return counts[0][0], counts[0][1] / len(choices)


def export_comparisons(
    *,
    campaign: Campaign | None = None,
    split: str = "train",
    kinds: Sequence[str] = (Kind.TRAIN, Kind.GOLD),
    policy: Policy | None = None,
) -> QuerySet[Comparison]:
    """The comparisons an export looks at (before any is left out): what its data card describes."""
    comparisons = Comparison.objects.filter(kind__in=kinds)
    if split != "all":
        comparisons = comparisons.filter(prompt__split=split)
    if campaign is not None:
        comparisons = comparisons.filter(campaign=campaign)
    if policy is not None:  # its pairs, its thumbs items (one answer), and its arena votes (any opponent)
        own = Q(response_a__policy=policy) & (Q(response_b__policy=policy) | Q(response_b__isnull=True))
        arena = Q(campaign__task=Task.ARENA) & (Q(response_a__policy=policy) | Q(response_b__policy=policy))
        comparisons = comparisons.filter(own | arena)
    return comparisons


MULTI_TURN = "multi-turn prompt (standard format)"


def _prompt_of(messages: list[dict[str, Any]], fmt: str) -> Any | None:
    """A row's prompt: the messages (conversational) or the one user message's text (standard);
    None for a multi-turn prompt in the standard format, which cannot hold it."""
    if fmt == "conversational":
        return messages
    return messages[0]["content"] if len(messages) == 1 else None


def _answer(text: str, fmt: str) -> Any:
    """A row's answer: one assistant message (conversational) or the text (standard)."""
    return [{"role": "assistant", "content": text}] if fmt == "conversational" else text


def preference_rows(
    *,
    report: ExportReport,
    fmt: str = "conversational",
    campaign: Campaign | None = None,
    split: str = "train",
    kinds: Sequence[str] = (Kind.TRAIN, Kind.GOLD),
    min_agreement: float = 0.0,
    include_ties: bool = False,
    policy: Policy | None = None,
    aggregation: str = "majority",
    confidence: bool = True,
    thumbs: bool = False,
    ai_judges: Sequence[AIJudge] = (),
) -> Iterator[dict[str, Any]]:
    """Aggregate each comparison's judgments (majority vote) into one TRL preference row.

    ``ai_judges``: their verdicts on pairs count too, only when asked: each is one more vote in the
    majority, and under ``dawid-skene`` an annotator of its own whose weight is its fitted reliability
    (a pair only a judge read is exported from its verdict alone). Rows then carry ``ai_votes``, and
    ``report.judge_votes`` counts each judge's verdicts in the rows written (the data card says them).

    A thumbs item (one answer judged good or bad) has no pair: left out, unless ``thumbs``, which
    yields it as an unpaired row (``completion``, ``label``: the majority says good) for
    ``dataset_rows``.

    Streams in chunks (constant memory). ``conversational`` rows hold a message-list prompt and a
    one-assistant-message chosen/rejected, so a trainer applies the model's chat template;
    ``standard`` rows hold plain strings and exclude multi-turn prompts. Ties and both-bad majorities
    are left out unless ``include_ties``; then every row carries ``outcome`` (preferred, tie or
    both_bad) and such rows list the responses in comparison order. Every row carries
    ``comparison_id``, ``judgments`` and ``agreement`` (the winning share), and ``confidence``: the
    Dawid-Skene posterior that the chosen answer beats the rejected one (``annotate.reliability``,
    fitted over the judgments of every comparison exported; gold answers held). ``aggregation``
    ``dawid-skene`` takes each comparison's most likely verdict under that model instead of the
    majority (so a reliable annotator can outvote two careless ones); ``confidence=False`` skips the
    fit where only the rows' count matters (majority aggregation only). With ``policy``, only
    comparisons between two of that policy's responses (its own samples: on-policy DPO data).
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"format must be one of {EXPORT_FORMATS} (got {fmt!r})")
    if aggregation not in AGGREGATIONS:
        raise InvalidInput(f"aggregation must be one of {AGGREGATIONS} (got {aggregation!r})")
    comparisons = export_comparisons(campaign=campaign, split=split, kinds=kinds, policy=policy)
    names = {judge.pk: judge.name for judge in ai_judges}
    ai_votes: dict[int, list[tuple[int, str]]] = {}
    if names:
        verdicts = AIVerdict.objects.filter(judge__in=list(names), comparison__in=comparisons)
        for cid, judge_id, choice in verdicts.values_list("comparison_id", "judge_id", "choice").order_by(
            "id"
        ):
            ai_votes.setdefault(cid, []).append((judge_id, choice))
    fit = confidence or aggregation == "dawid-skene"
    reliability = (
        comparisons_reliability(comparisons=comparisons, ai_votes=ai_votes) if fit else Reliability()
    )
    judged = Judgment.objects.select_related("edit").only(
        "comparison_id", "choice", "ranking", "edit__id", "edit__text"
    )
    comparisons = (
        comparisons.select_related("prompt", "response_a", "response_b", "response_c", "response_d")
        .prefetch_related(Prefetch("judgments", queryset=judged))
        .order_by("id")
    )
    for comparison in comparisons.iterator(chunk_size=500):
        judgments = comparison.judgments.all()
        yield from _edit_rows(comparison, [j.edit for j in judgments if j.edit is not None], report, fmt, fit)
        choices = [judgment.choice for judgment in judgments]
        machine = ai_votes.get(comparison.pk, []) if comparison.response_b is not None else []
        if not choices and not machine:
            report.excluded["not judged"] += 1
            continue
        if comparison.response_b is None:
            yield from _thumbs_row(comparison, choices, report, fmt, thumbs, min_agreement)
            continue
        if comparison.is_ranking:
            rankings = [j.ranking for j in judgments if j.ranking]
            yield from _ranking_pairs(comparison, rankings, report, fmt, include_ties, fit, min_agreement)
            continue
        choices += [choice for _, choice in machine]
        winner, agreement = majority(choices)
        if aggregation == "dawid-skene":
            winner = reliability.most_likely(comparison.pk)
            agreement = choices.count(winner) / len(choices)
        if not _kept(
            winner, agreement, report, min_agreement, dropped=None if include_ties else _PAIR_DROPPED
        ):
            continue
        prompt = _prompt_of(comparison.prompt.as_messages(), fmt)
        if prompt is None:
            report.excluded[MULTI_TURN] += 1
            continue
        first, second = comparison.response_a.text, comparison.response_b.text
        if first.strip() == second.strip():  # two responses of the same text: no preference to learn
            report.excluded[IDENTICAL] += 1
            continue
        chosen, rejected = (second, first) if winner == Choice.SECOND else (first, second)
        row: dict[str, Any] = {
            "prompt": prompt,
            "chosen": _answer(chosen, fmt),
            "rejected": _answer(rejected, fmt),
        }
        if include_ties:
            row["outcome"] = winner if winner in (Choice.TIE, Choice.BOTH_BAD) else "preferred"
        row.update(comparison_id=comparison.pk, judgments=len(choices), agreement=round(agreement, 4))
        if fit and winner in (Choice.FIRST, Choice.SECOND):
            posterior = reliability.confidence(comparison.pk, winner)
            row["confidence"] = round(0.5 if posterior is None else posterior, 4)
        if names:
            row["ai_votes"] = len(machine)
            report.judge_votes.update(names[judge_id] for judge_id, _ in machine)
        report.written += 1
        yield row


IDENTICAL = "identical answers"  # a pair of responses with the same text (two samples, one answer)
_PAIR_DROPPED = {Choice.TIE: "tie", Choice.BOTH_BAD: "both bad"}  # a pair's verdicts with no chosen answer


def _kept(
    winner: str | None,
    agreement: float,
    report: ExportReport,
    min_agreement: float,
    *,
    dropped: Mapping[str, str] | None = None,
    what: str = "",
) -> bool:
    """The one ladder from an item's majority to a row, for pairs, thumbs and ranking pairs: no
    majority, agreement below ``min_agreement``, or a verdict ``dropped`` names (ties, both bad) leave
    it out, counted in ``report`` under that reason (``what`` tells a ranking pair's majority apart)."""
    if winner is None:
        reason = f"no majority{what}"
    elif agreement < min_agreement:
        reason = f"agreement below {min_agreement:g}"
    elif dropped and winner in dropped:
        reason = dropped[winner]
    else:
        return True
    report.excluded[reason] += 1
    return False


def _thumbs_row(
    comparison: Comparison,
    choices: list[str],
    report: ExportReport,
    fmt: str,
    wanted: bool,
    min_agreement: float,
) -> Iterator[dict[str, Any]]:
    """A thumbs item's majority as one unpaired row (``wanted``), else the reason it is left out."""
    if not wanted:
        report.excluded["thumbs (one answer: export --type unpaired)"] += 1
        return
    winner, agreement = majority(choices)
    if not _kept(winner, agreement, report, min_agreement):
        return
    prompt = _prompt_of(comparison.prompt.as_messages(), fmt)
    if prompt is None:
        report.excluded[MULTI_TURN] += 1
        return
    row: dict[str, Any] = {"prompt": prompt, "completion": _answer(comparison.response_a.text, fmt)}
    row.update(label=winner == Choice.GOOD, comparison_id=comparison.pk, judgments=len(choices))
    row.update(agreement=round(agreement, 4), thumbs=True)
    report.written += 1
    yield row


def implied_pairs(ranking: Sequence[int]) -> list[tuple[int, int, str]]:
    """Every pair (i, j), i < j, of a ranking's answers and what the ranking says of it: first (i
    ranked above j), second, or tie. Four answers imply six pairs."""
    pairs = []
    for i, j in itertools.combinations(range(len(ranking)), 2):
        verdict = (
            Choice.FIRST
            if ranking[i] < ranking[j]
            else Choice.SECOND
            if ranking[i] > ranking[j]
            else Choice.TIE
        )
        pairs.append((i, j, verdict))
    return pairs


def _ranking_pairs(
    comparison: Comparison,
    rankings: list[list[int]],
    report: ExportReport,
    fmt: str,
    include_ties: bool,
    fit: bool,
    min_agreement: float,
) -> Iterator[dict[str, Any]]:
    """A ranking item as every pair its rankings imply, each labelled by the majority of the rankings
    (``agreement``: that share; ``confidence``: the same share, as no reliability model is fitted over
    rankings). Rows carry ``ranking_pair`` (the two answers' letters)."""
    if not rankings:
        report.excluded["not judged"] += 1
        return
    prompt = _prompt_of(comparison.prompt.as_messages(), fmt)
    if prompt is None:
        report.excluded[MULTI_TURN] += 1
        return
    answers = comparison.answers
    votes: dict[tuple[int, int], list[str]] = {}
    for ranking in rankings:
        for i, j, verdict in implied_pairs(ranking):
            votes.setdefault((i, j), []).append(verdict)
    for (i, j), verdicts in votes.items():
        winner, agreement = majority(verdicts)
        dropped = None if include_ties else {Choice.TIE: "tie (ranking pair)"}
        if not _kept(winner, agreement, report, min_agreement, dropped=dropped, what=" (ranking pair)"):
            continue
        chosen, rejected = (answers[j], answers[i]) if winner == Choice.SECOND else (answers[i], answers[j])
        if chosen.text.strip() == rejected.text.strip():
            report.excluded[IDENTICAL] += 1
            continue
        row: dict[str, Any] = {
            "prompt": prompt,
            "chosen": _answer(chosen.text, fmt),
            "rejected": _answer(rejected.text, fmt),
        }
        if include_ties:
            row["outcome"] = "tie" if winner == Choice.TIE else "preferred"
        row.update(comparison_id=comparison.pk, judgments=len(verdicts), agreement=round(agreement, 4))
        if fit:
            row["confidence"] = round(agreement, 4)
        row["ranking_pair"] = "abcd"[i] + "abcd"[j]
        report.written += 1
        report.ranking_pairs += 1
        yield row


def ranking_rows(
    *, report: ExportReport, fmt: str = "conversational", **options: Any
) -> Iterator[dict[str, Any]]:
    """Every ranking as the ranked list: the answers best first, their ranks (equal ranks tie), one
    row per ranking judgment (``options``: those of ``export_comparisons``)."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"format must be one of {EXPORT_FORMATS} (got {fmt!r})")
    report.rows = 0
    comparisons = export_comparisons(**options).filter(response_c__isnull=False)
    judgments = (
        Judgment.objects.filter(comparison__in=comparisons, ranking__isnull=False)
        .select_related(
            "annotator",
            "comparison__prompt",
            "comparison__response_a",
            "comparison__response_b",
            "comparison__response_c",
            "comparison__response_d",
        )
        .order_by("comparison_id", "id")
    )
    for judgment in judgments.iterator(chunk_size=500):
        comparison = judgment.comparison
        prompt = _prompt_of(comparison.prompt.as_messages(), fmt)
        if prompt is None:
            report.excluded[MULTI_TURN] += 1
            continue
        ordered = sorted(zip(judgment.ranking, comparison.answers, strict=True), key=lambda pair: pair[0])
        row: dict[str, Any] = {"prompt": prompt, "completions": [_answer(a.text, fmt) for _, a in ordered]}
        row.update(
            ranks=[rank for rank, _ in ordered],
            comparison_id=comparison.pk,
            annotator=judgment.annotator.username,
        )
        report.rows += 1
        report.written += 1
        yield row


def _edit_rows(
    comparison: Comparison, edits: Sequence[Response], report: ExportReport, fmt: str, fit: bool
) -> Iterator[dict[str, Any]]:
    """An annotator's rewrite beats both of the comparison's answers: two pairs per edit, whatever
    the comparison's own label (an edit is one person's explicit answer: agreement and confidence 1)."""
    if not edits:
        return
    prompt = _prompt_of(comparison.prompt.as_messages(), fmt)
    if prompt is None:
        return  # the comparison's own row counts the multi-turn exclusion
    for edit in edits:
        report.edits += 1
        for original in (r for r in (comparison.response_a, comparison.response_b) if r is not None):
            row: dict[str, Any] = {
                "prompt": prompt,
                "chosen": _answer(edit.text, fmt),
                "rejected": _answer(original.text, fmt),
            }
            row.update(comparison_id=comparison.pk, judgments=1, agreement=1.0)
            if fit:
                row["confidence"] = 1.0
            row["edit_id"] = edit.pk
            report.written += 1
            yield row


def dataset_rows(
    *, report: ExportReport, dataset_type: str = "preference", **options: Any
) -> Iterator[dict[str, Any]]:
    """The judged comparisons as one of TRL's dataset types (``DATASET_TYPES``), from the same
    majority vote as :func:`preference_rows` (which takes ``options``).

    ``unpaired``: a preferred comparison gives its chosen answer labelled desirable and its rejected
    one not; a both-bad majority gives two undesirable answers; a tie gives nothing (neither answer
    is known to be good or bad); a thumbs item is its answer with its majority label.
    ``prompt-completion``: each chosen answer as the completion (and each thumbs-up answer). An
    annotator's edit (two pairs in a preference export) is one desirable answer, or one completion."""
    if dataset_type not in DATASET_TYPES:
        raise InvalidInput(f"dataset type must be one of {DATASET_TYPES} (got {dataset_type!r})")
    if dataset_type == "preference":
        yield from preference_rows(report=report, **options)
        return
    if dataset_type == "ranking":
        keep = ("campaign", "split", "kinds", "policy")
        yield from ranking_rows(
            report=report,
            fmt=options.get("fmt", "conversational"),
            **{k: v for k, v in options.items() if k in keep},
        )
        return
    unpaired = dataset_type == "unpaired"
    if unpaired:
        options["include_ties"] = True
    report.rows = 0
    edits_seen: set[int] = set()
    for row in preference_rows(report=report, thumbs=True, **options):
        if "ranking_pair" in row:  # KTO and SFT take rankings as pairs or lists, not one by one
            report.written -= 1
            report.ranking_pairs -= 1
            report.excluded["ranking pairs (export as preference or ranking)"] += 1
            continue
        if row.pop("thumbs", False):  # a thumbs item: already one unpaired row
            if not unpaired and not row["label"]:
                report.written -= 1
                report.excluded["thumbs down (no completion to learn)"] += 1
                continue
            report.rows += 1
            yield row if unpaired else {k: v for k, v in row.items() if k != "label"}
            continue
        outcome = row.pop("outcome", "preferred")
        prompt, chosen, rejected = row.pop("prompt"), row.pop("chosen"), row.pop("rejected")
        if "edit_id" in row:
            report.written -= 1  # an edit's two pairs give it once, as the good answer
            if row["edit_id"] in edits_seen:
                continue
            edits_seen.add(row["edit_id"])
            report.rows += 1
            yield {"prompt": prompt, "completion": chosen, **({"label": True} if unpaired else {}), **row}
            continue
        if outcome == Choice.TIE:
            report.written -= 1
            report.excluded["tie"] += 1
            continue
        if not unpaired:
            report.rows += 1
            yield {"prompt": prompt, "completion": chosen, **row}
            continue
        good = outcome == "preferred"
        report.rows += 2
        yield {"prompt": prompt, "completion": chosen, "label": good, **row}
        yield {"prompt": prompt, "completion": rejected, "label": False, **row}
