"""Benchmark: how much `make demo`'s figures vary with the synthetic world's seed and the run date.

The README quotes one `make demo` run (champion vs past spend vs gradient-boosted trees on the
held-out users, and the champion's predicted/actual total). This runs ``scripts/demo.sh`` (the
real demo: seed, retrain DAG, nightly DAG through ``airflow dags test``) once per seed and date
in a throwaway ``SPENDPRED_HOME`` each, reads the champion's held-out metrics with
``spendpred report --json``, and prints one row per run and the mean, min and max of each
figure. Plain public tools only.

    .venv/bin/python bench/demo_spread.py                                   # seeds 42 7 2026 at yesterday, seed 42 at 2 older dates (~20 min)
    .venv/bin/python bench/demo_spread.py --seeds 42 --dates 2025-06-30     # one run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import OFFLINE_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURES = (
    ("ratio", "predicted/actual total (champion)", ("champion", "total_ratio")),
    ("gini", "normalised Gini, champion", ("champion", "normalised_gini")),
    ("gini_past", "normalised Gini, past spend", ("past_spend", "normalised_gini")),
    ("gini_gbt", "normalised Gini, GBT", ("gbt_numeric", "normalised_gini")),
    ("top10", "top-10% capture, champion", ("champion", "top10_capture")),
    ("top10_past", "top-10% capture, past spend", ("past_spend", "top10_capture")),
    ("top10_gbt", "top-10% capture, GBT", ("gbt_numeric", "top10_capture")),
)


def _yesterday() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)


def run_demo(seed: int, date: dt.date, home: Path, venv: Path) -> dict[str, float] | None:
    """Run scripts/demo.sh for (seed, date) under ``home``; return its figures and wall seconds, or
    ``None`` when the promotion gate kept the new version out (the demo stops: no champion)."""
    env = {**os.environ, **OFFLINE_ENV, "DEMO_SEED": str(seed), "DEMO_DATE": date.isoformat(),
           "SPENDPRED_HOME": str(home), "VENV": str(venv)}  # fmt: skip
    for key in [k for k in env if k.startswith(("AIRFLOW_", "AIRFLOW__", "SPENDPRED_WAREHOUSE", "SPENDPRED_MLFLOW"))]:
        env.pop(key)  # everything under this run's home
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0 and "no champion:" in done.stdout:
        return None
    if done.returncode != 0:
        raise SystemExit(f"demo (seed {seed}, {date}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = subprocess.run([str(venv / "bin" / "spendpred"), "report", "--json"], env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    champion = json.loads(report.stdout)["champion"]
    tables = {"champion": champion["metrics"], **champion["baselines"]}
    figures = {key: float(tables[table][metric]) for key, _, (table, metric) in FIGURES}
    return {**figures, "seconds": seconds}


def main() -> None:
    """Run the demos and print one row each, then mean, min and max per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2026], help="synthetic-world seeds at the newest date")
    parser.add_argument("--dates", nargs="+", default=None,
                        help="run dates (YYYY-MM-DD); default yesterday (UTC), plus 120 and 240 days before it for seed 42")  # fmt: skip
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    args = parser.parse_args()
    newest = _yesterday()
    if args.dates is None:
        runs = [(seed, newest) for seed in args.seeds] + [(args.seeds[0], newest - dt.timedelta(days=d)) for d in (120, 240)]
    else:
        runs = [(seed, dt.date.fromisoformat(day)) for day in args.dates for seed in args.seeds]
    rows = []
    refused = 0
    with tempfile.TemporaryDirectory(prefix="demo-spread-") as tmp:
        for i, (seed, date) in enumerate(runs):
            row = run_demo(seed, date, Path(tmp) / f"run{i}", args.venv.resolve())
            if row is None:
                refused += 1
                print(f"seed {seed:>5} date {date}  not promoted: the gate kept the version out (no champion)", flush=True)
                continue
            rows.append((seed, date, row))
            print(f"seed {seed:>5} date {date}  " + "  ".join(f"{k} {row[k]:.3f}" for k, _, _ in FIGURES)
                  + f"  ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    print(f"\n{len(rows) + refused} runs of scripts/demo.sh (2,000 users, 2 epochs, bottom-k:4); "
          f"{refused} not promoted by the gate, left out below")
    if not rows:
        return
    for key, label, _ in FIGURES:
        values = [row[key] for _, _, row in rows]
        print(f"{label:<36} mean {statistics.fmean(values):.3f}  min {min(values):.3f}  max {max(values):.3f}")
    wins = sum(row["gini"] > max(row["gini_past"], row["gini_gbt"]) for _, _, row in rows)
    print(f"champion's normalised Gini above both baselines in {wins} of {len(rows)} runs")


if __name__ == "__main__":
    main()
