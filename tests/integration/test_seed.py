"""Seeding the warehouse with the synthetic population, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import synth, warehouse
from spendpred.errors import ConfigError, DataError

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
