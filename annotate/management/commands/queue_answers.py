from annotate.models import Task
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.pairing import answers_queue
from config.commands import Command as BaseCommand
from generation.services import policy_named


class Command(BaseCommand):
    help = (
        "Queue the answers a policy has already given to train prompts in a campaign, as that campaign's "
        "kind of item (pairs, thumbs: one item per answer, rankings: one item of 3-4 answers per prompt), "
        "without sampling again; prompts already queued there are left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--policy", required=True)
        parser.add_argument("--campaign", required=True, help="created if new, with --task")
        parser.add_argument("--task", choices=Task.values, default=Task.PAIRS, help="a new campaign's task")
        parser.add_argument(
            "--pairs", choices=("random", "all"), default="random", help="for a pairs campaign"
        )
        parser.add_argument("--overlap", type=int, help="judgments wanted per item (default: the campaign's)")

    def handle(self, *args, policy, campaign, task, pairs, overlap, **options):
        chosen = campaign_get_or_create(name=campaign, task=task)
        queued = answers_queue(policy=policy_named(policy), campaign=chosen, pairs=pairs, overlap=overlap)
        self.stdout.write(
            f"{queued} {chosen.task} items of {policy}'s answers queued in campaign {campaign!r}"
        )
