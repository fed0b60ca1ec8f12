"""Benchmark: the same nightly with staging on an S3-compatible server against a local folder, side by side.

Starts moto's S3 server on localhost (``moto[s3]``, a test dependency; no cloud service is
contacted), a temporary ``SPENDPRED_HOME`` with a SQLite warehouse and MLflow store, then:

1. **setup** (not timed in the comparison): seed ``--users`` synthetic users over ``--days``
   days ending at D, train a champion (head only on the frozen encoder, one epoch) with local
   staging, and a warm-up nightly (local staging, date D-1) so imports and first-use costs are
   paid before anything is compared;
2. for each night (D, then D+1 after ``append_day`` adds a day of activity, so the second night
   reads the embedding cache the first wrote): the nightly DAG's steps in order
   (``extract_scoring_snapshot``, ``validate_snapshot``, ``plan_shards``, ``score_shard`` for
   each of ``--shards`` shards, ``assign_tiers``, ``publish_scores``), once with staging in a
   local folder and once on ``s3://bench/staging``, each step on a reference passed through
   JSON (as XCom), each step in its own working copy (as on separate hosts);
3. prints per night and per mode the seconds of each step and in all, and the bytes staged:
   for the local folder, the bytes of the files the night left in staging (its run folder and
   the embedding cache); for S3, the bytes uploaded and downloaded (``spendpred.staging.TRAFFIC``,
   file bodies and staging manifests). The two published partitions must be equal (user, score,
   tier); the script exits 1 when they are not.

    .venv/bin/python bench/staging_s3.py                          # 2,000 users, tiny encoder, 2 shards
    .venv/bin/python bench/staging_s3.py --users 20000 --encoder DIR --json /tmp/staging.json

``--encoder tiny`` (the default) builds a tiny random BERT (``spendpred.model.tiny``), so the
comparison is dominated by staging, not by the encoder; ``--encoder DIR`` scores with that
checkpoint. Public tools only: moto, pyarrow, SQLite, ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.s3_server

from _env import OFFLINE_ENV  # noqa: E402
STEPS = ("extract_scoring_snapshot", "validate_snapshot", "plan_shards", "score_shards", "assign_tiers", "publish_scores")


def _xcom(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _night(day: dt.date, url: str, shards: int) -> dict[str, float]:
    """The nightly DAG's steps for ``day`` with the staging of the environment now; seconds per step."""
    from spendpred import pipeline

    seconds: dict[str, float] = {}

    def timed(name: str, func: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        out = _xcom(func())
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - began
        return out

    snap = timed("extract_scoring_snapshot", lambda: pipeline.extract_scoring_snapshot(day, url=url, model="champion"))
    timed("validate_snapshot", lambda: pipeline.validate_snapshot(snap))
    plan = timed("plan_shards", lambda: pipeline.plan_shards(snap, shards))
    scored = [timed("score_shards", lambda s=spec: pipeline.score_shard(s, s["shard"], s["shards"])) for spec in plan]
    tiered = timed("assign_tiers", lambda: pipeline.assign_tiers(snap, scored))
    timed("publish_scores", lambda: pipeline.publish_scores(tiered, url=url))
    return seconds


def _partition(url: str, day: dt.date) -> list[tuple]:
    import sqlalchemy as sa

    from spendpred import warehouse

    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT user_id, predicted_spend, tier FROM user_spend_scores WHERE as_of = :d ORDER BY user_id"
            ), {"d": day.isoformat()})]  # fmt: skip
    finally:
        engine.dispose()


