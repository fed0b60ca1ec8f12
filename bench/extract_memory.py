"""Benchmark: peak memory of snapshot extraction as users grow (target: flat).

For each population size (default 100,000 and 1,000,000 users) it creates a throwaway
PostgreSQL database, seeds it with ``spendpred.synth.seed_warehouse`` in one subprocess,
then runs ``spendpred.behaviour.extract_snapshot`` in a **fresh subprocess** and records
that subprocess's peak RSS and wall time. The peak comes from ``os.wait4`` (the kernel's
``getrusage`` figure for that one child; the child's own ``RUSAGE_SELF`` is printed beside
it as a cross-check). The parent stays small (it imports SQLAlchemy only) because Linux
carries the forking process's peak RSS into a child's ``ru_maxrss`` across ``exec``: a
parent that had seeded the warehouse itself would inflate every child's figure.

It prints one line per size and the ratio of the largest size's peak RSS to the
smallest's. Target (issue 3): 1M-user peak RSS <= 1.5x the 100k one. Databases are dropped
at the end unless ``--keep``.

    .venv/bin/python bench/extract_memory.py                       # 100k and 1M users
    .venv/bin/python bench/extract_memory.py --users 20000 100000 --chunk-rows 10000

Admin URL: ``SPENDPRED_BENCH_PG_URL`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``); it needs CREATE DATABASE rights.
Plain public tools only: PostgreSQL, Python's ``resource``, ``os.wait4`` and ``subprocess``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _pg import throwaway_database

TARGET_RATIO = 1.5


def _child(url: str, as_of: str, out_dir: str, horizon: int, chunk_rows: int) -> int:
    """Run one extraction (the measured process) and print its own figures as JSON."""
    from spendpred import behaviour, warehouse
    from spendpred.snapshot import SNAPSHOT_FILE

    logging.basicConfig(level=logging.WARNING)
    engine = warehouse.get_engine(url)
    began = time.perf_counter()
    manifest = behaviour.extract_snapshot(
        engine, dt.date.fromisoformat(as_of), Path(out_dir), horizon, with_labels=True, chunk_rows=chunk_rows
    )
    seconds = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    size = (Path(out_dir) / SNAPSHOT_FILE).stat().st_size
    print(json.dumps({"rows": manifest.row_count, "seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024, 1), "parquet_mib": round(size / 2**20, 1)}))
    return 0


def _seed_child(url: str, users: int, days: int, end_date: str, seed: int) -> int:
    """Seed the benchmark warehouse (in its own process) and print the row counts as JSON."""
    from spendpred import synth, warehouse

    logging.basicConfig(level=logging.WARNING)
    engine = warehouse.get_engine(url)
    counts = synth.seed_warehouse(engine, users, days, dt.date.fromisoformat(end_date), seed)
    engine.dispose()
    print(json.dumps(counts))
    return 0


def _run_child(args: list[str]) -> tuple[dict, float, float]:
    """Run this script with ``args`` in a child; return (its JSON line, peak RSS MiB from wait4, seconds)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"child {args[0]} failed with exit status {proc.returncode}")
        out.seek(0)
        line = out.read().strip().splitlines()[-1]
    return json.loads(line), usage.ru_maxrss / 1024, seconds  # Linux: KiB


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000], help="population sizes, smallest first")
    parser.add_argument("--days", type=int, default=365, help="days of synthetic history (default 365)")
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2024, 12, 31), help="last day of history")
    parser.add_argument("--horizon-days", type=int, default=90, help="label horizon H (default 90)")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per streamed chunk (default 50,000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the synthetic data")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
    parser.add_argument("--child", nargs=5, metavar=("URL", "AS_OF", "OUT", "H", "CHUNK"), help=argparse.SUPPRESS)
    parser.add_argument("--seed-child", nargs=5, metavar=("URL", "USERS", "DAYS", "END", "SEED"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status (1 when the target ratio is missed)."""
    args = _parse_args(argv)
    if args.child:
        url, as_of, out, horizon, chunk = args.child
        return _child(url, as_of, out, int(horizon), int(chunk))
    if args.seed_child:
        url, users, days, end, seed = args.seed_child
        return _seed_child(url, int(users), int(days), end, int(seed))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # the labels of a snapshot as of end - H fall inside the history
    as_of = args.end_date - dt.timedelta(days=args.horizon_days)
    results = []
    for users in args.users:
        with throwaway_database("spendpred_bench", keep=args.keep) as db:
            server, url = db.server_version, db.url
            logging.info("seeding %d users into %s", users, db.name)
            counts, _, seed_s = _run_child(
                ["--seed-child", url, str(users), str(args.days), args.end_date.isoformat(), str(args.seed)]
            )
            logging.info("seeded %s in %.0f s; extracting as of %s", counts, seed_s, as_of)
            with tempfile.TemporaryDirectory(prefix="spendpred_bench_") as out:
                child, peak_mib, _ = _run_child(
                    ["--child", url, as_of.isoformat(), out, str(args.horizon_days), str(args.chunk_rows)]
                )
            child.update(users=users, source_rows=counts, seed_s=round(seed_s, 1), wait4_peak_rss_mib=round(peak_mib, 1))
            results.append(child)
            print(
                f"{users:>10,} users: {child['rows']:>10,} rows, extract {child['seconds']:>7.1f} s, "
                f"peak RSS {peak_mib:>7.1f} MiB (child's own getrusage {child['peak_rss_mib']:.1f} MiB), "
                f"parquet {child['parquet_mib']:.1f} MiB; seeded {sum(counts.values()):,} source rows in {seed_s:.0f} s",
                flush=True,
            )
    ratio = results[-1]["wait4_peak_rss_mib"] / results[0]["wait4_peak_rss_mib"]
    ok = ratio <= TARGET_RATIO
    print(
        f"peak RSS ratio {results[-1]['users']:,} / {results[0]['users']:,} users = {ratio:.2f} "
        f"(target <= {TARGET_RATIO}): {'OK' if ok else 'MISSED'}; as of {as_of}, H={args.horizon_days}, "
        f"chunk {args.chunk_rows:,} rows; PostgreSQL {server}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"this process's own peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    summary = {"as_of": as_of.isoformat(), "horizon_days": args.horizon_days, "chunk_rows": args.chunk_rows, "days": args.days,
               "postgres": server, "cpus": os.cpu_count(), "runs": results, "ratio": round(ratio, 3), "target": TARGET_RATIO}  # fmt: skip
    print(json.dumps(summary))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
