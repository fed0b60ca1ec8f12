"""Test helpers shared by the pipeline step tests: a small synthetic warehouse up to one run date, and
what has been published (``test_pipeline.py``, ``test_pipeline_nightly.py``, ``test_pipeline_retrain.py``...)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from spendpred import pipeline, warehouse

__all__ = ["RUN_DATE", "published_scores", "seed_run"]

RUN_DATE = dt.date(2024, 6, 30)


def seed_run(url: str, users: int = 400) -> None:
    """Seed ``users`` synthetic users over the 400 days up to ``RUN_DATE`` (seed 7)."""
    pipeline.seed(users=users, days=400, end_date=RUN_DATE, seed=7, url=url)


def published_scores(url: str) -> list[tuple]:
    """Return the published scores as ``(as_of, tier, users)`` rows, in order."""
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT CAST(as_of AS TEXT), tier, COUNT(*) FROM user_spend_scores GROUP BY 1, 2 ORDER BY 1, 2"
            ))]
    finally:
        engine.dispose()
