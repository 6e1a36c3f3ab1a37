"""The drift sweep's summary (benchmarks/loop_sweep.py): each loop's final row, per oracle over its
seeds, per setting against issue 11's bar."""

import json

from benchmarks.loop_sweep import Run, summarise


def report(rate: float, fluency_ratio: float, beyond_p95: float) -> dict:
    return {
        "rounds": [
            {"round": 1, "vs_previous": {"rate": 0.6, "low": 0.5, "high": 0.7}},
            {
                "round": 2,
                "vs_base": {"rate": rate, "low": rate - 0.1, "high": rate + 0.1, "ties": 0},
                "drift": {"fluency_ratio": fluency_ratio, "beyond_p95": beyond_p95, "stopped": 0.5},
                "held_back": None,
            },
        ]
    }


def test_the_summary_averages_each_oracle_over_its_seeds_and_counts_the_runs_that_meet_the_bar(
    tmp_path, capsys
):
    runs = [Run("shorter", "", "42/0"), Run("shorter", "", "7/7"), Run("no-bullets", "", "42/0")]
    figures = [(0.85, 0.99, 0.05), (0.65, 0.98, 0.03), (0.80, 1.25, 0.05)]  # the last drifts: 1.25×
    for run, (rate, ratio, beyond) in zip(runs, figures, strict=True):
        (tmp_path / run.name).mkdir()
        (tmp_path / run.name / "report.json").write_text(json.dumps(report(rate, ratio, beyond)))

    summarise([*runs, Run("key-noun", "", "42/0")], tmp_path)

    printed = capsys.readouterr().out
    assert "| `shorter` | defaults | 42/0 | 0.850 [0.750, 0.950] |" in printed
    assert "| `key-noun` | defaults | 42/0 | not run |" in printed
    assert (
        "`shorter`, defaults: 2 seeds, over the base 0.750 on average (0.650 to 0.850), 1 at 0.75 or more"
        in printed
    )
    assert "`no-bullets`, defaults:" not in printed  # one seed: its row says it all
    # three runs: two at 0.75 or more, one of them beyond the fluency bar; one meets the whole bar
    assert "defaults: 3 runs, over the base 0.767 on average, 2 at 0.75 or more" in printed
    assert printed.rstrip().endswith("0 held back; 1 meet the bar")


def test_a_second_setting_is_compared_with_the_first_run_by_run(tmp_path, capsys):
    figures = {  # (oracle, seed): rate at one epoch, at two; differences +0.10, +0.05, -0.03
        ("shorter", "42/0"): (0.70, 0.80),
        ("shorter", "7/7"): (0.75, 0.80),
        ("no-bullets", "42/0"): (0.83, 0.80),
    }
    runs = []
    for (oracle, seed), rates in figures.items():
        for setting, rate in zip(("", "--epochs 2"), rates, strict=True):
            run = Run(oracle, setting, seed)
            (tmp_path / run.name).mkdir()
            (tmp_path / run.name / "report.json").write_text(json.dumps(report(rate, 0.99, 0.05)))
            runs.append(run)

    summarise([*runs, Run("key-noun", "--epochs 2", "42/0")], tmp_path)

    # mean +0.04, sd 0.0656: t(0.975, 2) = 4.303 gives half-width 0.163
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(
            "--epochs 2 against defaults: 3 paired runs (same oracle and seed), +0.040 [95% -0.123, +0.203] over the base"
        )
    )