def _folder_bytes(*folders: Path) -> int:
    return sum(p.stat().st_size for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000, help="synthetic users (default 2,000)")
    parser.add_argument("--days", type=int, default=400, help="days of history (default 400)")
    parser.add_argument("--shards", type=int, default=2, help="scoring shards (default 2)")
    parser.add_argument("--encoder", default="tiny", help="'tiny' (default) or a checkpoint folder")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.update(OFFLINE_ENV)

    from tests.s3_server import create_bucket, s3_env, s3_server

    work = Path(tempfile.mkdtemp(prefix="spendpred-bench-staging-"))
    os.environ["SPENDPRED_HOME"] = str(work / "home")
    os.environ["SPENDPRED_HORIZON_DAYS"] = "60"
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        os.environ["SPENDPRED_ENCODER_DIR"] = str(make_tiny_bert(work / "tiny-bert"))
    else:
        os.environ["SPENDPRED_ENCODER_DIR"] = str(Path(args.encoder).resolve())
    from spendpred import pipeline, staging
    from spendpred.snapshot import embedding_cache_dir

    url = f"sqlite:///{work / 'warehouse.db'}"
    day = dt.date(2024, 6, 30)
    local_root = work / "staging-local"
    s3_root = "s3://bench/staging"
    figures: dict[str, Any] = {"users": args.users, "shards": args.shards, "encoder": args.encoder, "nights": []}
    with s3_server() as endpoint:
        os.environ.update(s3_env(endpoint))
        create_bucket(endpoint, "bench")
        began = time.perf_counter()
        os.environ["SPENDPRED_STAGING_DIR"] = str(work / "staging-setup")
        pipeline.seed(users=args.users, days=args.days, end_date=day, seed=7, url=url)
        snap = pipeline.extract_training_snapshot(day, url=url)
        pipeline.validate_snapshot(snap)
        trained = pipeline.train_model(snap, epochs=1, freeze="all-but-head", max_users=min(args.users, 2000), progress=False)
        registered = pipeline.evaluate_and_register(trained)
        pipeline.promote_model(registered["version"], "force", trained, url)
        _night(day - dt.timedelta(days=1), url, args.shards)  # warm-up: imports, first model load
        figures["setup_seconds"] = round(time.perf_counter() - began, 1)
        ok = True
        for night in range(2):
            as_of = day + dt.timedelta(days=night)
            if night:
                pipeline.append_day(as_of, seed=7, url=url)
            row: dict[str, Any] = {"as_of": as_of.isoformat()}
            os.environ["SPENDPRED_STAGING_DIR"] = str(local_root)
            row["local_seconds"] = _night(as_of, url, args.shards)
            row["local_bytes"] = _folder_bytes(local_root / "score" / as_of.isoformat(), embedding_cache_dir(local_root))
            local_rows = _partition(url, as_of)
            os.environ["SPENDPRED_STAGING_DIR"] = s3_root
            before = staging.TRAFFIC.as_dict()
            row["s3_seconds"] = _night(as_of, url, args.shards)
            after = staging.TRAFFIC.as_dict()
            row["s3_traffic"] = {k: after[k] - before[k] for k in after}
            row["rows"] = len(local_rows)
            row["equal"] = _partition(url, as_of) == local_rows
            ok = ok and row["equal"] and bool(local_rows)
            figures["nights"].append(row)
    figures["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "load_average": [round(x, 2) for x in os.getloadavg()],
                          "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def _print(figures: dict[str, Any]) -> None:
    mib = 1024 * 1024
    print(f"staging: local folder vs S3 (moto on localhost); {figures['users']:,} users, {figures['shards']} shards, "
          f"encoder {figures['encoder']}; setup {figures['setup_seconds']} s")  # fmt: skip
    for row in figures["nights"]:
        label = "night 1 (cold embedding cache)" if row is figures["nights"][0] else "night 2 (warm embedding cache)"
        print(f"\n{label}, as of {row['as_of']}: {row['rows']:,} users, partitions equal: {row['equal']}")
        print(f"{'step':<28}{'local s':>10}{'s3 s':>10}{'s3/local':>10}")
        for step in STEPS:
            a, b = row["local_seconds"].get(step, 0.0), row["s3_seconds"].get(step, 0.0)
            print(f"{step:<28}{a:>10.2f}{b:>10.2f}{(b / a if a else float('nan')):>10.2f}")
        a, b = sum(row["local_seconds"].values()), sum(row["s3_seconds"].values())
        print(f"{'night':<28}{a:>10.2f}{b:>10.2f}{b / a:>10.2f}")
        t = row["s3_traffic"]
        print(f"bytes: local folder {row['local_bytes'] / mib:.2f} MiB written; S3 {t['uploaded_bytes'] / mib:.2f} MiB up "
              f"({t['uploaded_files']} objects), {t['downloaded_bytes'] / mib:.2f} MiB down ({t['downloaded_files']} objects)")  # fmt: skip
    print(f"\nmachine: {figures['machine']}")


if __name__ == "__main__":
    sys.exit(main())
