"""Warehouse access on SQLite and PostgreSQL: init, bulk insert, streaming reads."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import warehouse
from spendpred.errors import ConfigError


def _orders(n: int) -> pa.Table:
    base = dt.datetime(2024, 1, 1, 8, 30)
    return pa.table(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "user_id": [f"u{i % 7}" for i in range(n)],
            "ordered_at": pa.array([base + dt.timedelta(hours=i) for i in range(n)], pa.timestamp("us")),
            "amount": [float(i) + 0.25 for i in range(n)],
            "items": [1 + i % 3 for i in range(n)],
            "category": [None if i % 5 == 0 else "books" for i in range(n)],
            "status": ["completed"] * n,
        }
    )


def test_init_is_idempotent_and_creates_contract_tables(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    first = warehouse.init_db(engine)
    second = warehouse.init_db(engine)
    assert first == second
    inspector = sa.inspect(engine)
    names = set(inspector.get_table_names())
    if engine.dialect.name == "postgresql":
        names |= set(inspector.get_table_names(schema="spendpred"))
    assert {"users", "orders", "events", "reviews", "user_spend_scores", "tier_thresholds"} <= names
    assert warehouse.table_counts(engine) == {"users": 0, "orders": 0, "events": 0, "reviews": 0}


def test_bulk_insert_then_stream_in_chunks(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    warehouse.init_db(engine)
    data = _orders(1000)
    with engine.begin() as conn:
        assert warehouse.bulk_insert(conn, "orders", data) == 1000
    chunks = list(
        warehouse.stream_query(
            engine,
            "SELECT order_id, amount, category FROM orders WHERE ordered_at < :cutoff ORDER BY order_id",
            {"cutoff": dt.datetime(2024, 1, 2, 0, 0)},
            chunk_rows=4,
        )
    )
    # orders at 08:30 + i hours before 2024-01-02 00:00: i = 0..15
    assert [c.num_rows for c in chunks] == [4, 4, 4, 4]
    got = pa.concat_tables(chunks)
    assert sorted(got.column("order_id").to_pylist()) == sorted(f"o{i}" for i in range(16))
    assert got.column("category").null_count == 4  # i = 0, 5, 10, 15
    assert sum(float(a) for a in got.column("amount").to_pylist()) == pytest.approx(sum(i + 0.25 for i in range(16)))


def test_bulk_insert_is_part_of_the_callers_transaction(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    warehouse.init_db(engine)
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            warehouse.bulk_insert(conn, "orders", _orders(10))
            raise RuntimeError("injected failure")
    assert warehouse.table_counts(engine, ["orders"]) == {"orders": 0}


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="unsupported warehouse backend"):
        warehouse.get_engine("mysql://localhost/x")


def test_bad_identifier_is_refused(sqlite_url: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    with pytest.raises(ConfigError, match="invalid table"):
        warehouse.table_counts(engine, ["users; DROP TABLE users"])


def test_split_statements_keeps_dollar_quoted_bodies() -> None:
    script = "-- c\nCREATE TABLE a (x int);\nDO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;\n-- trailing\n"
    assert warehouse.split_statements(script) == ["-- c\nCREATE TABLE a (x int)", "DO $$\nBEGIN\n  PERFORM 1;\nEND\n$$"]


def test_sqlite_timestamps_are_stored_as_whole_second_text(sqlite_url: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    warehouse.init_db(engine)
    with engine.begin() as conn:
        warehouse.bulk_insert(conn, "orders", _orders(2))
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT ordered_at FROM orders ORDER BY order_id").scalars().all()
    assert stored == ["2024-01-01 08:30:00", "2024-01-01 09:30:00"]


def test_dialect_fragments_render_per_dialect() -> None:
    sql = "SELECT {{days_between(:as_of, COALESCE(a, b))}} FROM t ORDER BY u {{byte_order}}"
    assert warehouse.render_fragments(sql, "sqlite") == (
        "SELECT (julianday(date(:as_of)) - julianday(date(COALESCE(a, b)))) FROM t ORDER BY u COLLATE BINARY"
    )
    assert warehouse.render_fragments(sql, "postgresql") == (
        'SELECT (CAST(:as_of AS DATE) - CAST(COALESCE(a, b) AS DATE)) FROM t ORDER BY u COLLATE "C"'
    )
    with pytest.raises(ConfigError, match="unknown SQL fragment"):
        warehouse.render_fragments("SELECT {{nope}}", "sqlite")


def test_bound_dates_and_timestamps_compare_the_same_on_both_dialects(warehouse_url: str) -> None:
    day, stamp = dt.date(2024, 6, 30), dt.datetime(2024, 6, 30, 23, 59, 59, 999)
    assert warehouse.bind_values("sqlite", {"d": day, "t": stamp, "n": 3}) == {"d": "2024-06-30", "t": "2024-06-30 23:59:59", "n": 3}
    assert warehouse.bind_values("postgresql", {"d": day, "t": stamp}) == {"d": day, "t": stamp}
    with warehouse.opened_engine(warehouse_url) as engine:
        warehouse.init_db(engine)
        with engine.begin() as conn:
            warehouse.bulk_insert(conn, "users", pa.table({
                "user_id": ["a", "b"], "signup_at": pa.array([dt.datetime(2024, 6, 30, 12), dt.datetime(2024, 7, 1)], pa.timestamp("s")),
                "country": pa.array([None, None], pa.string()), "segment": pa.array([None, None], pa.string()),
            }))  # fmt: skip
            cutoff = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
            params = warehouse.bind_values(engine.dialect.name, {"cutoff": cutoff})
            before = conn.execute(sa.text("SELECT user_id FROM users WHERE signup_at < :cutoff"), params).scalars().all()
    assert before == ["a"]  # the point-in-time rule: rows before D + 1 day
