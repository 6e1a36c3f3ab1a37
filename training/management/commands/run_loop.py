import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Avg
from django.db.models.functions import Length

from annotate.oracles import ORACLES
from annotate.services import comparisons_pair_policies, comparisons_simulate
from config.errors import DomainError
from generation.backends import ModelSpec, backend_load
from generation.models import FinishReason, Response
from generation.services import policy_named, policy_register_embedded
from training.management.arguments import add_training_arguments, training_options
from training.models import RoundStatus
from training.selectors import head_to_head, policy_games
from training.services import (
    GENERATION_DEFAULTS,
    HELDOUT_LABEL,
    heldout_answer,
    round_create,
    round_run,
    sampling_from,
    train_prompts_answer,
)

EVERYTHING = 10**9


class Command(BaseCommand):
    help = (
        "The whole loop, scripted: generate → simulate (oracle) → train → blind held-out comparisons of "
        "the new policy against the previous one and the base → simulate → report, for --rounds rounds. "
        "Prints each round's oracle win rate of the new policy (with a 95% bootstrap interval)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, required=True)
        parser.add_argument("--oracle", required=True, help=f"{', '.join(ORACLES)} or a dotted path")
        parser.add_argument("--prompts", type=int, default=32, help="train prompts answered per round")
        parser.add_argument("--policy", help="the base policy (default: the embedded SmolLM2)")
        parser.add_argument("--noise", type=float, default=0.0, help="oracle noise on training judgments")
        parser.add_argument("--judge-seed", type=int, default=0, help="seed of the simulated judges")
        parser.add_argument("--report", help="also write the per-round results as JSON to this file")
        add_training_arguments(parser)

    def handle(self, *args, **o):
        if o["rounds"] < 1 or o["prompts"] < 1:
            raise CommandError("--rounds and --prompts must be at least 1")
        try:
            return self._loop(o)
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def _simulate(self, o, label: str, noise: float) -> int:
        report = comparisons_simulate(
            oracle_name=o["oracle"], count=EVERYTHING, noise=noise, seed=o["judge_seed"], round_label=label
        )
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(report.verdicts.items())) or "none"
        self._say(f"  simulated {o['oracle']}: {report.judged} judgments in {label!r} ({verdicts})")
        return report.judged

    def _loop(self, o):
        started = time.perf_counter()
        hyperparameters, generation = training_options(o)
        gen = {**GENERATION_DEFAULTS, **generation}
        sampling = sampling_from(gen)
        base = policy_named(o["policy"]) if o["policy"] else policy_register_embedded()
        self._say(
            f"base policy {base.name}; oracle {o['oracle']}; {o['rounds']} round(s) of {o['prompts']} prompts"
        )

        label = f"loop-{base.pk}-base"
        backend = backend_load(gen["backend"], ModelSpec(base.location, base.adapter))
        report, _ = train_prompts_answer(
            policy=base, round_label=label, limit=o["prompts"], generation=gen, backend=backend
        )
        if report is not None:
            self._say(
                f"  {base.name} answered {report.prompts} prompts: {report.extra['comparisons']} comparisons"
            )
        heldout = heldout_answer(policy=base, sampling=sampling, backend=backend)
        del backend
        if not heldout:
            raise CommandError("no held-out (eval split) prompts: import some with --split eval")
        self._say(f"  {base.name} answered {heldout} held-out prompts")

        current, results = base, []
        for number in range(1, o["rounds"] + 1):
            self._say(f"round {number}/{o['rounds']}")
            self._simulate(o, label, o["noise"])
            created = round_create(
                policy=current,
                hyperparameters=hyperparameters,
                min_pairs=1,
                then_generate=o["prompts"] if number < o["rounds"] else 0,
                generation=generation,
            )
            finished = round_run(round_id=created.pk, on_progress=lambda line: self._say(f"    {line}"))
            if finished.status != RoundStatus.SUCCEEDED:
                raise CommandError(f"round {finished.pk} {finished.status}: {finished.error}")
            new = finished.output_policy
            versus_previous = f"{finished.generation_label}-eval"  # queued by the round itself
            self._simulate(o, versus_previous, 0.0)
            versus_base = versus_previous
            if current.pk != base.pk:
                versus_base = f"{finished.generation_label}-vs-base"
                comparisons_pair_policies(
                    new=new,
                    new_label=HELDOUT_LABEL,
                    old=base,
                    old_label=HELDOUT_LABEL,
                    round_label=versus_base,
                    seed=o["judge_seed"],
                )
                self._simulate(o, versus_base, 0.0)
            row = {
                "round": number,
                "training_round": finished.pk,
                "policy": new.name,
                "pairs": finished.pairs,
                "final_metrics": finished.metrics.order_by("-step").first().values,
            }
            for key, opponent, round_label in (
                ("vs_previous", current, versus_previous),
                ("vs_base", base, versus_base),
            ):
                rate = head_to_head(
                    policy_games(include_simulated=True, round_label=round_label),
                    policy=new.pk,
                    opponent=opponent.pk,
                    seed=o["judge_seed"],
                )
                row[key] = rate and {
                    "opponent": opponent.name,
                    "rate": rate.rate,
                    "low": rate.low,
                    "high": rate.high,
                    "wins": rate.wins,
                    "ties": rate.ties,
                    "losses": rate.losses,
                }
                shown = (
                    f"{rate.rate:.3f} [95% {rate.low:.3f}, {rate.high:.3f}] "
                    f"({rate.wins} won, {rate.ties} tied, {rate.losses} lost)"
                    if rate
                    else "no games"
                )
                if key == "vs_previous" or current.pk != base.pk:  # round 1: the previous is the base
                    self._say(f"  {new.name} over {opponent.name} on held-out prompts: {shown}")
            answers = Response.objects.filter(policy=new, round_label=HELDOUT_LABEL)
            row["heldout_answers"] = {
                "count": answers.count(),
                "mean_chars": round(answers.aggregate(n=Avg(Length("text")))["n"] or 0, 1),
                "stopped": answers.filter(finish_reason=FinishReason.STOP).count(),
            }
            self._say(
                f"  {new.name}'s held-out answers: {row['heldout_answers']['mean_chars']} characters on "
                f"average, {row['heldout_answers']['stopped']} of {row['heldout_answers']['count']} ended by "
                "the model (the rest hit --max-new-tokens)"
            )
            results.append(row)
            current, label = new, finished.generation_label
        elapsed = time.perf_counter() - started
        self._say(f"done in {elapsed / 60:.1f} min")
        if o["report"]:
            Path(o["report"]).write_text(
                json.dumps({"rounds": results, "minutes": round(elapsed / 60, 1)}, indent=2) + "\n",
                encoding="utf-8",
            )
