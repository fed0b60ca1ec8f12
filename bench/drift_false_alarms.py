"""Benchmark: the drift check's false-alarm rate over unshifted nights, and its detection of an injected shift.

One command, in a throwaway ``SPENDPRED_HOME`` (SQLite warehouse):

1. ``spendpred.pipeline.seed`` a synthetic population ending on night 0 (``--users``, 400 days);
2. two drift references, built like a champion's (``monitoring.build_reference`` on a snapshot's
   numeric features): **champion** — the training snapshot as of night 0 − H (what the retrain at
   night 0 saves with the bundle), and **night 0** — the scoring snapshot of night 0 itself
   (what a reference taken at the champion's first night would hold); and **champion, aged**: the
   champion's reference with tonight's age features (``tenure_days``, ``first_purchase_days``) taken
   back by the days since its date before comparing (a user present then has the same value; one
   who signed up or first bought since lands below every edge) -- what the drift check would see
   with the fix proposed in bench/README.md, computed here in the bench only;
3. ``--nights`` consecutive unshifted nights: ``pipeline.append_day`` (the ``--append-day`` path),
   ``pipeline.extract_snapshot`` as of the night, and the nightly drift check's own function
   (``monitoring.drift_table`` with the settings' PSI thresholds, ``SPENDPRED_DRIFT_PSI_WARN/ALERT``)
   against each reference: a night with any alert is a false alarm;
4. then ``--shifted-nights`` nights appended with ``--shift`` (default ``cents``: the source reloads
   its money in cents) and checked the same way: which features alert on the first shifted night.

Features only: ``predicted_spend`` needs a model, so it is left out of both references (the
integration test ``tests/integration/test_injected_shift.py`` runs the same shift through a tiny
champion and the nightly's ``pipeline.check_drift``, ``predicted_spend`` included). Plain public
tools only: spendpred's Python API.

    .venv/bin/python bench/drift_false_alarms.py                          # 2,000 users, 30 nights, cents
    .venv/bin/python bench/drift_false_alarms.py --shift price=1.5 --shifted-nights 14
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

_STARTED = time.perf_counter()


def say(message: str) -> None:
    """Print one progress line with the elapsed time (stdout, flushed)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", flush=True)


def reference_of(snapshot_dir: Path, seed: int) -> dict[str, Any]:
    """A champion-style drift reference of a snapshot's numeric features (``predicted_spend`` left out: no model)."""
    import pandas as pd

    from spendpred import monitoring
    from spendpred.snapshot import FEATURE_COLUMNS

    frame = pd.read_parquet(snapshot_dir / "snapshot.parquet")
    reference = monitoring.build_reference(frame, list(FEATURE_COLUMNS), frame["past_spend"].to_numpy(), seed=seed)
    reference["columns"].pop(monitoring.PREDICTION_COLUMN)
    return reference


AGE_FEATURES = ("tenure_days", "first_purchase_days")
"""Features that grow by one every day for every user who was there: compared after ageing in ``champion_aged``."""


def drift_of(
    reference: Mapping[str, Any], snapshot_dir: Path, warn: float, alert: float, aged_days: int | None = None
) -> list[dict[str, Any]]:
    """The nightly drift check's rows (``monitoring.drift_table``) of a snapshot against ``reference``;
    with ``aged_days``, the age features are taken back by that many days first."""
    import pandas as pd

    from spendpred import monitoring

    frame = pd.read_parquet(snapshot_dir / "snapshot.parquet")
    if aged_days is not None:
        for column in AGE_FEATURES:
            frame[column] = frame[column] - float(aged_days)
    return monitoring.drift_table(reference, frame, None, warn, alert)


