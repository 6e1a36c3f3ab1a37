from pathlib import Path

from django.core.management.base import CommandError

from config.commands import Command as BaseCommand
from generation.models import Split
from generation.prompt_files import prompt_drafts_read
from generation.services import prompts_import


class Command(BaseCommand):
    help = (
        "Import prompts from JSONL ({'prompt': ...} or {'messages': [...]} per line) or CSV (a 'prompt' "
        "column). All or nothing: any bad line stops the import and every bad line is reported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--split", choices=Split.values, help="split for lines that name none (train)")
        parser.add_argument("--tag", action="append", default=[], help="tag every prompt (repeatable)")
        parser.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file extension")

    def handle(self, *args, file: Path, split, tag, format, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        with file.open("rb") as stream:
            drafts = prompt_drafts_read(stream, name=str(file), fmt=format)
        result = prompts_import(drafts=drafts, split=split, tags=tag, source=file.name)
        self.stdout.write(
            f"{file}: {len(drafts)} read, {result.created} imported, {result.duplicates} duplicates skipped"
        )
