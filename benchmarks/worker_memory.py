"""A worker's memory once a round is over: the round run inside the worker process (as rounds ran
before) against the round run in a child process (``manage.py run_round``, what the task does now).

    python benchmarks/worker_memory.py [--pairs 16]

Each way runs in a fresh process on its own SQLite database: one DPO round on the embedded SmolLM2
(fp32, CPU) over pairs of its own answers judged by the ``shorter`` oracle. Prints the process's
resident memory before the round and once it is over, and the peak of the child where there is one.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def prepare(pairs: int) -> int:
    """Migrate, register SmolLM2, queue ``pairs`` judged comparisons of its answers; a round id."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from annotate.models import Comparison
    from annotate.services.campaigns import campaign_get_or_create
    from annotate.services.simulation import comparisons_simulate
    from generation.models import Prompt, Response
    from generation.services import policy_register_embedded
    from training.rounds import RoundRequest, round_create

    base = policy_register_embedded()
    campaign = campaign_get_or_create(name="bench")
    for i in range(pairs):
        prompt = Prompt.objects.create(text=f"Name a colour, please ({i}).")
        short = Response.objects.create(prompt=prompt, policy=base, text="Blue.")
        long = Response.objects.create(
            prompt=prompt, policy=base, text="A colour I like a lot is blue, like the sky."
        )
        Comparison.objects.create(prompt=prompt, response_a=long, response_b=short, campaign=campaign)
    comparisons_simulate(oracle_name="shorter", count=pairs)
    settings = {"batch_size": 4, "max_length": 96, "dtype": "fp32"}
    return round_create(request=RoundRequest(policy=base, hyperparameters=settings, min_pairs=1)).pk


def run(way: str, pairs: int) -> None:
    import django

    django.setup()
    round_id = prepare(pairs)
    before = rss_mib()
    if way == "in-worker":
        from training.execution import round_execute

        status = round_execute(round_id=round_id).status
    else:
        from training.tasks import round_run_task

        status = round_run_task.call(round_id=round_id)
    gc.collect()
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{way:>14}: round {status}; worker RSS {before:.0f} MiB before, {rss_mib():.0f} MiB after"
        + (f"; the round's child process peaked at {child:.0f} MiB" if way == "child" else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--way", choices=("in-worker", "child"))
    args = parser.parse_args()
    if args.way:
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.environ.setdefault("DEBUG", "1")  # a local measurement: no SECRET_KEY needed
        run(args.way, args.pairs)
        return
    print(f"$ python benchmarks/worker_memory.py --pairs {args.pairs}")
    for way in ("in-worker", "child"):
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
                "PREFLOOP_ROUNDS_DIR": f"{tmp}/rounds",
                "PYTHONUNBUFFERED": "1",
            }
            subprocess.run(
                [sys.executable, __file__, "--way", way, "--pairs", str(args.pairs)], env=env, check=True
            )


if __name__ == "__main__":
    main()
