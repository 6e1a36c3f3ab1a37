"""The data card of an export: a Hugging Face dataset README (YAML header with the features and the
split, then what is in the data, who judged it, how the labels were aggregated, how well the
annotators agreed, what was left out and why, and each campaign's guidelines with their hash).

Written beside every ``export_preferences`` file and every round's ``data.jsonl``; the figures are
over the comparisons the export looked at (``selectors.export_comparisons``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from annotate.models import Campaign, Choice, Comparison, Judgment, Kind
from annotate.reliability import krippendorff_alpha_nominal, left_chosen
from annotate.selectors import ExportReport

CARD_MARK = "<!-- prefloop data card -->"  # an existing README.md without it is never overwritten

_MESSAGES = [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]


@dataclass
class CardStats:
    judgments: Counter[str] = field(default_factory=Counter)  # by source: human, imported, simulated
    annotators: Counter[str] = field(default_factory=Counter)  # distinct annotators by source
    alpha: float | None = None  # Krippendorff's alpha, nominal, over comparisons with 2+ judgments
    alpha_units: int = 0
    gold_accuracy: float | None = None
    gold_judged: int = 0
    left_share: float | None = None  # of decisive verdicts, the share for the answer shown left
    campaigns: list[Campaign] = field(default_factory=list)


def datacard_stats(*, comparisons: QuerySet[Comparison]) -> CardStats:
    """Who judged ``comparisons``, how well they agreed, gold accuracy, position bias."""
    stats = CardStats()
    votes: dict[int, list[str]] = {}
    people: dict[str, set[int]] = {}
    gold_right = decided = left = 0
    rows = Judgment.objects.filter(comparison__in=comparisons).values_list(
        "comparison_id", "annotator_id", "source", "choice", "first_choice", "left",
        "comparison__kind", "comparison__gold_answer",
    )  # fmt: skip
    for comparison_id, annotator_id, source, choice, first, shown_left, kind, gold in rows.iterator(
        chunk_size=5000
    ):
        stats.judgments[source] += 1
        people.setdefault(source, set()).add(annotator_id)
        votes.setdefault(comparison_id, []).append(choice)
        if kind == Kind.GOLD and gold:
            stats.gold_judged += 1
            gold_right += first == gold
        if choice in (Choice.FIRST, Choice.SECOND) and shown_left:
            decided += 1
            left += left_chosen(choice, shown_left)
    stats.annotators = Counter({source: len(ids) for source, ids in people.items()})
    units = [[Counter(v).get(c, 0) for c in Choice.values] for v in votes.values() if len(v) >= 2]
    stats.alpha_units = len(units)
    stats.alpha = krippendorff_alpha_nominal(units)
    stats.gold_accuracy = gold_right / stats.gold_judged if stats.gold_judged else None
    stats.left_share = left / decided if decided else None
    stats.campaigns = list(Campaign.objects.filter(pk__in=comparisons.values("campaign")).order_by("name"))
    return stats


def _features(
    dataset_type: str, fmt: str, edits: bool = False, ranking_pairs: bool = False
) -> list[dict[str, Any]]:
    text: dict[str, Any] = {"dtype": "string"}
    prompt = {"list": _MESSAGES} if fmt == "conversational" else text
    answer = {"list": _MESSAGES} if fmt == "conversational" else text
    if dataset_type == "ranking":
        columns = [
            ("prompt", prompt),
            ("completions", {"list": answer}),
            ("ranks", {"list": {"dtype": "int64"}}),
        ]
        columns += [("comparison_id", {"dtype": "int64"}), ("annotator", text)]
        return [{"name": name, **kind} for name, kind in columns]
    if dataset_type == "preference":
        columns = [("prompt", prompt), ("chosen", answer), ("rejected", answer)]
    else:
        columns = [("prompt", prompt), ("completion", answer)]
        if dataset_type == "unpaired":
            columns.append(("label", {"dtype": "bool"}))
    columns += [("comparison_id", {"dtype": "int64"}), ("judgments", {"dtype": "int64"})]
    columns += [("agreement", {"dtype": "float64"}), ("confidence", {"dtype": "float64"})]
    if edits:
        columns.append(("edit_id", {"dtype": "int64"}))
    if ranking_pairs:
        columns.append(("ranking_pair", text))
    return [{"name": name, **kind} for name, kind in columns]


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """The small YAML the header needs (mappings, lists, scalars as JSON strings)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list):
                lines += [f"{pad}{key}:", *_yaml(item, indent + 1)]
            else:
                lines.append(f"{pad}{key}: {json.dumps(item)}")
    else:
        for item in value:
            if not isinstance(item, dict | list):
                lines.append(f"{pad}- {json.dumps(item)}")
                continue
            nested = _yaml(item, indent + 1)
            lines.append(f"{pad}- {nested[0].strip()}")
            lines += nested[1:]
    return lines


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def datacard_render(
    *,
    data_file: str,
    report: ExportReport,
    stats: CardStats,
    dataset_type: str,
    fmt: str,
    aggregation: str,
    what: str,
) -> str:
    """The README.md for ``data_file`` (a name in the same folder). ``what``: who wrote it."""
    header = {
        "pretty_name": "prefloop judgments",
        "tags": ["prefloop", {"preference": "dpo", "unpaired": "kto", "prompt-completion": "sft", "ranking": "ranking"}[dataset_type]],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
        # no `splits`: `datasets` wants num_bytes beside num_examples and warns without; the rows are counted below
        "dataset_info": {"features": _features(dataset_type, fmt, edits=bool(report.edits), ranking_pairs=bool(report.ranking_pairs))},
    }  # fmt: skip
    rows = report.rows if report.rows is not None else report.written
    excluded = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.excluded.items())) or "none"
    judged = "; ".join(
        f"{source}: {stats.judgments[source]} judgments by {stats.annotators[source]} annotator(s)"
        for source in sorted(stats.judgments)
    )
    lines = [
        "---",
        *_yaml(header),
        "---",
        "",
        "# Judgments exported from prefloop",
        "",
        CARD_MARK,
        "",
        f"Written by {what} on {timezone.now():%Y-%m-%d %H:%M} UTC: `{data_file}`, TRL's **{dataset_type}** type, "
        f"{fmt} rows.",
        "",
        "## What is in it",
        "",
        f"- {rows} rows from {report.written} comparisons; left out: {excluded}.",
        f"- Labels: {'the majority vote of each comparison' if aggregation == 'majority' else 'each comparison’s most likely verdict under a Dawid-Skene model of the annotators'}"
        " (`aggregation`); `agreement` is the winning share of its judgments, `confidence` the Dawid-Skene"
        " posterior that the chosen answer beats the rejected one.",
        *(
            [
                f"- {report.edits} answers written by annotators on the judging page (rows with `edit_id`): "
                "each beats both answers of its comparison (agreement and confidence 1)."
            ]
            if report.edits
            else []
        ),
        *(
            [
                f"- {report.ranking_pairs} pairs implied by rankings (rows with `ranking_pair`, the two answers' "
                "letters): each labelled by the majority of its item's rankings; `confidence` is that share."
            ]
            if report.ranking_pairs
            else []
        ),
        *(
            [
                "- AI judges' verdicts among the votes (asked for; rows carry `ai_votes`): "
                + ", ".join(f"{name}: {n}" for name, n in sorted(report.judge_votes.items()))
                + ". Each counts as one vote in a majority, and under Dawid-Skene weighs by its judge's fitted "
                "reliability, as a person's does."
            ]
            if report.judge_votes
            else []
        ),
        "",
        "## Who judged",
        "",
        f"- {judged or 'nobody yet'}.",
        "",
        "## Agreement and quality",
        "",
        f"- Krippendorff's alpha (nominal, over the {stats.alpha_units} comparisons with several judgments): "
        f"{'–' if stats.alpha is None else f'{stats.alpha:.3f}'}.",
        f"- Gold accuracy (first answers on {stats.gold_judged} gold judgments): {_percent(stats.gold_accuracy)}.",
        f"- Position bias: {_percent(stats.left_share)} of decisive verdicts went to the answer shown on the left "
        "(50% is none).",
        "",
        "## Campaigns and their guidelines",
        "",
    ]
    for campaign in stats.campaigns:
        digest = hashlib.sha256(campaign.guidelines.encode("utf-8")).hexdigest()
        lines += [f"### {campaign.name}", "", f"Guidelines SHA-256 `{digest}`:", ""]
        lines += [f"> {line}" if line else ">" for line in (campaign.guidelines or "(none)").splitlines()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def file_mode_shared() -> int:
    """The mode a new file would get from ``open()`` under this process's umask (usually 0644): an
    export is for others to read, and ``mkstemp`` makes its temporary file 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def lines_write_atomic(path: Path, lines: Iterable[str]) -> None:
    """``lines`` into ``path`` through a temporary file renamed when complete (a failure leaves no
    partial file), readable as any new file is, not ``mkstemp``'s 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.writelines(lines)
        os.chmod(tmp, file_mode_shared())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def text_write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file renamed when complete."""
    lines_write_atomic(path, [text])


def card_path_for(data_file: Path) -> Path:
    """Where an export's card goes: README.md beside it (a Hugging Face dataset folder), unless a
    README.md that prefloop did not write is there already; then ``<file name>.README.md``."""
    readme = data_file.parent / "README.md"
    if readme.exists() and CARD_MARK not in readme.read_text(encoding="utf-8", errors="replace"):
        return data_file.parent / f"{data_file.name}.README.md"
    return readme
