"""Benchmark: publishing scores into PostgreSQL.

Publishes the same N rows (default 1,000,000) three ways, in one run, into a throwaway
database that is created at the start and dropped at the end:

* ``publish_scores``: spendpred's publish (validate, COPY into a temp table, replace the
  as_of partition of ``spendpred.user_spend_scores`` (primary key, CHECK constraints) and
  its thresholds, all in one transaction);
* ``pandas.DataFrame.to_sql``: pandas with its defaults (``method=None``,
  ``chunksize=None``; only ``index=False`` and ``if_exists="append"`` so that the columns
  match) into a plain table with the same columns and no constraints;
* ``psql \\copy``: the physical reference, the same rows from a CSV file into another
  plain table, through ``psql`` in a subprocess (timed from process start to exit);
  for context also into a table with the primary key of ``user_spend_scores`` (the rows
  in the file are in random user order, as a scorer's output is).

Prints seconds and rows/s for each and the ratios. Usage::

    SPENDPRED_BENCH_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/publish_postgres.py --rows 1000000

The admin URL (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``) must be
allowed to CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from _pg import Throwaway, throwaway_database

from spendpred import publish, warehouse
from spendpred.registry import REGISTERED_MODEL
from spendpred.tiers import assign_tiers

AS_OF = dt.date(2024, 6, 30)
SCORED_AT = dt.datetime(2024, 7, 1, 2, 0, 0)
MODEL_VERSION = "1"
PLAIN_TABLE = """
CREATE TABLE public.{name} (
    as_of           DATE,
    user_id         TEXT,
    predicted_spend DOUBLE PRECISION,
    tier            TEXT,
    model_name      TEXT,
    model_version   TEXT,
    scored_at       TIMESTAMP
)
"""
COLUMNS = "as_of, user_id, predicted_spend, tier, model_name, model_version, scored_at"


def make_rows(n: int, seed: int) -> tuple[pa.Table, list[Any]]:
    """Return ``(scores, thresholds)``: n users with heavy-tailed scores and their tiers."""
    rng = np.random.default_rng(seed)
    spend = np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(4.0, 1.2, n))
    tiers, thresholds = assign_tiers(spend)
    ids = pa.array([f"user_{i:08d}" for i in rng.permutation(n)], pa.string())
    return pa.table({"user_id": ids, "predicted_spend": spend, "tier": tiers}), thresholds


def full_rows(scores: pa.Table) -> pa.Table:
    """The scores with the run-wide columns, as stored in user_spend_scores."""
    n = scores.num_rows
    return pa.table(
        {
            "as_of": pa.array([AS_OF] * n, pa.date32()),
            "user_id": scores.column("user_id"),
            "predicted_spend": scores.column("predicted_spend"),
            "tier": scores.column("tier"),
            "model_name": pa.array([REGISTERED_MODEL] * n),
            "model_version": pa.array([MODEL_VERSION] * n),
            "scored_at": pa.array([SCORED_AT] * n, pa.timestamp("s")),
        }
    )


def checkpoint(engine: sa.Engine) -> None:
    """Flush dirty buffers between methods so that one does not pay for the other."""
    try:
        with engine.connect() as conn:  # an AUTOCOMMIT engine
            conn.exec_driver_sql("CHECKPOINT")
    except sa.exc.DBAPIError:
        pass  # needs superuser or pg_checkpoint; the figures are still valid without it


def psql_copy(url: sa.engine.URL, csv_path: Path, table: str) -> None:
    """Load the CSV with ``psql \\copy``; raises CalledProcessError on failure."""
    psql = shutil.which("psql")
    if psql is None:
        raise SystemExit("psql not found on PATH: install the PostgreSQL client (postgresql-client)")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    command = [
        psql, "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
        "-U", url.username or "postgres", "-d", url.database or "",
        "-c", f"\\copy public.{table} ({COLUMNS}) FROM '{csv_path}' WITH (FORMAT csv, HEADER true)",
    ]  # fmt: skip
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)


def timed(label: str, func: Any, *args: Any, **kwargs: Any) -> float:
    """Run ``func`` and return its wall-clock seconds."""
    started = time.perf_counter()
    func(*args, **kwargs)
    seconds = time.perf_counter() - started
    logging.info("%s: %.2fs", label, seconds)
    return seconds


def count(engine: sa.Engine, table: str) -> int:
    """Row count of a table (name from this script only)."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def run(rows: int, seed: int, chunk_rows: int | None) -> dict[str, Any]:
    """Create the database, run the three methods, drop the database; return the results."""
    with throwaway_database("spendpred_bench_publish") as db:
        return _run_in(db, rows, seed, chunk_rows)


