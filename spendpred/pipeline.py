"""The pipeline steps that both front ends call: the Airflow DAGs and the ``spendpred`` CLI.

Each step takes plain values (dates, paths, names), returns small JSON-able metadata (paths,
counts, versions) fit for XCom, and does its heavy imports inside the function, so importing
this module at DAG parse time is cheap.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from spendpred.config import Settings, get_settings
from spendpred.errors import ConfigError

logger = logging.getLogger(__name__)


def parse_date(value: str | dt.date, name: str = "as_of") -> dt.date:
    """Return ``value`` as a date; raises ``ConfigError`` naming the parameter when malformed."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a date: use YYYY-MM-DD, e.g. 2024-06-30") from exc


def _engine(url: str | None, settings: Settings | None = None):  # noqa: ANN202 - sqlalchemy Engine
    from spendpred import warehouse

    return warehouse.get_engine(url, settings)


def init_warehouse(url: str | None = None) -> dict[str, Any]:
    """Create the contract's source relations, output tables and views (idempotent).

    Returns ``{"url": ..., "applied": [sql files]}`` with the password hidden.
    """
    from spendpred import warehouse

    engine = _engine(url)
    try:
        applied = warehouse.init_db(engine)
        return {"url": engine.url.render_as_string(hide_password=True), "applied": applied}
    finally:
        engine.dispose()


def seed(users: int, days: int, end_date: str | dt.date, seed: int | None = None, url: str | None = None) -> dict[str, int]:
    """Fill the warehouse with a synthetic population; returns row counts per table."""
    from spendpred import synth

    settings = get_settings()
    engine = _engine(url, settings)
    try:
        return synth.seed_warehouse(
            engine,
            users=users,
            days=days,
            end_date=parse_date(end_date, "end_date"),
            seed=settings.seed if seed is None else seed,
        )
    finally:
        engine.dispose()


def import_cdnow(path: str | Path, url: str | None = None) -> dict[str, int]:
    """Load a CDNOW master file into the source relations; returns row counts."""
    from spendpred import warehouse
    from spendpred.datasets import cdnow

    engine = _engine(url)
    try:
        warehouse.init_db(engine)
        return cdnow.import_cdnow(engine, Path(path))
    finally:
        engine.dispose()


def warehouse_summary(url: str | None = None) -> dict[str, Any]:
    """Return what the warehouse holds: row counts and the time range of orders and events."""
    import sqlalchemy as sa

    from spendpred import warehouse

    engine = _engine(url)
    try:
        counts = warehouse.table_counts(engine)
        with engine.connect() as conn:
            orders = conn.execute(
                sa.text(
                    "SELECT MIN(ordered_at), MAX(ordered_at), COUNT(DISTINCT user_id), "
                    "SUM(CASE WHEN status = 'completed' THEN amount ELSE 0 END) FROM orders"
                )
            ).one()
        return {
            "url": engine.url.render_as_string(hide_password=True),
            "counts": counts,
            "first_order": str(orders[0]) if orders[0] is not None else None,
            "last_order": str(orders[1]) if orders[1] is not None else None,
            "buyers": int(orders[2] or 0),
            "completed_spend": float(orders[3] or 0.0),
        }
    finally:
        engine.dispose()
