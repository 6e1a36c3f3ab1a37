from pathlib import Path

from django.core.management.base import CommandError

from annotate.preference_files import preference_drafts_read
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.imports import preferences_import
from config.commands import Command as BaseCommand
from generation.models import Split


class Command(BaseCommand):
    help = (
        "Import existing preference pairs (JSONL: prompt/chosen/rejected, prompt/preferred/dispreferred, "
        "or conversational chosen/rejected message lists) as comparisons of a campaign, each with an "
        "imported judgment. All or nothing: any bad line stops the import and every bad line is reported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--split", choices=Split.values, help="split for lines that name none (train)")
        parser.add_argument("--tag", action="append", default=[], help="tag every prompt (repeatable)")
        parser.add_argument(
            "--campaign", default="imported", help="campaign of the comparisons (created if new; 'imported')"
        )
        parser.add_argument(
            "--overlap",
            type=int,
            help="judgments wanted per comparison (default: the campaign's); above 1 leaves room to review",
        )

    def handle(self, *args, file: Path, split, tag, campaign, overlap, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        if overlap is not None and overlap < 1:
            raise CommandError(f"--overlap must be at least 1 (got {overlap})")
        with file.open("rb") as stream:
            drafts = preference_drafts_read(stream, name=str(file))
        result = preferences_import(
            drafts=drafts,
            campaign=campaign_get_or_create(name=campaign),
            split=split,
            tags=tag,
            source=file.name,
            overlap=overlap,
        )
        self.stdout.write(
            f"{file}: {len(drafts)} read, {result.comparisons_created} comparisons imported into campaign "
            f"{campaign!r} ({result.prompts_created} new prompts), {result.duplicates} duplicate pairs skipped"
        )
