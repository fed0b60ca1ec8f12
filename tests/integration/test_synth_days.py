"""One more day of activity (``spendpred.synth.days.append_day``) on a seeded warehouse, SQLite and PostgreSQL:
the daily-active share, point in time (earlier snapshots never change), determinism, refusals.
Seeding itself is ``test_seed.py``; the population generator, ``tests/unit/test_synth.py``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from spendpred import synth, warehouse
from spendpred.errors import ConfigError, DataError
from tests.integration.test_seed import END, TIME_COLUMNS, _read, _read_all

NEXT = END + dt.timedelta(days=1)  # 2025-01-01, a Wednesday


def _rows_on(engine: sa.Engine, day: dt.date) -> dict[str, pd.DataFrame]:
    """Every row of the source tables dated on ``day``."""
    frames = _read_all(engine)
    start, stop = pd.Timestamp(day), pd.Timestamp(day) + pd.Timedelta(days=1)
    return {t: f[(f[TIME_COLUMNS[t]] >= start) & (f[TIME_COLUMNS[t]] < stop)].reset_index(drop=True) for t, f in frames.items()}


def _active_users(engine: sa.Engine, day: dt.date) -> int:
    rows = _rows_on(engine, day)
    return len(set(rows["orders"].user_id) | set(rows["events"].user_id) | set(rows["reviews"].user_id))


def test_append_day_adds_one_day_at_the_daily_active_share(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    seeded = synth.seed_warehouse(engine, users=4000, days=200, end_date=END, seed=5)
    result = synth.append_day(engine, NEXT, seed=5)
    counts = warehouse.table_counts(engine)
    assert {t: counts[t] - seeded[t] for t in synth.SOURCE_TABLES} == {t: result[t] for t in synth.SOURCE_TABLES}
    assert result["day"] == "2025-01-01" and result["signed_up"] == counts["users"]
    assert result["orders"] > 0 and result["events"] > 0 and result["users"] > 0

    rows = _rows_on(engine, NEXT)
    for table in synth.SOURCE_TABLES:  # every new row is dated on the day, and only there
        assert len(rows[table]) == result[table], table
    assert rows["users"].user_id.str.fullmatch(r"u20250101-\d{6}").all()
    assert rows["orders"].order_id.str.fullmatch(r"o20250101-u[\d-]+-\d+").all()
    # the share: as measured in the warehouse, and near daily_active x the Wednesday rhythm
    assert result["active_users"] == _active_users(engine, NEXT)
    wednesday = synth.DEFAULT_DAILY_ACTIVE * 0.92 / np.mean([0.95, 0.92, 0.92, 0.95, 1.00, 1.15, 1.20])
    assert result["active_share"] == pytest.approx(result["active_users"] / result["signed_up"], abs=1e-5)
    assert result["active_share"] == pytest.approx(wednesday, rel=0.25)
    # nothing happens before a user signed up; funnel before each order; ratings and amounts in range
    signup = _read(engine, "users").set_index("user_id").signup_at
    for table in ("orders", "events", "reviews"):
        frame = rows[table]
        assert (frame[TIME_COLUMNS[table]].to_numpy() >= signup.loc[frame.user_id].to_numpy()).all(), table
    assert rows["reviews"].rating.between(1, 5).all() and (rows["orders"].amount > 0).all()
    assert set(rows["events"].event_type) <= set(synth.EVENT_TYPES)

    # the next day too; then the same day again, or an earlier one, is refused and changes nothing
    second = synth.append_day(engine, NEXT + dt.timedelta(days=1), seed=5, new_users=0)
    assert second["users"] == 0 and second["events"] > 0
    before = warehouse.table_counts(engine)
    for day in (NEXT, NEXT + dt.timedelta(days=1), END):
        with pytest.raises(DataError, match=r"already holds rows dated 2025-01-02 .*nothing was written; append 2025-01-03"):
            synth.append_day(engine, day, seed=5)
    assert warehouse.table_counts(engine) == before


def test_append_day_keeps_earlier_snapshots_and_is_deterministic(tmp_path: Path) -> None:
    from spendpred import behaviour

    engines = [warehouse.get_engine(f"sqlite:///{tmp_path / name}.db") for name in ("a", "b")]
    for engine in engines:
        synth.seed_warehouse(engine, users=600, days=120, end_date=END, seed=8)
    before = behaviour.extract_snapshot(engines[0], END, tmp_path / "before", 30, False)
    results = [synth.append_day(engine, NEXT, seed=8) for engine in engines]
    assert results[0] == results[1]
    a, b = (_read_all(engine) for engine in engines)
    for table in synth.SOURCE_TABLES:  # same warehouse, day and seed: the same rows
        pd.testing.assert_frame_equal(a[table], b[table])
    after = behaviour.extract_snapshot(engines[0], END, tmp_path / "after", 30, False)
    assert after.checksum == before.checksum and after.source_row_counts == before.source_row_counts
    night = behaviour.extract_snapshot(engines[0], NEXT, tmp_path / "next", 30, False)
    assert night.row_count == before.row_count + results[0]["users"]
    # another seed draws another day
    other = warehouse.get_engine(f"sqlite:///{tmp_path / 'c'}.db")
    synth.seed_warehouse(other, users=600, days=120, end_date=END, seed=8)
    synth.append_day(other, NEXT, seed=9)
    assert not _rows_on(other, NEXT)["events"].equals(_rows_on(engines[0], NEXT)["events"])


def test_append_day_refuses_an_empty_warehouse_and_bad_arguments(sqlite_url: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    warehouse.init_db(engine)
    with pytest.raises(DataError, match="holds no users: seed it first"):
        synth.append_day(engine, NEXT, seed=1)
    for kwargs, message in (
        ({"day": "2025-01-01"}, "day must be a date"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"daily_active": 0.0}, "daily_active must be a share"),
        ({"new_users": -2}, "new_users must be a whole number"),
    ):
        args: dict[str, object] = {"day": NEXT, "seed": 1} | kwargs
        with pytest.raises(ConfigError, match=message):
            synth.append_day(engine, **args)  # type: ignore[arg-type]
    assert warehouse.table_counts(engine) == dict.fromkeys(synth.SOURCE_TABLES, 0)
