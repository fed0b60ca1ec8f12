"""Benchmark: the same published CDNOW scores judged on the model's own horizon and on another one.

Reads the results of ``bench/accuracy_cdnow.py`` (its JSON and the ``.predictions.parquet`` beside it:
every scored user's published ``predicted_spend`` and the actual spend in (D, D + H]) and evaluates
the spendpred model against the actual spend of ``--horizon-days`` instead (read from the CDNOW
file), beside BG/NBD x Gamma-Gamma fitted as of D for that horizon (``spendpred.btyd``), as the
realized evaluation does when ``SPENDPRED_HORIZON_DAYS`` differs from the horizon the champion was
trained on (``spendpred train --horizon-days``). Prints both side by side, and the ratio of the two
actual totals, which is the whole difference in predicted/actual.

    .venv/bin/python bench/accuracy_cdnow.py --sample 0.1 --losses ziln --freeze all-but-head \\
        --run-date 1997-12-31 --horizon-days 180 --bootstrap 0 --out bench/results/skew_cdnow_1997-12-31_h180.json
    .venv/bin/python bench/horizon_mismatch_cdnow.py bench/results/skew_cdnow_1997-12-31_h180.json --horizon-days 90

Plain public tools only: spendpred's Python API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "CDNOW_master.txt"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="JSON written by bench/accuracy_cdnow.py (its predictions file beside it).")
    parser.add_argument("--horizon-days", type=int, default=90, help="The other horizon (default 90, SPENDPRED_HORIZON_DAYS' default).")
    parser.add_argument("--model", default="bert_ziln", help="The model column of the predictions file (default bert_ziln).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CDNOW master file.")
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd

    from spendpred import btyd, metrics

    result = json.loads(args.results.read_text(encoding="utf-8"))
    run_date = dt.date.fromisoformat(result["run_date"])
    trained_h = int(result["horizon_days"])
    frame = pd.read_parquet(Path(result["predictions_file"]) if Path(result["predictions_file"]).is_absolute()
                            else REPO / result["predictions_file"])  # fmt: skip
    log = pd.read_csv(args.data, sep=r"\s+", header=0, names=["user_id", "day", "cds", "amount"])
    log["ordered_at"] = pd.to_datetime(log["day"].astype(str), format="%Y%m%d")
    log["user_id"] = log["user_id"].astype(int).astype(str)
    cutoff = pd.Timestamp(run_date)

    def actual(days: int) -> np.ndarray:
        window = log[(log["ordered_at"] > cutoff) & (log["ordered_at"] <= cutoff + pd.Timedelta(days=days))]
        return frame["user_id"].astype(str).map(window.groupby("user_id")["amount"].sum()).fillna(0.0).to_numpy()

    own = actual(trained_h)
    if not np.allclose(own, frame["label"].to_numpy()):
        sys.exit(f"the predictions file's labels are not the CDNOW spend in ({run_date}, +{trained_h} days]: wrong --data?")
    other = actual(args.horizon_days)
    orders = log[log["ordered_at"] <= cutoff][["user_id", "ordered_at", "amount"]]
    users = frame["user_id"].astype(str).tolist()
    rows = []
    for days, y in ((trained_h, own), (args.horizon_days, other)):
        model = metrics.evaluate(y, frame[args.model].to_numpy())
        fitted, _ = btyd.btyd_baseline(orders, run_date, days, users)
        peer = metrics.evaluate(y, fitted)
        rows.append((days, model, peer, float(y.sum())))
    print(f"CDNOW, {len(frame):,} users, run date {run_date}; {args.model} trained on H = {trained_h} (published scores, unchanged)")
    print()
    print("| actual spend over | model pred/actual | model decile MAPE | model norm. Gini | BG/NBD×GG (fitted for that H) pred/actual | BG/NBD decile MAPE |")
    print("|---|---:|---:|---:|---:|---:|")
    for days, model, peer, _ in rows:
        print(f"| (D, D+{days}] | {model['total_ratio']:.3f} | {model['decile_mape']:.3f} | {model['normalised_gini']:.3f} | "
              f"{peer['total_ratio']:.3f} | {peer['decile_mape']:.3f} |")
    print()
    print(f"actual total over {trained_h} days / over {args.horizon_days} days: {rows[0][3] / rows[1][3]:.3f} "
          f"(= the model's pred/actual ratio {rows[1][1]['total_ratio'] / rows[0][1]['total_ratio']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