def summarise(nights: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """False alarms of one reference over unshifted nights: nights with an alert, alerts and max PSI per feature."""
    alarms = [n for n in nights if any(r["status"] == "alert" for r in n[name])]
    warned = [n for n in nights if any(r["status"] == "warn" for r in n[name])]
    per_feature: dict[str, dict[str, float]] = {}
    for night in nights:
        for row in night[name]:
            entry = per_feature.setdefault(row["feature"], {"alerts": 0, "warns": 0, "max_psi": 0.0})
            entry["alerts"] += row["status"] == "alert"
            entry["warns"] += row["status"] == "warn"
            entry["max_psi"] = max(entry["max_psi"], float(row["psi"]))
    return {
        "nights": len(nights),
        "nights_with_alert": len(alarms),
        "false_alarm_rate": len(alarms) / max(len(nights), 1),
        "nights_with_warn": len(warned),
        "alerting_features": sorted({r["feature"] for n in alarms for r in n[name] if r["status"] == "alert"}),
        "per_feature": dict(sorted(per_feature.items(), key=lambda kv: -kv[1]["max_psi"])),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="Synthetic users (default 2,000).")
    parser.add_argument("--history-days", type=int, default=400, help="Days of seeded history before night 1 (default 400).")
    parser.add_argument("--night0", default="2024-06-30", help="Night 0, YYYY-MM-DD: the retrain's run date (default 2024-06-30).")
    parser.add_argument("--horizon-days", type=int, default=90, help="H: the champion's reference is as of night 0 - H (default 90).")
    parser.add_argument("--nights", type=int, default=30, help="Unshifted nights after night 0 (default 30, at least 1).")
    parser.add_argument("--shift", default="cents", help="The injected shift (cents, price=K, rename=OLD:NEW; default cents).")
    parser.add_argument("--shifted-nights", type=int, default=3, help="Shifted nights after the unshifted ones (default 3).")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the population and the appended days (default 7).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/drift_false_alarms.json"), help="JSON results file.")
    args = parser.parse_args(argv)
    if args.nights < 1 or args.shifted_nights < 1 or args.users < 100:
        parser.error("--nights and --shifted-nights must be at least 1, --users at least 100")
    night0 = dt.date.fromisoformat(args.night0)

    home = Path(tempfile.mkdtemp(prefix="spendpred-drift-"))
    os.environ.update(OFFLINE_ENV)
    os.environ["SPENDPRED_HOME"] = str(home)
    os.environ["SPENDPRED_HORIZON_DAYS"] = str(args.horizon_days)
    from spendpred import pipeline, synth
    from spendpred.config import get_settings

    settings = get_settings()
    warn, alert = settings.drift_psi_warn, settings.drift_psi_alert
    synth.parse_shift(args.shift, night0)  # a bad shift stops here, before any work
    url = f"sqlite:///{home / 'warehouse.db'}"
    say(f"seeding {args.users:,} users, {args.history_days} days to {night0} in {home}")
    pipeline.seed(users=args.users, days=args.history_days, end_date=night0, seed=args.seed, url=url)
    train_as_of = night0 - dt.timedelta(days=args.horizon_days)
    pipeline.extract_snapshot(train_as_of, home / "ref-champion", with_labels=True, horizon_days=args.horizon_days, url=url)
    pipeline.extract_snapshot(night0, home / "ref-night0", url=url)
    champion = reference_of(home / "ref-champion", args.seed)
    references = {"champion": champion, "night0": reference_of(home / "ref-night0", args.seed), "champion_aged": champion}
    aged = {"champion_aged": train_as_of}
    say(f"references: champion (training snapshot as of {train_as_of}) and night 0 ({night0}); PSI warn {warn}, alert {alert}")

    calm: list[dict[str, Any]] = []
    shifted: list[dict[str, Any]] = []
    shift_from = night0 + dt.timedelta(days=args.nights + 1)
    for k in range(1, args.nights + args.shifted_nights + 1):
        day = night0 + dt.timedelta(days=k)
        is_shifted = day >= shift_from
        pipeline.append_day(day, seed=args.seed, url=url, shift=args.shift if is_shifted else None, shift_from=shift_from)
        folder = home / "nights" / day.isoformat()
        pipeline.extract_snapshot(day, folder, url=url)
        night = {"day": day.isoformat(), "shifted": is_shifted,
                 **{name: drift_of(ref, folder, warn, alert, (day - aged[name]).days if name in aged else None)
                    for name, ref in references.items()}}  # fmt: skip
        (calm if not is_shifted else shifted).append(night)
        tags = {name: [r["feature"] for r in night[name] if r["status"] == "alert"] for name in references}
        say(f"night {day}{' (shifted: ' + args.shift + ')' if is_shifted else ''}: alerts {tags}")

    result: dict[str, Any] = {
        "benchmark": "drift_false_alarms",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "users": args.users, "night0": night0.isoformat(), "horizon_days": args.horizon_days, "shift": args.shift,
        "shift_from": shift_from.isoformat(), "psi_warn": warn, "psi_alert": alert,
        "unshifted": {name: summarise(calm, name) for name in references},
        "shifted": [{"day": n["day"], **{name: {r["feature"]: (round(r["psi"], 3), r["status"]) for r in n[name] if r["status"] != "ok"}
                                         for name in references}} for n in shifted],
    }  # fmt: skip
    print()
    print(f"## Unshifted nights {calm[0]['day']} .. {calm[-1]['day']} ({len(calm)}), PSI warn {warn} / alert {alert}")
    print()
    print("| reference | nights with an alert | false-alarm rate | nights with a warning | features that alerted |")
    print("|---|---:|---:|---:|---|")
    for name, summary in result["unshifted"].items():
        print(f"| {name} | {summary['nights_with_alert']} | {summary['false_alarm_rate']:.2f} | {summary['nights_with_warn']} | "
              f"{', '.join(summary['alerting_features']) or '-'} |")
    print()
    print("Largest PSI per feature over the unshifted nights (top 6 per reference):")
    for name, summary in result["unshifted"].items():
        top = list(summary["per_feature"].items())[:6]
        print(f"- {name}: " + ", ".join(f"{f} {v['max_psi']:.3f}" for f, v in top))
    print()
    print(f"## Shifted nights from {shift_from} ({args.shift}): features at warn/alert (PSI)")
    print()
    for night in result["shifted"]:
        for name in references:
            flagged = ", ".join(f"{f} {p} {s}" for f, (p, s) in sorted(night[name].items(), key=lambda kv: -kv[1][0]))
            print(f"- {night['day']} vs {name}: {flagged or 'nothing'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say(f"results written to {args.out}; wall time {time.perf_counter() - _STARTED:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
