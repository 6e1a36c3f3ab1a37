import signal
import threading

from config.commands import Command as BaseCommand


class Command(BaseCommand):
    help = (
        "Write the arena's live answers until stopped: take the turns annotators asked for, oldest "
        "first, and store both answers as they stream from the policies' engines (the web only relays)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--slots", type=int, default=8, help="turns generated at once (each is two answers)"
        )

    def handle(self, *args, slots, **options):
        from annotate.services.arena_runner import arena_runner_run

        stop = threading.Event()
        for received in (signal.SIGINT, signal.SIGTERM):
            signal.signal(received, lambda *_: stop.set())
        self.say(f"arena runner: up to {slots} turns at once (Ctrl-C stops it)")
        arena_runner_run(slots=slots, stop=stop)
