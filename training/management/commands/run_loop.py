import json
from pathlib import Path

from annotate.oracles import ORACLES
from annotate.services.simulation import flips_parse
from config.commands import Command as BaseCommand
from generation.services import policy_named
from training.management.arguments import add_training_arguments, guard_options, training_options
from training.scripted_loop import loop_run


class Command(BaseCommand):
    help = (
        "The whole loop, scripted: generate → simulate (oracle) → train → blind held-out comparisons of "
        "the new policy against the previous one and the base → simulate → report, for --rounds rounds. "
        "Prints each round's oracle win rate of the new policy (with a 95% bootstrap interval)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, required=True)
        parser.add_argument(
            "--sft-first",
            action="store_true",
            help="one supervised round on the judges' chosen answers before the --rounds preference rounds",
        )
        parser.add_argument("--oracle", required=True, help=f"{', '.join(ORACLES)} or a dotted path")
        parser.add_argument("--prompts", type=int, default=32, help="train prompts answered per round")
        parser.add_argument("--policy", help="the base policy (default: the embedded SmolLM2)")
        parser.add_argument("--noise", type=float, default=0.0, help="oracle noise on training judgments")
        parser.add_argument(
            "--check-oracle",
            default="",
            help="a second judge of the same held-out comparisons, printed beside the first: fluency "
            "(the base's per-token NLL: lower wins), an oracle name or a dotted path",
        )
        parser.add_argument(
            "--judge-flips",
            default="",
            help="simulated judges of different reliability on the training comparisons: one per rate, "
            "each reversing that share of its verdicts, e.g. 0,0,0.35,0.35,0.35 with --overlap 3 "
            "(held-out comparisons are judged without flips)",
        )
        parser.add_argument("--judge-seed", type=int, default=0, help="seed of the simulated judges")
        parser.add_argument("--report", help="also write the per-round results as JSON to this file")
        add_training_arguments(parser)

    def handle(self, *args, **o):
        hyperparameters, generation = training_options(o)
        report = loop_run(
            rounds=o["rounds"],
            oracle=o["oracle"],
            prompts=o["prompts"],
            base=policy_named(o["policy"]) if o["policy"] else None,
            noise=o["noise"],
            judge_flips=flips_parse(o["judge_flips"]),
            judge_seed=o["judge_seed"],
            hyperparameters=hyperparameters,
            generation=generation,
            guards=guard_options(o),
            reference_mode=o["reference_mode"],
            aggregation=o["aggregation"],
            check=o["check_oracle"],
            sft_first=o["sft_first"],
            say=self.say,
        )
        if o["report"]:
            Path(o["report"]).write_text(
                json.dumps({"rounds": report.rounds, "minutes": report.minutes}, indent=2) + "\n",
                encoding="utf-8",
            )
