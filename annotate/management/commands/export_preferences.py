import json
import sys
from pathlib import Path

from django.core.management.base import CommandError

from annotate.datacard import (
    card_path_for,
    datacard_render,
    datacard_stats,
    lines_write_atomic,
    text_write_atomic,
)
from annotate.models import Kind
from annotate.selectors import (
    AGGREGATIONS,
    DATASET_TYPES,
    EXPORT_FORMATS,
    EXPORT_SPLITS,
    ExportReport,
    dataset_rows,
    export_comparisons,
)
from annotate.services.ai_judges import judges_named
from annotate.services.campaigns import campaign_named
from config.commands import Command as BaseCommand


class Command(BaseCommand):
    help = (
        "Export judged comparisons as TRL preference JSONL (majority vote per comparison). "
        "Rows stream in constant memory; what was excluded, and why, is printed at the end."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="output file, or - for standard output")
        parser.add_argument("--format", choices=EXPORT_FORMATS, default="conversational")
        parser.add_argument(
            "--type",
            dest="dataset_type",
            choices=DATASET_TYPES,
            default="preference",
            help="TRL dataset type: preference pairs (DPO), unpaired answers with labels (KTO; a both-bad "
            "majority gives two undesirable answers), prompt-completion (SFT on the chosen answers)",
        )
        parser.add_argument(
            "--aggregation",
            choices=AGGREGATIONS,
            default="majority",
            help="a comparison's label: the majority vote, or Dawid-Skene's most likely verdict (weighing "
            "annotators by their estimated reliability); every pair carries its Dawid-Skene confidence",
        )
        parser.add_argument("--campaign", help="only comparisons of this campaign")
        parser.add_argument(
            "--ai-judge",
            action="append",
            default=[],
            help="count this AI judge's verdicts on pairs too (repeatable): one vote each, weighed by its "
            "reliability under dawid-skene; left out unless named",
        )
        parser.add_argument(
            "--no-card",
            action="store_true",
            help="skip the data card (README.md beside the file, a Hugging Face dataset folder's)",
        )
        parser.add_argument("--split", choices=EXPORT_SPLITS, default="train", help="prompt split (train)")
        parser.add_argument(
            "--kind", action="append", choices=Kind.values, help="comparison kinds (default: train and gold)"
        )
        parser.add_argument("--min-agreement", type=float, default=0.0, help="winning share required, 0..1")
        parser.add_argument(
            "--include-ties",
            action="store_true",
            help="also write tie / both-bad majorities (with 'outcome')",
        )

    def handle(
        self,
        *args,
        out,
        format,
        dataset_type,
        aggregation,
        campaign,
        split,
        kind,
        min_agreement,
        include_ties,
        no_card,
        ai_judge,
        **options,
    ):
        if not 0.0 <= min_agreement <= 1.0:
            raise CommandError(f"--min-agreement must be between 0 and 1 (got {min_agreement})")
        report = ExportReport()
        chosen = campaign_named(campaign) if campaign else None
        kinds = kind or (Kind.TRAIN, Kind.GOLD)
        rows = dataset_rows(
            report=report,
            dataset_type=dataset_type,
            aggregation=aggregation,
            fmt=format,
            campaign=chosen,
            split=split,
            kinds=kinds,
            min_agreement=min_agreement,
            include_ties=include_ties,
            **({"ai_judges": judges_named(ai_judge)} if ai_judge else {}),
        )
        if out == "-":
            for row in rows:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.stderr.write(report.summary())
            return
        path = Path(out)
        if not path.parent.is_dir():
            raise CommandError(f"{path.parent}: no such directory")
        lines_write_atomic(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self.stdout.write(f"{path}: {report.summary()}")
        if no_card:
            return
        card = card_path_for(path)
        text_write_atomic(
            card,
            datacard_render(
                data_file=path.name,
                report=report,
                stats=datacard_stats(
                    comparisons=export_comparisons(campaign=chosen, split=split, kinds=kinds)
                ),
                dataset_type=dataset_type,
                fmt=format,
                aggregation=aggregation,
                what=(
                    f"`export_preferences --type {dataset_type} --format {format} --aggregation {aggregation} "
                    f"--split {split} --kind {' --kind '.join(kinds)}"
                    + (f" --campaign {json.dumps(campaign)}" if campaign else "")
                    + "".join(f" --ai-judge {json.dumps(name)}" for name in ai_judge)
                    + "`"
                ),
            ),
        )
        self.stdout.write(
            f"{card}: the data card (who judged, how labels were aggregated, what was left out)"
        )
