from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotate.preference_files import preference_drafts_read
from annotate.services import preferences_import
from config.errors import DomainError
from generation.models import Split


class Command(BaseCommand):
    help = (
        "Import existing preference pairs (JSONL: prompt/chosen/rejected, prompt/preferred/dispreferred, "
        "or conversational chosen/rejected message lists) as comparisons with an imported judgment. "
        "All or nothing: any bad line stops the import and every bad line is reported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--split", choices=Split.values, help="split for lines that name none (train)")
        parser.add_argument("--tag", action="append", default=[], help="tag every prompt (repeatable)")
        parser.add_argument("--round", dest="round_label", default="imported", help="round label (imported)")
        parser.add_argument(
            "--overlap",
            type=int,
            default=1,
            help="judgments wanted per comparison; above 1 leaves room to review",
        )

    def handle(self, *args, file: Path, split, tag, round_label, overlap, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        if overlap < 1:
            raise CommandError(f"--overlap must be at least 1 (got {overlap})")
        try:
            with file.open("rb") as stream:
                drafts = preference_drafts_read(stream, name=str(file))
            result = preferences_import(
                drafts=drafts,
                split=split,
                tags=tag,
                source=file.name,
                round_label=round_label,
                overlap=overlap,
            )
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(
            f"{file}: {len(drafts)} read, {result.comparisons_created} comparisons imported "
            f"({result.prompts_created} new prompts), {result.duplicates} duplicate pairs skipped"
        )
