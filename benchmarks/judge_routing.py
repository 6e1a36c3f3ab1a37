"""People where the AI judge is unsure: how many human judgments routing saves, and what it costs the
labels, through the project's own serving, adjudication, routing and export (a fresh SQLite database).

Two identical campaigns of --pairs pairs (overlap 3, split majorities adjudicated), whose true verdict
is known (the "shorter" oracle: the shorter answer is better). Simulated people (``simulate_annotators``'s
path: served by the queue under leases) each reverse --flip of their verdicts. A simulated AI judge of
known quality reads every pair of the second campaign: --inconsistent of its verdicts differ between
the two orders (probability near 0.5), the rest are right --judge-accuracy of the time with a
confident probability (0.8-0.99). ``judge_route`` then lowers by one the overlap of the pairs it read
surely and the same both ways. People judge both campaigns until nothing is left. Printed per seed and
in all: human judgments spent, the labels the export gives (majority, ties and splits left out), how
many are right, and the saving; and the routed campaign's labels with the judge's verdict counted as
one more vote (``export_preferences --ai-judge``).

What is measured is the labels, not a trained policy: "the same final win rate" would need a training
round per setting and seed (minutes to hours each here); label accuracy is what a round learns from.

    python benchmarks/judge_routing.py
    python benchmarks/judge_routing.py --pairs 400 --seeds 5 --flip 0.25
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.databases import bench_env, fresh_database


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--flip", type=float, default=0.2, help="each person's share of reversed verdicts")
    parser.add_argument("--judge-accuracy", type=float, default=0.85, help="of its order-consistent verdicts")
    parser.add_argument(
        "--inconsistent", type=float, default=0.1, help="share read differently in the two orders"
    )
    options = parser.parse_args()
    os.environ.update(bench_env(fresh_database("sqlite", "judge_routing")))
    import django

    django.setup()
    print(f"command: python benchmarks/judge_routing.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"{options.pairs} pairs a campaign, overlap 3 (splits adjudicated, up to 5), people reverse "
        f"{options.flip:.0%} of their verdicts; judge: {options.inconsistent:.0%} order-inconsistent, "
        f"{options.judge_accuracy:.0%} right otherwise"
    )
    print(
        f"{'seed':>4}  {'routing':>7}  {'people':>6}  {'labels':>6}  {'right':>6}  {'accuracy':>8}  {'lowered':>7}"
    )
    runs = [run(seed, options) for seed in range(options.seeds)]
    saved = [1 - r["with"]["people"] / r["without"]["people"] for r in runs]
    accuracy_change = [r["with"]["accuracy"] - r["without"]["accuracy"] for r in runs]
    voted = [r["with, judge votes"]["accuracy"] - r["without"]["accuracy"] for r in runs]
    labels = [r["with, judge votes"]["labels"] / r["without"]["labels"] - 1 for r in runs]
    print(
        f"routed, with the judge's verdict as one more vote: label accuracy change {statistics.mean(voted):+.1%} "
        f"(seeds: {', '.join(f'{a:+.1%}' for a in voted)}), labels {statistics.mean(labels):+.1%}"
    )
    print(
        f"human judgments saved by routing: {statistics.mean(saved):.1%} (seeds: "
        f"{', '.join(f'{s:.1%}' for s in saved)}); label accuracy change: "
        f"{statistics.mean(accuracy_change):+.1%} (seeds: {', '.join(f'{a:+.1%}' for a in accuracy_change)})"
    )


def run(seed: int, options: argparse.Namespace) -> dict:
    from annotate.models import AIJudge, AIVerdict, Campaign, Comparison, Judgment
    from annotate.selectors import ExportReport, preference_rows
    from annotate.services.ai_judges import judge_route
    from annotate.services.simulation import comparisons_simulate
    from tests.factories import CampaignFactory, ComparisonFactory, PromptFactory, ResponseFactory

    rng = random.Random(seed)
    Judgment.objects.all().delete()
    AIVerdict.objects.all().delete()
    Comparison.objects.all().delete()
    Campaign.objects.all().delete()
    judge, _ = AIJudge.objects.get_or_create(
        name="simulated", defaults={"url": "http://127.0.0.1:9", "model": "m"}
    )
    lengths = [(rng.randint(5, 60), rng.randint(5, 60)) for _ in range(options.pairs)]
    lengths = [(a, b if b != a else a + 1) for a, b in lengths]
    campaigns = {}
    for name in ("without", "with"):
        campaign = CampaignFactory(name=f"{name} routing {seed}", overlap=3, gold_rate=0.0, adjudicate=True)
        for i, (a, b) in enumerate(lengths):
            prompt = PromptFactory(text=f"question {seed}-{name}-{i}")
            ComparisonFactory(
                campaign=campaign,
                prompt=prompt,
                response_a=ResponseFactory(prompt=prompt, text="a" * a),
                response_b=ResponseFactory(prompt=prompt, text="b" * b),
                overlap=3,
            )
        campaigns[name] = campaign
    for comparison in Comparison.objects.filter(campaign=campaigns["with"]):
        truth_first = len(comparison.response_a.text) < len(comparison.response_b.text)
        if rng.random() < options.inconsistent:
            probability, consistent = rng.uniform(0.4, 0.6), False
        else:
            right = rng.random() < options.judge_accuracy
            sure = rng.uniform(0.8, 0.99)
            says_first = truth_first if right else not truth_first
            probability, consistent = (sure if says_first else 1 - sure), True
        AIVerdict.objects.create(
            judge=judge,
            comparison=comparison,
            choice="first" if probability >= 0.5 else "second",
            probability_first=probability,
            consistent=consistent,
        )
    lowered = judge_route(judge=judge, campaign=campaigns["with"]).lowered
    results = {}
    for name, campaign in campaigns.items():
        comparisons_simulate(
            oracle_name="shorter",
            count=10**9,
            seed=seed,
            campaign=campaign,
            flips=[options.flip] * 5,
        )
        people = Judgment.objects.filter(comparison__campaign=campaign).count()
        rows = list(preference_rows(report=ExportReport(), campaign=campaign, confidence=False))
        right = sum(len(row["chosen"][0]["content"]) < len(row["rejected"][0]["content"]) for row in rows)
        results[name] = {"people": people, "labels": len(rows), "right": right, "accuracy": right / len(rows)}
        print(
            f"{seed:>4}  {name:>7}  {people:>6}  {len(rows):>6}  {right:>6}  {right / len(rows):>8.1%}  "
            f"{lowered if name == 'with' else '':>7}"
        )
    # the routed campaign's labels with the judge's verdict as one more vote (export --ai-judge)
    rows = list(
        preference_rows(
            report=ExportReport(), campaign=campaigns["with"], confidence=False, ai_judges=[judge]
        )
    )
    right = sum(len(row["chosen"][0]["content"]) < len(row["rejected"][0]["content"]) for row in rows)
    results["with, judge votes"] = {"labels": len(rows), "right": right, "accuracy": right / len(rows)}
    print(f"{seed:>4}  {'+ judge votes':>7}  {'':>6}  {len(rows):>6}  {right:>6}  {right / len(rows):>8.1%}")
    return results


if __name__ == "__main__":
    main()
