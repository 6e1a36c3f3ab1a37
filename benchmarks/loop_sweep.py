"""The drift sweep of docs/training.md, scripted: two rounds of run_loop on the embedded SmolLM2 for
every oracle × setting × seed, each loop in its own SQLite database and rounds folder, several at a
time (one thread each), then one table of the final policies: over the base (95% interval), length-
controlled, judged by fluency instead, the base's NLL of their held-out answers against its own, the
share beyond the base's 95th percentile, the share ended by the model, held back or not; and per
oracle and setting with several seeds, the mean win rate over the seeds; per setting, the mean over
its runs and how many meet issue 11's bar (0.75 or more over the base, NLL within 1.2× the base's, at
most 15% outliers); and each further setting against the first, paired by oracle and seed (the mean
difference with a 95% t interval).

    python benchmarks/loop_sweep.py --oracles shorter,on-topic-shorter,no-bullets \
        --setting "" --setting "--epochs 2" --seeds 42/0,7/7 --parallel 3 --out var/sweep

A setting is extra run_loop arguments ("" is the defaults); a seed is TRAINING/JUDGES (the training
order, and the sides the simulated judges see). A run whose report.json exists is not run again, so
``--summarise`` (or a second call) prints the table of what is there; one without a report starts
again from an empty folder. Each loop is 25 to 90 minutes on a 2-core CPU, and holds about 4.6 GB:
four at a time fit in 24 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

ROOT = Path(__file__).resolve().parent.parent
# The command of every run in the sweep tables (docs/training.md, "Drift"): 40 train prompts × 4
# answers, every pair, 48 new tokens, batch 8, β 0.1; the learning rate, RPO and epochs are the
# round defaults unless a setting says otherwise.
LOOP = (
    "run_loop --rounds 2 --prompts 40 --samples 4 --pairs all --max-new-tokens 48 --beta 0.1 "
    "--batch-size 8 --max-length 160 --backend transformers --check-oracle fluency"
)
# Issue 11's bar, as the issue states it (not the guards' defaults, which a team may change).
BAR = {"rate": 0.75, "fluency_ratio": 1.2, "beyond_p95": 0.15}


@dataclass(frozen=True)
class Run:
    oracle: str
    setting: str
    seed: str  # TRAINING/JUDGES

    @property
    def name(self) -> str:
        slug = "-".join(self.setting.replace("--", "").split()) or "defaults"
        return f"{self.oracle}.{slug}.seed{self.seed.replace('/', '-')}"

    def arguments(self) -> list[str]:
        training, judges = self.seed.split("/")
        return [
            "--oracle",
            self.oracle,
            *shlex.split(self.setting),
            "--seed",
            training,
            "--judge-seed",
            judges,
        ]


def run(loop: Run, out: Path) -> str:
    folder = out / loop.name
    report = folder / "report.json"
    if report.exists():
        return f"{loop.name}: done before"
    # a loop stopped before its report left its judgments in the database: the next would train on both
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
        "PREFLOOP_ROUNDS_DIR": str(folder / "rounds"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    started = time.perf_counter()
    with (folder / "log.txt").open("w", encoding="utf-8") as log:
        for command in (
            ["migrate", "--noinput"],
            ["import_prompts", str(ROOT / "training/demo/loop_prompts.jsonl")],
            [*shlex.split(LOOP), *loop.arguments(), "--report", str(report)],
        ):
            log.write(f"$ manage.py {shlex.join(command)}\n")
            log.flush()
            done = subprocess.run(
                [*manage, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            if done.returncode:
                return f"{loop.name}: failed (exit {done.returncode}), see {folder / 'log.txt'}"
    return f"{loop.name}: {(time.perf_counter() - started) / 60:.0f} min"


def final_row(report: dict) -> dict:
    """The figures of the last round of one loop's report (a held-back round 1 ends the loop)."""
    last = report["rounds"][-1]
    versus = last.get("vs_base") or last.get("vs_previous") or {}  # none: no games (identical answers)
    drift = last.get("drift") or {}
    check = last.get("check") or {}
    return {
        "round": last["round"],
        "rate": versus.get("rate"),
        "low": versus.get("low"),
        "high": versus.get("high"),
        "ties": versus.get("ties"),
        "controlled": (versus.get("length_controlled") or {}).get("rate"),
        "check": (check.get("vs_base") or check.get("vs_previous") or {}).get("rate"),
        "fluency_ratio": drift.get("fluency_ratio"),
        "beyond_p95": drift.get("beyond_p95"),
        "stopped": drift.get("stopped"),
        "held_back": last.get("held_back"),
    }


