from config.commands import Command as BaseCommand
from training.execution import round_execute


class Command(BaseCommand):
    help = (
        "Run one queued round, follow-up included, in this process and exit (the db_worker's task runs "
        "each round this way, in a child process, so the worker holds no model between rounds)."
    )

    def add_arguments(self, parser):
        parser.add_argument("round_id", type=int)

    def handle(self, *args, round_id, **options):
        finished = round_execute(
            round_id=round_id, on_progress=lambda line: self.say(f"round {round_id}: {line}")
        )
        self.say(f"round {finished.pk} {finished.status}")
