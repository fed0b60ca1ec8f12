"""Warehouse types as they come (PostgreSQL): the source relations as views over columns of other types.

A real warehouse maps its tables onto the contract's relations with views, and its columns keep
their own types: money as integer, numeric, real or double precision, ids as integers,
timestamps with time zone. The extract reads values, not declared types: over such views it
gives the same snapshot as the contract's own tables holding the same values, and the
source-data contract still checks the values (finite, plausible, non-negative).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from spendpred import behaviour, synth, warehouse
from spendpred.snapshot import MANIFEST_FILE, SNAPSHOT_FILE
from spendpred.validation import SOURCE_RULES

pytestmark = pytest.mark.postgres

AS_OF = dt.date(2024, 6, 30)
H = 30
RAW, TYPED = "spendpred_test_raw", "spendpred_test_typed"
"""The warehouse's own tables (other types, other column names) and the views named like the source relations."""

WHOLE_UNITS = {"integer", "real"}
"""Money types that hold these amounts only in whole units (real: six significant digits)."""


@pytest.fixture
def canonical(pg_url: str) -> Iterator[str]:
    """The contract's tables in ``public``, seeded, with numeric user ids and zero-padded order ids (as text)."""
    engine = warehouse.get_engine(pg_url)
    warehouse.init_db(engine)
    synth.seed_warehouse(engine, users=80, days=240, end_date=AS_OF + dt.timedelta(days=H), seed=4)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE idmap AS SELECT user_id AS old, CAST(ROW_NUMBER() OVER (ORDER BY user_id) AS TEXT) AS new "
            "FROM users"
        )
        for table in ("orders", "events", "reviews", "users"):
            conn.exec_driver_sql(f"UPDATE {table} t SET user_id = m.new FROM idmap m WHERE t.user_id = m.old")
        conn.exec_driver_sql(
            "UPDATE orders o SET order_id = n.padded FROM (SELECT order_id, LPAD(CAST(ROW_NUMBER() OVER "
            "(ORDER BY order_id) AS TEXT), 8, '0') AS padded FROM orders) n WHERE o.order_id = n.order_id"
        )
    engine.dispose()
    yield pg_url
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {TYPED} CASCADE")
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {RAW} CASCADE")
    admin.dispose()


def _typed_views(url: str, money: str) -> None:
    """Copy ``public``'s rows into tables of other types, exposed through views named like the source relations.

    Users: bigint ids, timestamptz. Orders: bigint order and user ids, timestamptz, ``money``
    amounts, smallint items. Events: text ids, timestamp without time zone, ``money`` prices.
    Reviews: bigint ids, timestamptz, smallint ratings.
    """
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for schema in (TYPED, RAW):
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        conn.exec_driver_sql(
            f"CREATE TABLE {RAW}.customer AS SELECT CAST(user_id AS BIGINT) AS id, "
            "signup_at AT TIME ZONE 'UTC' AS created, country, segment FROM public.users"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {RAW}.sale AS SELECT CAST(order_id AS BIGINT) AS id, CAST(user_id AS BIGINT) AS customer_id, "
            f"ordered_at AT TIME ZONE 'UTC' AS sold, CAST(amount AS {money}) AS total, CAST(items AS SMALLINT) AS qty, "
            "category, status FROM public.orders"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {RAW}.click AS SELECT user_id, occurred_at, event_type, category, query, "
            f"CAST(price AS {money}) AS price FROM public.events"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {RAW}.feedback AS SELECT CAST(user_id AS BIGINT) AS customer_id, "
            "created_at AT TIME ZONE 'UTC' AS written, CAST(rating AS SMALLINT) AS stars, body FROM public.reviews"
        )
        for view, select in (
            ("users", f"SELECT id AS user_id, created AS signup_at, country, segment FROM {RAW}.customer"),
            ("orders", f"SELECT id AS order_id, customer_id AS user_id, sold AS ordered_at, total AS amount, "
                       f"qty AS items, category, status FROM {RAW}.sale"),
            ("events", f"SELECT * FROM {RAW}.click"),
            ("reviews", f"SELECT customer_id AS user_id, written AS created_at, stars AS rating, body FROM {RAW}.feedback"),
        ):  # fmt: skip
            conn.exec_driver_sql(f"CREATE VIEW {TYPED}.{view} AS {select}")
    engine.dispose()


def _extract(url: str, out: Path, schema: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, dict]:
    monkeypatch.setenv("SPENDPRED_SOURCE_SCHEMA", schema)
    engine = warehouse.get_engine(url)
    try:
        behaviour.extract_snapshot(engine, AS_OF, out, H, with_labels=True)
    finally:
        engine.dispose()
    return pq.read_table(out / SNAPSHOT_FILE), json.loads((out / MANIFEST_FILE).read_text())


@pytest.mark.parametrize("money", ["numeric", "double precision", "real", "integer"])
def test_views_over_other_types_extract_like_the_contract_tables(
    canonical: str, money: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if money in WHOLE_UNITS:  # the same values in both warehouses
        engine = sa.create_engine(canonical)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE public.orders SET amount = ROUND(amount)")
            conn.exec_driver_sql("UPDATE public.events SET price = ROUND(price)")
        engine.dispose()
    _typed_views(canonical, money)
    expected, expected_manifest = _extract(canonical, tmp_path / "canonical", "public", monkeypatch)
    got, manifest = _extract(canonical, tmp_path / "typed", TYPED, monkeypatch)

    assert got.num_rows == expected.num_rows > 50
    assert got.column("monetary_all").to_pylist() == expected.column("monetary_all").to_pylist()
    assert sum(expected.column("monetary_all").to_pylist()) > 0 and sum(expected.column("label").to_pylist()) > 0
    assert got.equals(expected)
    assert manifest["source_row_counts"] == expected_manifest["source_row_counts"]
    assert manifest["max_source_timestamps"] == expected_manifest["max_source_timestamps"]
    assert {r: manifest["source_checks"][r]["violations"] for r in SOURCE_RULES} == {r: 0 for r in SOURCE_RULES}


@pytest.mark.parametrize(("value", "rule"), [("-5", "order_amount_negative"), ("'NaN'", "order_amount_not_finite"),
                                             ("'Infinity'", "order_amount_not_finite"), ("1e12", "order_amount_not_finite")])
def test_the_contract_checks_the_values_of_a_double_precision_amount(
    canonical: str, value: str, rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _typed_views(canonical, "double precision")
    engine = sa.create_engine(canonical)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {RAW}.sale SET total = {value} WHERE id = (SELECT MIN(id) FROM {RAW}.sale)")
    engine.dispose()
    _, manifest = _extract(canonical, tmp_path / "typed", TYPED, monkeypatch)
    assert manifest["source_checks"][rule]["violations"] == 1
    assert manifest["source_checks"][rule]["examples"][0].startswith("order 1: amount ")
