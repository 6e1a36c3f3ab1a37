from django.core.management.base import CommandError

from annotate.oracles import ORACLES
from annotate.services.campaigns import campaign_named
from annotate.services.simulation import comparisons_simulate, flips_parse
from config.commands import Command as BaseCommand


class Command(BaseCommand):
    help = (
        "Judge queued comparisons by a scripted preference, as simulated annotators (judgments of source "
        f"'simulated'). --oracle is one of {', '.join(ORACLES)} or a dotted path to a function "
        "(prompt, first, second) -> 'first' | 'second' | 'tie' | 'both_bad'. They are served like people: "
        "open campaigns that are open to all, highest priority first."
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
        parser.add_argument("--campaign", help="only this campaign's comparisons")
        parser.add_argument(
            "--flips",
            default="",
            help="one simulated judge per rate, each reversing that share of its decisive verdicts, "
            "e.g. 0,0,0.35,0.35,0.35 (judges of different reliability)",
        )

    def handle(self, *args, oracle, count, noise, seed, annotators, campaign, flips, **options):
        if count < 1:
            raise CommandError(f"--count must be at least 1 (got {count})")
        report = comparisons_simulate(
            oracle_name=oracle,
            count=count,
            noise=noise,
            seed=seed,
            annotators=annotators,
            campaign=campaign_named(campaign) if campaign else None,
            flips=flips_parse(flips),
        )
        verdicts = ", ".join(f"{k}: {v}" for k, v in sorted(report.verdicts.items())) or "none"
        flipped = f"; {report.flipped} reversed by the judges' flip rates" if flips else ""
        self.stdout.write(f"oracle {oracle}: {report.judged} comparisons judged ({verdicts}){flipped}")
