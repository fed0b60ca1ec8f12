"""Benchmark: seed N synthetic users into a throwaway PostgreSQL database.

Creates a fresh database next to the admin URL's one, runs ``spendpred.synth.seed_warehouse``
(the code behind ``spendpred seed``: vectorised generation, COPY, one transaction, ANALYZE),
prints rows, seconds and rows/s per table, the total, the peak RSS of this process and the
size of each table, then drops the database (unless ``--keep``).

    .venv/bin/python bench/seed_postgres.py                # 1,000,000 users, 365 days
    .venv/bin/python bench/seed_postgres.py --users 100000 --days 730

Admin URL: ``SPENDPRED_BENCH_PG_URL`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``); it needs CREATE DATABASE rights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import sys
import time

from _pg import throwaway_database

from spendpred import synth, warehouse



def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users to generate (default 1,000,000)")
    parser.add_argument("--days", type=int, default=365, help="days of history (default 365)")
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2024, 12, 31), help="last day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--chunk-users", type=int, default=synth.DEFAULT_CHUNK_USERS, help="users per chunk")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database instead of dropping it")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with throwaway_database("spendpred_bench_seed", keep=args.keep) as db:
        server = db.server_version
        engine = warehouse.get_engine(db.url)
        try:
            timings: dict[str, float] = {}
            began = time.perf_counter()
            counts = synth.seed_warehouse(
                engine, args.users, args.days, args.end_date, args.seed, chunk_users=args.chunk_users, timings=timings
            )
            total_s = time.perf_counter() - began
            with engine.connect() as conn:
                sizes = {t: int(conn.exec_driver_sql(f"SELECT pg_total_relation_size('{t}')").scalar_one()) for t in counts}
        finally:
            engine.dispose()

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    rows = sum(counts.values())
    print(f"\nseeded {args.users:,} users, {args.days} days ending {args.end_date}, seed {args.seed}, "
          f"chunks of {args.chunk_users:,} users into PostgreSQL {server}")  # fmt: skip
    print(f"{'table':<10}{'rows':>14}{'write s':>10}{'rows/s':>12}{'size MiB':>10}")
    for table, n in counts.items():
        secs = timings.get(table, 0.0)
        print(f"{table:<10}{n:>14,}{secs:>10.1f}{n / max(secs, 1e-9):>12,.0f}{sizes[table] / 2**20:>10.0f}")
    print(f"{'total':<10}{rows:>14,}{total_s:>10.1f}{rows / total_s:>12,.0f}{sum(sizes.values()) / 2**20:>10.0f}")
    print(
        f"waiting for generation {timings.get('generate', 0):.1f}s (overlaps writing), "
        f"commit {timings.get('commit', 0):.1f}s, ANALYZE {timings.get('analyze', 0):.1f}s; "
        f"peak RSS {peak_rss_mib:,.0f} MiB; {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    result = {
        "users": args.users, "days": args.days, "end_date": str(args.end_date), "seed": args.seed,
        "chunk_users": args.chunk_users, "postgres": server, "counts": counts, "sizes_bytes": sizes,
        "timings_s": {k: round(v, 2) for k, v in timings.items()}, "total_s": round(total_s, 2),
        "rows_per_s": round(rows / total_s), "peak_rss_mib": round(peak_rss_mib), "cpus": os.cpu_count(),
    }  # fmt: skip
    print(json.dumps(result))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