def meets_bar(row: dict) -> bool:
    return (
        row["round"] == 2
        and row["rate"] is not None
        and row["rate"] >= BAR["rate"]
        and row["fluency_ratio"] is not None
        and row["fluency_ratio"] <= BAR["fluency_ratio"]
        and row["beyond_p95"] <= BAR["beyond_p95"]
    )


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def summarise(runs: list[Run], out: Path) -> None:
    print(
        "| oracle | setting | seed | over the base (95% interval) | length-controlled | by fluency | "
        "NLL under the base | beyond its p95 | ended by the model | held back | meets the bar |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    by_setting: dict[str, list[dict]] = {}
    by_oracle: dict[tuple[str, str], list[dict]] = {}
    finals: dict[tuple[str, str, str], float] = {}  # (oracle, seed, setting): the final rate, for pairing
    for loop in runs:
        report = out / loop.name / "report.json"
        if not report.exists():
            print(f"| `{loop.oracle}` | {loop.setting or 'defaults'} | {loop.seed} | not run |")
            continue
        row = final_row(json.loads(report.read_text(encoding="utf-8")))
        if row["rate"] is not None:
            finals[(loop.oracle, loop.seed, loop.setting)] = row["rate"]
        by_setting.setdefault(loop.setting, []).append(row)
        by_oracle.setdefault((loop.oracle, loop.setting), []).append(row)
        rate = (
            "no games" if row["rate"] is None else f"{row['rate']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
        )
        rate += "" if row["round"] == 2 else f" (round {row['round']})"
        print(
            f"| `{loop.oracle}` | {loop.setting or 'defaults'} | {loop.seed} | {rate} | {_number(row['controlled'])} | "
            f"{_number(row['check'])} | {_number(row['fluency_ratio'], 2)}× | {_share(row['beyond_p95'])} | "
            f"{_share(row['stopped'])} | {'yes' if row['held_back'] else 'no'} | {'yes' if meets_bar(row) else 'no'} |"
        )
    print()
    for (oracle, setting), judged in by_oracle.items():
        rates = [r["rate"] for r in judged if r["rate"] is not None]
        if len(rates) > 1:  # one oracle over its seeds: a single run's interval is about ±0.10
            print(
                f"`{oracle}`, {setting or 'defaults'}: {len(rates)} seeds, over the base {mean(rates):.3f} on average "
                f"({min(rates):.3f} to {max(rates):.3f}), {sum(r >= BAR['rate'] for r in rates)} at 0.75 or more"
            )
    for setting, judged in by_setting.items():
        rows = [
            r
            for r in judged
            if r["rate"] is not None and r["fluency_ratio"] is not None and r["beyond_p95"] is not None
        ]
        if not rows:
            continue
        print(
            f"{setting or 'defaults'}: {len(rows)} runs, over the base {mean(r['rate'] for r in rows):.3f} on average, "
            f"{sum(r['rate'] >= BAR['rate'] for r in rows)} at 0.75 or more; NLL under the base "
            f"{mean(r['fluency_ratio'] for r in rows):.2f}× on average; beyond its p95 "
            f"{mean(r['beyond_p95'] for r in rows):.1%} on average, {max(r['beyond_p95'] for r in rows):.0%} at most; "
            f"{sum(bool(r['held_back']) for r in rows)} held back; {sum(meets_bar(r) for r in rows)} meet the bar"
        )
    settings = list(dict.fromkeys(loop.setting for loop in runs))
    for setting in settings[1:]:
        if line := paired_difference(finals, settings[0], setting):
            print(line)


def paired_difference(rates: dict[tuple[str, str, str], float], first: str, second: str) -> str | None:
    """``second`` against ``first`` over the runs they share (same oracle and seed): the mean difference
    in the final rate over the base with a 95% t interval over the differences (None: under 2 pairs)."""
    from scipy.stats import t

    differences = [
        rates[(oracle, seed, second)] - rate
        for (oracle, seed, setting), rate in rates.items()
        if setting == first and (oracle, seed, second) in rates
    ]
    if len(differences) < 2:
        return None
    n, average = len(differences), mean(differences)
    half = t.ppf(0.975, n - 1) * stdev(differences) / n**0.5
    return (
        f"{second or 'defaults'} against {first or 'defaults'}: {n} paired runs (same oracle and seed), "
        f"{average:+.3f} [95% {average - half:+.3f}, {average + half:+.3f}] over the base"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--oracles", default="shorter,on-topic-shorter,no-bullets")
    parser.add_argument("--setting", action="append", help='extra run_loop arguments, e.g. "--epochs 2"')
    parser.add_argument("--seeds", default="42/0,7/7", help="TRAINING/JUDGES seeds, comma-separated")
    parser.add_argument("--parallel", type=int, default=2, help="loops at a time")
    parser.add_argument("--out", default=str(ROOT / "var" / "sweep"))
    parser.add_argument(
        "--summarise", action="store_true", help="run nothing; print the table of what is there"
    )
    o = parser.parse_args()
    seeds = [s if "/" in s else f"{s}/{s}" for s in o.seeds.split(",")]
    runs = [
        Run(oracle, setting, seed)
        for setting in (o.setting or [""])
        for oracle in o.oracles.split(",")
        for seed in seeds
    ]
    out = Path(o.out)
    print(f"command: python benchmarks/loop_sweep.py {shlex.join(sys.argv[1:])}")
    print(f"each loop: manage.py {LOOP} --oracle ORACLE SETTING --seed TRAINING --judge-seed JUDGES")
    if not o.summarise:
        with ThreadPoolExecutor(max_workers=o.parallel) as pool:
            for line in pool.map(lambda loop: run(loop, out), runs):
                print(line, flush=True)
    summarise(runs, out)


if __name__ == "__main__":
    main()
