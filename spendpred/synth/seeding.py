"""Writing a generated population into the warehouse: :func:`seed_warehouse`.

Everything is written in **one transaction** (empty the four source tables, then bulk insert
chunk by chunk while the next chunk is generated in a worker thread): readers see the old
contents until the new ones are complete, and a failure leaves the warehouse as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import sqlalchemy as sa

from spendpred import warehouse
from spendpred.errors import DataError
from spendpred.synth.population import DEFAULT_CHUNK_USERS, _generate, _validate
from spendpred.synth.vocabulary import DEFAULT_DAILY_ACTIVE
from spendpred.warehouse import SOURCE_TABLES

logger = logging.getLogger(__name__)


def seed_warehouse(
    engine: sa.Engine,
    users: int,
    days: int,
    end_date: dt.date,
    seed: int,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    replace: bool = True,
    *,
    daily_active: float = DEFAULT_DAILY_ACTIVE,
    timings: dict[str, float] | None = None,
) -> dict[str, int]:
    """Create the schema if needed and fill the source relations with a synthetic population.

    With ``replace`` (the default) the four source tables are emptied first; without it the
    rows are appended (user and order ids then must not exist yet). Everything happens in
    one transaction, so a failure leaves the warehouse unchanged. Returns the number of rows
    written per table (``users``, ``orders``, ``events``, ``reviews``). ``daily_active`` is the
    share of users acting on a given day (``generate``). When ``timings`` is
    given it receives seconds spent per table writing, ``generate`` (waiting for the next
    chunk; generation overlaps writing), ``replace``, ``commit`` and ``analyze``.

    Raises ``ConfigError`` for bad arguments and ``DataError`` when appended rows collide
    with existing ids.
    """
    end_date = _validate(users, days, end_date, seed, chunk_users, daily_active)
    warehouse.init_db(engine)
    chunks = -(-users // chunk_users)
    start = end_date - dt.timedelta(days=days - 1)
    logger.info(
        "seeding %d users over %s..%s (%d days), seed %d, daily-active share %g, %d chunk(s) of %d users, replace=%s",
        users, start, end_date, days, seed, daily_active, chunks, chunk_users, replace,
    )  # fmt: skip
    counts = dict.fromkeys(SOURCE_TABLES, 0)
    spent = dict.fromkeys((*SOURCE_TABLES, "generate", "replace", "commit", "analyze"), 0.0)
    began = time.perf_counter()
    dbapi = engine.dialect.loaded_dbapi
    try:
        with engine.begin() as conn, contextlib.ExitStack() as cleanup:
            if replace:
                tick = time.perf_counter()
                _empty_source_tables(conn)
                spent["replace"] += time.perf_counter() - tick
            chunk_iter = cleanup.enter_context(
                contextlib.closing(_prefetched(_generate(users, days, end_date, seed, chunk_users, float(daily_active))))
            )
            index = 0
            while True:  # chunk_iter is closed (worker thread joined) when this block exits
                tick = time.perf_counter()
                chunk = next(chunk_iter, None)
                spent["generate"] += time.perf_counter() - tick
                if chunk is None:
                    break
                index += 1
                for table in SOURCE_TABLES:
                    tick = time.perf_counter()
                    counts[table] += warehouse.bulk_insert(conn, table, chunk[table])
                    spent[table] += time.perf_counter() - tick
                elapsed = time.perf_counter() - began
                logger.info(
                    "chunk %d/%d written: %d users, %d orders, %d events, %d reviews so far (%.1fs, %.0f rows/s)",
                    index, chunks, counts["users"], counts["orders"], counts["events"], counts["reviews"],
                    elapsed, sum(counts.values()) / max(elapsed, 1e-9),
                )  # fmt: skip
            commit_tick = time.perf_counter()
        spent["commit"] += time.perf_counter() - commit_tick
    except (dbapi.IntegrityError, sa.exc.IntegrityError) as exc:
        raise DataError(
            f"seeding failed on a duplicate or invalid row, nothing was written: {str(exc).splitlines()[0]} "
            "(appending with replace=False needs ids that do not exist yet; seed with replace=True)"
        ) from exc
    if engine.dialect.name == "postgresql":
        tick = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            warehouse.run_script(conn, warehouse.load_sql("load/analyze_sources", "postgresql"))
        spent["analyze"] += time.perf_counter() - tick
    if timings is not None:
        timings.update(spent)
    logger.info("seeded %s in %.1fs", ", ".join(f"{n:,} {table}" for table, n in counts.items()), time.perf_counter() - began)
    return counts


def _prefetched(chunks: Iterator[dict[str, pa.Table]]) -> Iterator[dict[str, pa.Table]]:
    """Yield the chunks of ``chunks`` while the next one is generated in a worker thread.

    Generation (numpy, Arrow) and COPY (waiting on the server) overlap; order and content are
    unchanged, and at most two chunks are held in memory.
    """
    sentinel: dict[str, pa.Table] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth") as pool:
        pending = pool.submit(next, chunks, sentinel)
        while True:
            chunk = pending.result()
            if chunk is sentinel:
                return
            pending = pool.submit(next, chunks, sentinel)
            yield chunk


def _empty_source_tables(conn: sa.Connection) -> None:
    """Delete every row of the four source tables inside the caller's transaction."""
    warehouse.run_script(conn, warehouse.load_sql("load/empty_sources", conn.dialect.name))
