"""What ``import_preferences`` and ``import_thumbs`` share: a JSONL file of judged answers read whole
(every bad line named, nothing imported), then imported into a campaign with an imported judgment
each. A subclass names its reader, its import service, its campaign's task and its words."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from annotate.models import Task
from annotate.services.campaigns import campaign_get_or_create
from config.commands import Command as BaseCommand
from generation.models import Split


class JudgedImportCommand(BaseCommand):
    drafts_read: Callable[..., list[Any]]
    importer: Callable[..., Any]
    task: str = Task.PAIRS
    campaign_default = "imported"
    items = "comparisons"  # what the report counts
    duplicates = "duplicate pairs"

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--split", choices=Split.values, help="split for lines that name none (train)")
        parser.add_argument("--tag", action="append", default=[], help="tag every prompt (repeatable)")
        parser.add_argument(
            "--campaign",
            default=self.campaign_default,
            help=f"the campaign its {self.items} join (created if new; {self.campaign_default!r})",
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
            drafts = type(self).drafts_read(stream, name=str(file))
        result = type(self).importer(
            drafts=drafts,
            campaign=campaign_get_or_create(name=campaign, task=self.task),
            split=split,
            tags=tag,
            source=file.name,
            overlap=overlap,
        )
        self.stdout.write(
            f"{file}: {len(drafts)} read, {result.comparisons_created} {self.items} imported into campaign "
            f"{campaign!r} ({result.prompts_created} new prompts), {result.duplicates} {self.duplicates} skipped"
        )
