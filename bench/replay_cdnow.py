"""Benchmark: a replay of production on the real CDNOW log -- train once, score every month, watch the champion.

One command, in a throwaway ``SPENDPRED_HOME`` (SQLite warehouse, MLflow store, staging), every
step through the production functions (``spendpred.pipeline``; nothing re-implemented):

1. ``pipeline.import_cdnow`` the CDNOW master file (a stable hash-chosen ``--sample`` of customers,
   the sampling of ``bench/accuracy_cdnow.py``);
2. ``pipeline.train`` a champion at ``--run-date`` R with horizon ``--horizon-days`` H (features as of
   R - H, labels in (R - H, R]; ``--promote force``): the default R = 1997-10-02, H = 90 is the
   project's development split, whose labels end before the evaluation period's begin;
3. the nightly at a monthly cadence from R to the last night whose horizon ends inside the log
   (``--cadence-days``, default 30): ``pipeline.score`` (extract, validate, shard, tiers, reasons,
   publish) then ``pipeline.monitor_scores`` (the nightly DAG's last task: realized performance of
   whatever has matured, drift against the champion's reference, estimated RMSE/MAE);
4. ``pipeline.evaluate_matured`` at the log's last day, so every scored night is evaluated;
5. prints, per matured partition, the realized normalised Gini, top-10% capture and predicted /
   actual total of the champion and the baselines (past spend; BG/NBD x Gamma-Gamma fitted as of
   that night), the night's drift (features at warn/alert, largest PSI), and the estimated RMSE
   beside the realized one (and the mean absolute error of the estimate).

``--train-horizon-days`` (default: H) trains the champion on another horizon while the nightly and
its monitoring keep ``SPENDPRED_HORIZON_DAYS`` = H: what ``spendpred train --horizon-days 180``
followed by ``spendpred score`` and ``spendpred monitor`` do with the setting left at its default
(see bench/README.md, "Why 2.8x"); each partition is then also evaluated against the champion's own
horizon, side by side. Since the nightly refuses a champion trained for another horizon than
``SPENDPRED_HORIZON_DAYS`` (``shards.require_same_horizon``), such a replay stops at its first night
with that one line; bench/README.md keeps the figures measured before the check.

Encoders: ``--encoder minilm`` (default; all-MiniLM-L6-v2 frozen, head only: ``--freeze
all-but-head``, the CPU setting of the accuracy benchmark) or ``--encoder tiny`` (a tiny random
BERT written to the home: text carries no signal, the numeric and hybrid features do).

    .venv/bin/python bench/replay_cdnow.py                              # 10% of customers, MiniLM head-only
    .venv/bin/python bench/replay_cdnow.py --sample 1 --encoder minilm  # every customer (slow on a CPU)

Plain public tools only: spendpred's Python API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._env import OFFLINE_ENV  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "CDNOW_master.txt"
LOG_END = dt.date(1998, 6, 30)
_STARTED = time.perf_counter()


def say(message: str) -> None:
    """Print one progress line with the elapsed time (stdout, flushed)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", flush=True)


def nights(run_date: dt.date, horizon: int, cadence: int, end: dt.date) -> list[dt.date]:
    """The scored nights: the run date, then every ``cadence`` days while the horizon ends by ``end``."""
    out, day = [], run_date
    while day + dt.timedelta(days=horizon) <= end:
        out.append(day)
        day += dt.timedelta(days=cadence)
    return out


