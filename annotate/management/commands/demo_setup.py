import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from annotate.models import Comparison
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.imports import comparison_create_from_texts
from config.commands import Command as BaseCommand
from generation.messages import messages_from_text, messages_hash
from generation.models import Prompt
from generation.prompt_files import prompt_drafts_read
from generation.services import prompts_import

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEMO_CAMPAIGN = "demo"
DEMO_GUIDELINES = (
    "Pick the answer that helps the person who asked more: correct, on the question, clear. "
    "Prefer the shorter of two equally good answers. Mark **both bad** when neither answers the "
    "question, and **tie** when you cannot tell them apart."
)
USERS = [
    # (username, password, staff)
    ("admin", "prefloop-admin", True),
    ("annotator1", "prefloop-annotator1", False),
    ("annotator2", "prefloop-annotator2", False),
]


class Command(BaseCommand):
    help = (
        "Create the demo users and load the bundled sample prompts (idempotent). With --canned, also queue "
        "the bundled hand-written comparisons (make demo generates them with the embedded model instead). "
        "For demos only: it refuses to run with DEBUG off or on a database where other people can log "
        "in, unless --force, and never changes an existing user's password."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--canned", action="store_true", help="queue the bundled hand-written comparisons"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="run even with DEBUG off or where other users exist (existing passwords still kept)",
        )

    @transaction.atomic
    def handle(self, *args, canned, force, **options):
        User = get_user_model()
        demo_names = [username for username, _, _ in USERS]
        # People who can log in (system users such as 'imported' cannot): a real team's accounts.
        others = [
            user.username
            for user in User.objects.exclude(username__in=demo_names).filter(is_active=True)
            if user.has_usable_password()
        ]
        if not force:
            if not settings.DEBUG:
                raise CommandError(
                    "demo_setup creates users with published passwords: it runs in DEBUG mode only "
                    "(DEBUG=1, as make demo sets), or with --force"
                )
            if others:
                shown = ", ".join(sorted(others)[:5]) + (" ..." if len(others) > 5 else "")
                raise CommandError(
                    f"this database has {len(others)} other user(s) who can log in ({shown}): "
                    "demo_setup is for demo databases; use --force to add the demo users anyway"
                )
        kept = []
        for username, password, staff in USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.is_staff = user.is_superuser = staff
                user.set_password(password)
                user.save()
            else:
                kept.append(username)
        with (DEMO_DIR / "prompts.jsonl").open("rb") as stream:
            drafts = prompt_drafts_read(stream, name="demo/prompts.jsonl")
        prompts = prompts_import(drafts=drafts, source="demo", tags=["demo"])
        campaign = campaign_get_or_create(name=DEMO_CAMPAIGN, overlap=2, guidelines=DEMO_GUIDELINES)
        created = 0
        if canned and not Comparison.objects.filter(campaign=campaign).exists():
            for line in (DEMO_DIR / "comparisons.jsonl").read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                prompt = Prompt.objects.get(content_hash=messages_hash(messages_from_text(row["prompt"])))
                comparison_create_from_texts(
                    prompt=prompt, first=row["first"], second=row["second"], campaign=campaign
                )
                created += 1
        queued = (
            f"{created} canned comparisons queued"
            if canned
            else "the comparisons come next, from the model's answers (make demo generates them)"
        )
        self.stdout.write(
            f"demo data: {prompts.created} prompts imported ({prompts.duplicates} already there); {queued}"
        )
        self.stdout.write("demo users (username / password):")
        for username, password, staff in USERS:
            shown = "(existing: unchanged)" if username in kept else password
            self.stdout.write(
                f"  {username:<11} / {shown:<21} {'staff (admin, API, export)' if staff else 'annotator'}"
            )
