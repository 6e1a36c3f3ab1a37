"""Bulk preference import: N pairs (distinct prompts, chosen and rejected of a few hundred characters)
through `manage.py import_preferences`, on PostgreSQL and on SQLite, against a naive loop (one
prompt, two responses, a comparison and a judgment created per pair through the ORM, as the import
did before) on a sample of the same file. Prints pairs/s for each and the ratio.

    python benchmarks/import_pairs.py --pairs 100000 --naive-pairs 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.databases import ROOT, bench_env, fresh_database

WORDS = "the model answer explains why rivers bend and how glaciers carve valleys over many years".split()


def pair(i: int) -> dict[str, str]:
    def text(n: int, salt: int) -> str:
        return " ".join(WORDS[(i * 7 + salt + k) % len(WORDS)] for k in range(n)) + f" ({i}.{salt})"

    return {"prompt": f"Question {i}: {text(12, 0)}?", "chosen": text(45, 1), "rejected": text(60, 2)}


NAIVE = """
import json, sys, time
import django
django.setup()
from django.db import transaction
from annotate.models import Choice, Comparison, Judgment, Source
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.judgments import import_user
from generation.messages import messages_from_text, messages_hash
from generation.models import Prompt, Response
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")][: int(sys.argv[2])]
campaign = campaign_get_or_create(name="naive")
user = import_user()
started = time.perf_counter()
with transaction.atomic():
    for row in rows:
        prompt = Prompt.objects.create(text=row["prompt"], content_hash=messages_hash(messages_from_text(row["prompt"])))
        a = Response.objects.create(prompt=prompt, text=row["chosen"])
        b = Response.objects.create(prompt=prompt, text=row["rejected"])
        comparison = Comparison.objects.create(prompt=prompt, response_a=a, response_b=b, campaign=campaign)
        Judgment.objects.create(comparison=comparison, annotator=user, choice=Choice.FIRST, source=Source.IMPORTED)
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--naive-pairs", type=int, default=2_000)
    parser.add_argument("--databases", default="postgresql,sqlite")
    args = parser.parse_args()
    print(f"$ python benchmarks/import_pairs.py --pairs {args.pairs} --naive-pairs {args.naive_pairs}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        with path.open("w", encoding="utf-8") as stream:
            for i in range(args.pairs):
                stream.write(json.dumps(pair(i)) + "\n")
        size = path.stat().st_size / 1e6
        print(f"{args.pairs} pairs, {size:.1f} MB of JSONL")
        for kind in args.databases.split(","):
            env = bench_env(fresh_database(kind))
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "manage.py", "import_preferences", str(path), "--campaign", "bulk"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            env = bench_env(fresh_database(kind))
            naive = subprocess.run(
                [sys.executable, "-c", NAIVE, str(path), str(args.naive_pairs)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            naive_rate = args.naive_pairs / float(naive.stdout.strip().splitlines()[-1])
            rate = args.pairs / seconds
            print(
                f"{kind}: import_preferences {seconds:.1f} s for {args.pairs} pairs = {rate:.0f} pairs/s "
                f"(the whole command: start-up, reading and checking the file, one transaction); "
                f"naive loop {naive_rate:.0f} pairs/s (ORM writes only, {args.naive_pairs} pairs); "
                f"{rate / naive_rate:.1f}x"
            )


if __name__ == "__main__":
    main()
