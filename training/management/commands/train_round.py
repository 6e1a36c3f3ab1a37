from django.core.management.base import CommandError

from annotate.services.ai_judges import judges_named
from config.commands import Command as BaseCommand
from generation.services import policy_named
from training.execution import round_execute
from training.management.arguments import add_training_arguments, guard_options, training_options
from training.models import RoundStatus
from training.rounds import RoundRequest, round_create
from training.tasks import round_start


class Command(BaseCommand):
    help = (
        "Run a DPO round: export the judged comparisons between the policy's own answers, train with "
        "training/dpo, register the result as a new policy (its parent: the starting one) and, with "
        "--then-generate N, queue comparisons of its answers to the next N prompts in a new campaign (and "
        "blind held-out comparisons against its parent in an evaluation campaign). Runs here; --enqueue "
        "hands it to a db_worker instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--policy", required=True, help="the starting policy")
        parser.add_argument("--reference", help="reference policy for the DPO loss (default: --policy)")
        parser.add_argument("--min-pairs", type=int, help="refuse with fewer pairs (PREFLOOP_MIN_PAIRS: 8)")
        parser.add_argument(
            "--then-generate", type=int, default=0, metavar="N", help="prompts to answer next"
        )
        parser.add_argument("--enqueue", action="store_true", help="queue it for a db_worker and return")
        add_training_arguments(parser)

    def handle(self, *args, **o):
        hyperparameters, generation = training_options(o)
        policy = policy_named(o["policy"])
        request = RoundRequest(
            policy=policy,
            reference=policy_named(o["reference"]) if o["reference"] else None,
            hyperparameters=hyperparameters,
            min_pairs=o["min_pairs"],
            then_generate=o["then_generate"],
            generation=generation,
            guards=guard_options(o),
            reference_mode=o["reference_mode"],
            aggregation=o["aggregation"],
            ai_judges=tuple(judges_named(o["ai_judge"])),
        )
        if o["enqueue"]:
            queued = round_start(request=request)
            self.stdout.write(f"round {queued.pk} queued (task {queued.task_id}); a db_worker runs it")
            return
        created = round_create(request=request)
        self.say(f"round {created.pk}: {policy.name}, running here")
        finished = round_execute(round_id=created.pk, on_progress=lambda line: self.say(f"  {line}"))
        if finished.status != RoundStatus.SUCCEEDED:
            raise CommandError(f"round {finished.pk} {finished.status}: {finished.error or 'see its log'}")
        self.stdout.write(
            f"round {finished.pk} succeeded: {finished.pairs} pairs, policy {finished.output_policy.name} "
            f"at {finished.output_policy.location}"
        )
