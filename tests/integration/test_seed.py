"""Seeding the warehouse with the synthetic population, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import synth, warehouse
from spendpred.errors import ConfigError, DataError
from spendpred.failures import describe

END = dt.date(2024, 12, 31)
DAYS = 365
WINDOW_START = pd.Timestamp("2024-01-02 00:00:00")
WINDOW_END = pd.Timestamp("2024-12-31 23:59:59")
ORDER_BY = {
    "users": "user_id",
    "orders": "order_id",
    "events": "user_id, occurred_at, event_type, category, query, price",
    "reviews": "user_id, created_at, rating, body",
}
TIME_COLUMNS = {"users": "signup_at", "orders": "ordered_at", "events": "occurred_at", "reviews": "created_at"}


def _read(engine: sa.Engine, table: str) -> pd.DataFrame:
    """Read a whole source table in a stable order, with portable types (SQLite keeps text)."""
    frame = pd.read_sql_query(sa.text(f"SELECT * FROM {table} ORDER BY {ORDER_BY[table]}"), engine)
    frame[TIME_COLUMNS[table]] = pd.to_datetime(frame[TIME_COLUMNS[table]])
    for column in ("amount", "price"):
        if column in frame:
            frame[column] = frame[column].astype("float64")
    return frame


def _read_all(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    return {table: _read(engine, table) for table in synth.SOURCE_TABLES}


def _scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_seed_writes_a_consistent_warehouse(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    counts = synth.seed_warehouse(engine, users=300, days=DAYS, end_date=END, seed=5)
    assert counts == warehouse.table_counts(engine)
    assert counts["users"] == 300 and all(n > 0 for n in counts.values())

    assert _scalar(engine, "SELECT COUNT(*) FROM orders WHERE amount < 0 OR items < 1") == 0
    assert _scalar(engine, "SELECT COUNT(*) FROM reviews WHERE rating < 1 OR rating > 5") == 0
    assert _scalar(engine, "SELECT COUNT(*) FROM events WHERE event_type NOT IN "
                   "('view', 'click', 'add_to_cart', 'search', 'wishlist')") == 0  # fmt: skip
    assert _scalar(engine, "SELECT COUNT(DISTINCT status) FROM orders") >= 2
    for table in ("orders", "events", "reviews"):
        orphans = f"SELECT COUNT(*) FROM {table} t LEFT JOIN users u ON u.user_id = t.user_id WHERE u.user_id IS NULL"
        assert _scalar(engine, orphans) == 0, table
    data = _read_all(engine)
    for table, column in TIME_COLUMNS.items():
        stamps = data[table][column]
        assert stamps.min() >= WINDOW_START and stamps.max() <= WINDOW_END, table
    assert (data["orders"].amount.round(2) == data["orders"].amount).all()


def test_the_warehouse_holds_exactly_what_generate_yields(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    synth.seed_warehouse(engine, users=120, days=90, end_date=END, seed=9, chunk_users=50)
    stored = _read_all(engine)
    chunks = list(synth.generate(120, 90, END, 9, chunk_users=50))
    for table in synth.SOURCE_TABLES:
        generated = pa.concat_tables([c[table] for c in chunks]).to_pandas()
        generated = generated.sort_values(ORDER_BY[table].split(", "), na_position="first").reset_index(drop=True)
        got = stored[table].sort_values(ORDER_BY[table].split(", "), na_position="first").reset_index(drop=True)
        assert len(got) == len(generated), table
        for column in generated.columns:
            left, right = got[column], generated[column]
            if column in ("amount", "price"):
                assert np.allclose(left.fillna(-1.0), right.fillna(-1.0)), (table, column)
            elif column in TIME_COLUMNS.values():
                assert (left.to_numpy() == right.astype("datetime64[ns]").to_numpy()).all(), (table, column)
            else:
                assert left.fillna("<null>").astype(str).tolist() == right.fillna("<null>").astype(str).tolist(), (
                    table,
                    column,
                )


def test_same_seed_same_data_different_seed_different_data(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    synth.seed_warehouse(engine, users=150, days=180, end_date=END, seed=3)
    first = _read_all(engine)
    synth.seed_warehouse(engine, users=150, days=180, end_date=END, seed=3)  # replace=True
    second = _read_all(engine)
    for table in synth.SOURCE_TABLES:
        pd.testing.assert_frame_equal(first[table], second[table])
    counts = synth.seed_warehouse(engine, users=150, days=180, end_date=END, seed=4)
    assert counts == warehouse.table_counts(engine)  # replaced, not appended
    third = _read_all(engine)
    assert not first["orders"].equals(third["orders"])
    assert not first["events"].equals(third["events"])


def test_search_vocabulary_predicts_spend_in_the_warehouse(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    synth.seed_warehouse(engine, users=800, days=DAYS, end_date=END, seed=21)
    premium = " OR ".join(f"query LIKE '%{word}%'" for word in synth.PREMIUM_WORDS)
    frame = pd.read_sql_query(
        sa.text(
            f"SELECT s.user_id, s.premium_share, COALESCE(o.spend, 0) AS spend FROM "
            f"(SELECT user_id, AVG(CASE WHEN {premium} THEN 1.0 ELSE 0.0 END) AS premium_share "
            f" FROM events WHERE event_type = 'search' GROUP BY user_id) s "
            f"LEFT JOIN (SELECT user_id, SUM(amount) AS spend FROM orders WHERE status = 'completed' "
            f" GROUP BY user_id) o ON o.user_id = s.user_id"
        ),
        engine,
    ).astype({"premium_share": "float64", "spend": "float64"})
    assert len(frame) > 200
    rho = np.corrcoef(frame.premium_share.rank(), frame.spend.rank())[0, 1]
    assert rho > 0.2


def test_append_with_existing_ids_is_refused_and_changes_nothing(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    counts = synth.seed_warehouse(engine, users=40, days=60, end_date=END, seed=1)
    with pytest.raises(DataError, match="nothing was written"):
        synth.seed_warehouse(engine, users=40, days=60, end_date=END, seed=2, replace=False)
    assert warehouse.table_counts(engine) == counts


def test_bad_arguments_fail_before_touching_the_warehouse(sqlite_url: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    with pytest.raises(ConfigError, match="users must be between 1 and"):
        synth.seed_warehouse(engine, users=0, days=30, end_date=END, seed=1)
    with pytest.raises(ConfigError, match="days must be between 1"):
        synth.seed_warehouse(engine, users=10, days=0, end_date=END, seed=1)
    assert sa.inspect(engine).get_table_names() == []


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


def test_seed_command_daily_active_and_append_day(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from spendpred.cli import app

    runner = CliRunner()
    seeded = runner.invoke(app, ["seed", "--users", "500", "--days", "90", "--end-date", "2024-12-31",
                                 "--daily-active", "0.1", "--seed", "3", "--url", sqlite_url])  # fmt: skip
    assert seeded.exit_code == 0, seeded.output
    engine = warehouse.get_engine(sqlite_url)
    assert json.loads(seeded.stdout) == warehouse.table_counts(engine)
    last = _active_users(engine, END) / 500
    assert 0.05 < last < 0.2  # about 10%, a Tuesday
    appended = runner.invoke(app, ["seed", "--append-day", "2025-01-01", "--new-users", "4", "--url", sqlite_url])
    assert appended.exit_code == 0, appended.output
    out = json.loads(appended.stdout)
    assert out["day"] == "2025-01-01" and out["users"] == 4 and out["signed_up"] == 504
    for args, message in (
        (["--append-day", "2025-01-02", "--users", "5"], "--users does not apply with --append-day"),
        (["--new-users", "3"], "--new-users applies only with --append-day"),
        (["--append-day", "2025-01-01"], "already holds rows dated 2025-01-01"),
    ):
        refused = runner.invoke(app, ["seed", *args, "--url", sqlite_url])
        assert refused.exit_code != 0 and message in describe(refused.exception), refused.output
    assert warehouse.table_counts(engine)["users"] == 504
