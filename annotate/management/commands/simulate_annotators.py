from django.core.management.base import BaseCommand, CommandError

from annotate.oracles import ORACLES
from annotate.services import comparisons_simulate
from config.errors import DomainError


class Command(BaseCommand):
    help = (
        "Judge queued comparisons by a scripted preference, as simulated annotators (judgments of source "
        f"'simulated'). --oracle is one of {', '.join(ORACLES)} or a dotted path to a function "
        "(prompt, first, second) -> 'first' | 'second' | 'tie' | 'both_bad'."
    )

    def add_arguments(self, parser):
        parser.add_argument("--oracle", required=True)
        parser.add_argument("--count", type=int, required=True, help="how many judgments at most")
        parser.add_argument(
            "--noise", type=float, default=0.0, help="chance of a random verdict instead, 0..1"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--annotators", type=int, default=0, help="simulated users (default: max overlap)"
        )
        parser.add_argument("--round", dest="round_label", help="only this round's comparisons")

    def handle(self, *args, oracle, count, noise, seed, annotators, round_label, **options):
        if count < 1:
            raise CommandError(f"--count must be at least 1 (got {count})")
        try:
            report = comparisons_simulate(
                oracle_name=oracle,
                count=count,
                noise=noise,
                seed=seed,
                annotators=annotators,
                round_label=round_label,
            )
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        verdicts = ", ".join(f"{k}: {v}" for k, v in sorted(report.verdicts.items())) or "none"
        self.stdout.write(f"oracle {oracle}: {report.judged} comparisons judged ({verdicts})")