def realized_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{as_of: {scorer: {metric: value}}}`` from stored ``partition_metrics`` rows."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for row in rows:
        as_of = str(row["as_of"])[:10]
        table.setdefault(as_of, {}).setdefault(str(row["scorer"]), {})[str(row["metric"])] = row["value"]
    return table


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CDNOW master file (default ../shared/data/CDNOW_master.txt).")
    parser.add_argument("--sample", type=float, default=0.1, help="Share of customers kept (stable hash; default 0.1, about 2,400).")
    parser.add_argument("--run-date", default="1997-10-02", help="R: the champion's run date (default 1997-10-02, the development split).")
    parser.add_argument("--horizon-days", type=int, default=90, help="H in days (default 90).")
    parser.add_argument("--train-horizon-days", type=int, default=None,
                        help="Train the champion on this horizon while scoring and monitoring keep --horizon-days (default: the same).")
    parser.add_argument("--cadence-days", type=int, default=30, help="Days between scored nights (default 30: monthly).")
    parser.add_argument("--encoder", choices=("minilm", "tiny"), default="minilm", help="Frozen MiniLM head-only, or a tiny random BERT.")
    parser.add_argument("--epochs", type=int, default=40, help="spendpred train --epochs (head-only epochs stop early; default 40).")
    parser.add_argument("--draws", type=int, default=200, help="Bootstrap draws of the realized metrics (default 200).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/replay_cdnow.json"), help="JSON results file.")
    args = parser.parse_args(argv)
    run_date = dt.date.fromisoformat(args.run_date)
    train_horizon = args.horizon_days if args.train_horizon_days is None else args.train_horizon_days
    scored_nights = nights(run_date, args.horizon_days, args.cadence_days, LOG_END)
    if not scored_nights:
        parser.error(f"no night from {run_date} has its horizon of {args.horizon_days} days inside the log (ends {LOG_END})")
    if not 0 < args.sample <= 1:
        parser.error("--sample must be in (0, 1]")

    home = Path(tempfile.mkdtemp(prefix="spendpred-replay-"))
    os.environ.update(OFFLINE_ENV)
    for key in [k for k in os.environ if k.startswith("SPENDPRED_") and k not in ("SPENDPRED_SEED",)]:
        del os.environ[key]
    os.environ.update(SPENDPRED_HOME=str(home), SPENDPRED_HORIZON_DAYS=str(args.horizon_days))
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        os.environ["SPENDPRED_ENCODER_DIR"] = str(make_tiny_bert(home / "tiny-bert"))
    from bench.accuracy_cdnow import sample_cdnow
    from spendpred import monitoring, pipeline, warehouse
    from spendpred.snapshot import RunFolder

    url = f"sqlite:///{home / 'warehouse.db'}"
    data = args.data
    if args.sample < 1:
        data = home / "CDNOW_sample.txt"
        kept = sample_cdnow(args.data, data, args.sample)
        say(f"sampled {kept:,} customers ({args.sample:g} of the file) into {data}")
    say(f"import-cdnow into {url}: {pipeline.import_cdnow(data, url)}")
    timings: dict[str, float] = {}
    began = time.perf_counter()
    trained = pipeline.train(run_date, horizon_days=train_horizon, epochs=args.epochs, freeze="all-but-head", promote="force",
                             url=url)  # fmt: skip
    timings["train_s"] = round(time.perf_counter() - began, 1)
    held_out = trained["metrics"]
    say(f"champion version {trained['version']} trained at R = {run_date} (features as of {trained['as_of']}) in {timings['train_s']}s; "
        f"held-out: norm. Gini {held_out['normalised_gini']:.3f}, total ratio {held_out['total_ratio']:.3f}; "
        f"trained on H = {train_horizon}, scored and monitored with SPENDPRED_HORIZON_DAYS = {args.horizon_days}")  # fmt: skip

    per_night: list[dict[str, Any]] = []
    for night in scored_nights:
        began = time.perf_counter()
        scored = pipeline.score(night, url=url)
        watched = pipeline.monitor_scores(RunFolder.for_date("score", night).ref(), url)  # the nightly's last task
        seconds = round(time.perf_counter() - began, 1)
        drift = watched.get("drift") or {}
        per_night.append({"night": night.isoformat(), "rows": scored["rows"], "seconds": seconds, "drift": drift,
                          "errors": watched.get("errors")})  # fmt: skip
        say(f"night {night}: {scored['rows']} users scored and monitored in {seconds}s; drift alert {drift.get('alert')}, "
            f"warn {drift.get('warn')}; estimated {drift.get('estimated')}; errors {watched.get('errors') or 'none'}")
    final = pipeline.evaluate_matured(LOG_END, url, draws=args.draws)
    say(f"evaluated at {LOG_END}: {[e['as_of'] for e in final['evaluated']]}")

    with warehouse.opened_engine(url) as engine:
        realized = realized_table(monitoring.read_partition_metrics(engine, LOG_END))
        estimates = monitoring.read_estimates(engine, LOG_END)
        drift_rows = {n["night"]: monitoring.read_drift(engine, dt.date.fromisoformat(n["night"])) for n in per_night}
        own: dict[str, dict[str, float]] = {}
        if train_horizon != args.horizon_days:  # the same published scores against the champion's own horizon
            from spendpred import metrics

            for n in per_night:
                as_of = dt.date.fromisoformat(n["night"])
                if as_of + dt.timedelta(days=train_horizon) <= LOG_END:
                    frame = monitoring.read_realized(engine, as_of, train_horizon)
                    values = metrics.evaluate(frame["actual_spend"].to_numpy(), frame["predicted_spend"].to_numpy())
                    own[n["night"]] = {k: values[k] for k in ("total_ratio", "decile_mape", "normalised_gini")}

    scorers = ("model", "past_spend", "bgnbd_gamma_gamma")
    print()
    print(f"## Realized, per matured partition (champion v{trained['version']} trained at R = {run_date}, H = {args.horizon_days}, "
          f"{args.encoder}{' head-only' if args.encoder == 'minilm' else ''}, sample {args.sample:g})")  # fmt: skip
    print()
    print("| as_of | norm. Gini: champion / past spend / BG/NBD×GG | top-10% capture: champion / past / BG/NBD | "
          "pred/actual total: champion / past / BG/NBD | decile MAPE: champion / BG/NBD |")
    print("|---|---|---|---|---|")
    for as_of, by_scorer in sorted(realized.items()):
        cells = [" / ".join(_f((by_scorer.get(s) or {}).get(metric)) for s in scorers)
                 for metric in ("normalised_gini", "top10_capture", "total_ratio")]  # fmt: skip
        mape = " / ".join(_f((by_scorer.get(s) or {}).get("decile_mape")) for s in ("model", "bgnbd_gamma_gamma"))
        print(f"| {as_of} | {cells[0]} | {cells[1]} | {cells[2]} | {mape} |")
    if own:
        print()
        print(f"Against the champion's own horizon (labels in (as_of, as_of + {train_horizon}]), same published scores:")
        for as_of, values in own.items():
            print(f"- {as_of}: pred/actual total {_f(values['total_ratio'])}, decile MAPE {_f(values['decile_mape'])}, "
                  f"norm. Gini {_f(values['normalised_gini'])}")
    print()
    print("## Drift per night against the champion's reference (features at alert; warn count; largest PSI)")
    print()
    print("| night | alert | warn | largest PSI |")
    print("|---|---|---:|---|")
    for night, rows in drift_rows.items():
        alerts = [r["feature"] for r in rows if r["status"] == "alert"]
        warns = sum(1 for r in rows if r["status"] == "warn")
        top = max(rows, key=lambda r: r["psi"] or 0.0) if rows else None
        print(f"| {night} | {', '.join(alerts) or '-'} | {warns} | {top['feature'] + ' ' + _f(top['psi']) if top else 'n/a'} |")
    print()
    print("## Estimated vs realized error (the nightly estimate from the champion's error model)")
    print()
    print("| as_of | metric | estimated | realized | error |")
    print("|---|---|---:|---:|---:|")
    errors: dict[str, list[float]] = {}
    for row in estimates:
        print(f"| {str(row['as_of'])[:10]} | {row['metric']} | {_f(row['estimated'], 2)} | {_f(row['realized'], 2)} | "
              f"{_f(row['estimate_error'], 2)} |")
        if row["estimate_error"] is not None:
            errors.setdefault(str(row["metric"]), []).append(abs(float(row["estimate_error"])))
    for metric, values in errors.items():
        print(f"\nMean absolute error of the estimated {metric}: {sum(values) / len(values):.2f} over {len(values)} partitions")

    result = {
        "benchmark": "replay_cdnow", "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": {**{k: str(v) for k, v in vars(args).items()}, "home": str(home)},
        "champion": {"version": trained["version"], "as_of": trained["as_of"], "held_out": held_out},
        "nights": per_night, "realized": realized, "own_horizon": own, "train_horizon_days": train_horizon, "estimates": estimates,
        "drift": {n: [{k: r[k] for k in ("feature", "psi", "statistic", "status")} for r in rows] for n, rows in drift_rows.items()},
        "timings_s": {**timings, "total": round(time.perf_counter() - _STARTED, 1)},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    say(f"results written to {args.out}; home {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
