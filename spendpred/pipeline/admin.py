"""Warehouse administration steps: create the schema, grant read access, load data, describe it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from spendpred.config import get_settings
from spendpred.masking import mask_url


def init_warehouse(url: str | None = None) -> dict[str, Any]:
    """Create the contract's source relations, output tables and views (idempotent).

    Returns ``{"url": ..., "applied": [sql files]}`` with the password hidden.
    """
    from spendpred import warehouse

    with warehouse.opened_engine(url) as engine:
        applied = warehouse.init_db(engine)
        return {"url": mask_url(engine.url), "applied": applied}


def grant_readonly(role: str, url: str | None = None) -> dict[str, Any]:
    """Give an existing PostgreSQL role SELECT on the downstream views and nothing else.

    Returns ``{"role", "granted"}``: the views granted, as the grant script lists them
    (``publish.readonly_views``, read from ``sql/grants/readonly.postgresql.sql``).
    """
    from spendpred import publish, warehouse

    with warehouse.opened_engine(url) as engine:
        publish.grant_readonly(engine, role)
    return {"role": role, "granted": [f"spendpred.{view}" for view in publish.readonly_views()]}


def seed(
    users: int, days: int, end_date: dt.date, seed: int | None = None, url: str | None = None,
    daily_active: float | None = None,
) -> dict[str, int]:
    """Fill the warehouse with a synthetic population ending at ``end_date``; returns row counts per table.

    ``daily_active``: share of users acting on any day (None: ``synth.DEFAULT_DAILY_ACTIVE``).
    """
    from spendpred import synth, warehouse

    settings = get_settings()
    share = synth.DEFAULT_DAILY_ACTIVE if daily_active is None else daily_active
    with warehouse.opened_engine(url, settings) as engine:
        return synth.seed_warehouse(
            engine, users=users, days=days, end_date=end_date, seed=settings.seed if seed is None else seed,
            daily_active=share,
        )


def append_day(
    day: dt.date, seed: int | None = None, url: str | None = None, daily_active: float | None = None,
    new_users: int | None = None, shift: str | None = None, shift_from: dt.date | None = None,
) -> dict[str, object]:
    """Add one day of synthetic activity to the existing warehouse (``synth.append_day``); returns what was written.

    ``shift`` (``cents``, ``price=K``, ``rename=OLD:NEW``; ``synth.parse_shift``) writes the day in a
    world changed from ``shift_from`` on (default: ``day``). Never creates a warehouse: a missing
    SQLite file is refused. Raises ``ConfigError`` for a bad shift, before anything is opened.
    """
    from spendpred import synth, warehouse

    settings = get_settings()
    share = synth.DEFAULT_DAILY_ACTIVE if daily_active is None else daily_active
    changed = None if shift is None else synth.parse_shift(shift, day if shift_from is None else shift_from)
    with warehouse.opened_engine(url, settings, create=False) as engine:
        return synth.append_day(
            engine, day, settings.seed if seed is None else seed, daily_active=share, new_users=new_users, shift=changed
        )


def import_cdnow(path: str | Path, url: str | None = None) -> dict[str, int]:
    """Load a CDNOW master file into the source relations; returns row counts."""
    from spendpred import warehouse
    from spendpred.datasets import cdnow

    with warehouse.opened_engine(url) as engine:
        return cdnow.import_cdnow(engine, Path(path))  # creates the schema itself when missing


def warehouse_summary(url: str | None = None) -> dict[str, Any]:
    """Return what the warehouse holds (see ``spendpred.report.warehouse_summary``)."""
    from spendpred import report, warehouse

    with warehouse.opened_engine(url) as engine:
        return report.warehouse_summary(engine)


def run_summary(url: str | None = None) -> dict[str, Any]:
    """Return the latest published run, tier sizes and thresholds, movement and the champion (``report.page_data``)."""
    from spendpred import report

    return report.page_data(url)