def _run_in(db: Throwaway, rows: int, seed: int, chunk_rows: int | None) -> dict[str, Any]:
    """Run the three methods in the throwaway database ``db``; return the results."""
    admin, server, url = db.admin, db.server_version, sa.engine.make_url(db.url)
    engine = warehouse.get_engine(db.url)
    try:
        warehouse.init_db(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql(PLAIN_TABLE.format(name="bench_to_sql"))
            conn.exec_driver_sql(PLAIN_TABLE.format(name="bench_copy"))
            conn.exec_driver_sql(PLAIN_TABLE.format(name="bench_copy_pk"))
            conn.exec_driver_sql("ALTER TABLE public.bench_copy_pk ADD PRIMARY KEY (as_of, user_id)")
        scores, thresholds = make_rows(rows, seed)
        table = full_rows(scores)
        frame = table.to_pandas()
        with tempfile.TemporaryDirectory(prefix="spendpred_bench_") as tmp:
            csv_path = Path(tmp) / "scores.csv"
            pacsv.write_csv(table, csv_path)

            checkpoint(admin)
            t_copy = timed("psql \\copy", psql_copy, url, csv_path, "bench_copy")
            checkpoint(admin)
            t_copy_pk = timed("psql \\copy, primary-key table", psql_copy, url, csv_path, "bench_copy_pk")
            checkpoint(admin)
            t_ours = timed(
                "publish_scores",
                publish.publish_scores,
                engine, AS_OF, scores, thresholds, REGISTERED_MODEL, MODEL_VERSION,
                scored_at=SCORED_AT, chunk_rows=chunk_rows,
            )  # fmt: skip
            checkpoint(admin)
            t_replace = timed(
                "publish_scores (rerun: replaces the partition)",
                publish.publish_scores,
                engine, AS_OF, scores, thresholds, REGISTERED_MODEL, MODEL_VERSION,
                scored_at=SCORED_AT, chunk_rows=chunk_rows,
            )  # fmt: skip
            checkpoint(admin)
            t_to_sql = timed(
                "DataFrame.to_sql", frame.to_sql, "bench_to_sql", engine, schema="public", if_exists="append", index=False
            )
        counts = {
            "publish_scores": count(engine, "spendpred.user_spend_scores"),
            "to_sql": count(engine, "public.bench_to_sql"),
            "copy": count(engine, "public.bench_copy"),
            "copy_pk": count(engine, "public.bench_copy_pk"),
        }
        if set(counts.values()) != {rows}:
            raise SystemExit(f"row counts differ from {rows}: {counts}")
    finally:
        engine.dispose()
    return {
        "rows": rows,
        "seconds": {"publish_scores": t_ours, "publish_scores_rerun": t_replace, "to_sql": t_to_sql, "psql_copy": t_copy,
                    "psql_copy_pk": t_copy_pk},
        "server_version": server,
        "chunk_rows": chunk_rows,
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "sqlalchemy": sa.__version__,
        "cpus": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def report(result: dict[str, Any]) -> str:
    """Format the results as a small text table with the ratios."""
    rows = result["rows"]
    s = result["seconds"]
    labels = {
        "publish_scores": "publish_scores (COPY + partition swap)",
        "publish_scores_rerun": "publish_scores, same date again",
        "to_sql": "pandas DataFrame.to_sql (defaults)",
        "psql_copy": "psql \\copy (physical reference)",
        "psql_copy_pk": "psql \\copy into a primary-key table",
    }
    lines = [f"{rows:,} rows, PostgreSQL {result['server_version']}, {result['cpus']} CPUs", ""]
    lines.append(f"{'method':<42}{'seconds':>10}{'rows/s':>14}")
    for key, label in labels.items():
        lines.append(f"{label:<42}{s[key]:>10.2f}{rows / s[key]:>14,.0f}")
    lines += [
        "",
        f"publish_scores vs to_sql:   {s['to_sql'] / s['publish_scores']:.1f}x faster",
        f"publish_scores vs \\copy:    {s['publish_scores'] / s['psql_copy']:.2f}x the time of \\copy "
        f"({s['psql_copy'] / s['publish_scores']:.0%} of its speed)",
        f"publish_scores vs \\copy into a primary-key table: {s['publish_scores'] / s['psql_copy_pk']:.2f}x the time",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table (and write JSON if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to publish (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the scores")
    parser.add_argument("--chunk-rows", type=int, default=None, help="publish_scores staging chunk (default: setting)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(args.rows, args.seed, args.chunk_rows)
    text = report(result)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
