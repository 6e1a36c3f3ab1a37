from pathlib import Path

from django.core.management.base import CommandError

from annotate.models import Task
from annotate.preference_files import thumbs_drafts_read
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.imports import thumbs_import
from config.commands import Command as BaseCommand
from generation.models import Split


class Command(BaseCommand):
    help = (
        "Import an existing thumbs log (JSONL: prompt, completion, label true/false: TRL's unpaired "
        "format, standard or conversational) as thumbs items of a thumbs campaign, each with an imported "
        "judgment (good or bad). All or nothing: any bad line stops the import and every bad line is "
        "reported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--split", choices=Split.values, help="split for lines that name none (train)")
        parser.add_argument("--tag", action="append", default=[], help="tag every prompt (repeatable)")
        parser.add_argument(
            "--campaign",
            default="imported thumbs",
            help="a thumbs campaign (created if new; 'imported thumbs')",
        )
        parser.add_argument(
            "--overlap",
            type=int,
            help="judgments wanted per item (default: the campaign's); above 1 leaves room to review",
        )

    def handle(self, *args, file: Path, split, tag, campaign, overlap, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        if overlap is not None and overlap < 1:
            raise CommandError(f"--overlap must be at least 1 (got {overlap})")
        with file.open("rb") as stream:
            drafts = thumbs_drafts_read(stream, name=str(file))
        result = thumbs_import(
            drafts=drafts,
            campaign=campaign_get_or_create(name=campaign, task=Task.THUMBS),
            split=split,
            tags=tag,
            source=file.name,
            overlap=overlap,
        )
        self.stdout.write(
            f"{file}: {len(drafts)} read, {result.comparisons_created} thumbs imported into campaign "
            f"{campaign!r} ({result.prompts_created} new prompts), {result.duplicates} duplicates skipped"
        )
