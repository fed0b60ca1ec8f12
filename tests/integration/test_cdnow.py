"""Importing the CDNOW purchase log into the warehouse, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from spendpred import synth, warehouse
from spendpred.datasets import cdnow
from spendpred.errors import DataError

REAL_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "CDNOW_master.txt"
HEADER = " customer_id  date number_of_cds  dollar_value"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\r\n".join([HEADER, *lines]) + "\r\n")
    return path


def _one(engine: sa.Engine, sql: str) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(sql)).one())


def _contents(engine: sa.Engine) -> tuple[list, list]:
    with engine.connect() as conn:
        users = [tuple(map(str, r)) for r in conn.execute(sa.text("SELECT * FROM users ORDER BY user_id"))]
        orders = [tuple(map(str, r)) for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY order_id"))]
    return users, orders


@pytest.mark.skipif(not REAL_FILE.is_file(), reason=f"CDNOW master file not found at {REAL_FILE}")
def test_import_the_real_file_twice(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    expected_amount = Decimal(0)
    expected_items = 0
    for line in REAL_FILE.read_text().splitlines()[1:]:
        expected_items += int(line.split()[2])
        expected_amount += Decimal(line.split()[3])

    first = cdnow.import_cdnow(engine, REAL_FILE)
    assert first == {"users": 23_570, "orders": 69_659, "replaced_users": 0, "replaced_orders": 0}
    second = cdnow.import_cdnow(engine, REAL_FILE)
    assert second == {"users": 23_570, "orders": 69_659, "replaced_users": 23_570, "replaced_orders": 69_659}
    assert warehouse.table_counts(engine) == {"users": 23_570, "orders": 69_659, "events": 0, "reviews": 0}

    amount, items, customers, categories, statuses = _one(
        engine,
        "SELECT SUM(amount), SUM(items), COUNT(DISTINCT user_id), MIN(category) || MAX(category), "
        "MIN(status) || MAX(status) FROM orders",
    )
    assert Decimal(str(round(float(amount), 2))) == expected_amount
    assert int(items) == expected_items and int(customers) == 23_570
    assert categories == "musicmusic" and statuses == "completedcompleted"
    first_order, last_order = (pd.Timestamp(t) for t in _one(engine, "SELECT MIN(ordered_at), MAX(ordered_at) FROM orders"))
    assert first_order == pd.Timestamp("1997-01-01") and last_order == pd.Timestamp("1998-06-30")
    user_1 = _one(engine, "SELECT user_id, signup_at FROM users WHERE user_id = '1'")
    assert pd.Timestamp(user_1[1]) == pd.Timestamp("1997-01-01")
    assert float(_one(engine, "SELECT amount FROM orders WHERE order_id = 'cdnow-1-2'")[0]) == 11.77
    # signup is each customer's first purchase: no order before it
    assert _one(engine, "SELECT COUNT(*) FROM orders o JOIN users u ON u.user_id = o.user_id "
                "WHERE o.ordered_at < u.signup_at") == (0,)  # fmt: skip


def test_small_file_maps_onto_the_contract(warehouse_url: str, tmp_path: Path) -> None:
    engine = warehouse.get_engine(warehouse_url)
    path = _write(tmp_path / "small.txt", [" 00007 19970105 2 20.50", " 00007 19970105 1 0.00", " 00042 19970301 1 9.99"])
    counts = cdnow.import_cdnow(engine, path)
    assert counts["users"] == 2 and counts["orders"] == 3
    users, orders = _contents(engine)
    assert [u[0] for u in users] == ["42", "7"]
    assert pd.Timestamp(users[1][1]) == pd.Timestamp("1997-01-05") and users[1][2:] == ("None", "None")
    assert [o[0] for o in orders] == ["cdnow-42-4", "cdnow-7-2", "cdnow-7-3"]
    assert [float(o[3]) for o in orders] == [9.99, 20.5, 0.0]


def test_reimport_of_a_corrected_file_replaces_the_customers_history(warehouse_url: str, tmp_path: Path) -> None:
    engine = warehouse.get_engine(warehouse_url)
    cdnow.import_cdnow(engine, _write(tmp_path / "v1.txt", [" 00007 19970105 2 20.50", " 00007 19970106 1 5.00"]))
    counts = cdnow.import_cdnow(engine, _write(tmp_path / "v2.txt", [" 00007 19970107 1 7.00"]))
    assert counts == {"users": 1, "orders": 1, "replaced_users": 1, "replaced_orders": 2}
    users, orders = _contents(engine)
    assert len(users) == 1 and pd.Timestamp(users[0][1]) == pd.Timestamp("1997-01-07")
    assert [o[0] for o in orders] == ["cdnow-7-2"] and float(orders[0][3]) == 7.0


def test_import_leaves_synthetic_rows_alone(warehouse_url: str, tmp_path: Path) -> None:
    engine = warehouse.get_engine(warehouse_url)
    seeded = synth.seed_warehouse(engine, users=20, days=30, end_date=dt.date(2024, 12, 31), seed=1)
    cdnow.import_cdnow(engine, _write(tmp_path / "small.txt", [" 00001 19970105 2 20.50"]))
    counts = warehouse.table_counts(engine)
    assert counts["users"] == seeded["users"] + 1 and counts["orders"] == seeded["orders"] + 1
    assert counts["events"] == seeded["events"]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        (" 00009 19971332 1 12.00", "date '19971332' is not a valid YYYYMMDD date"),
        (" 00009 19970110 1 -12.00", "dollar value '-12.00' is negative"),
        (" 00009 19970110 1 twelve", "dollar value 'twelve' is not a plain decimal number"),
        (" 00009 19970110 12.00", "expected 4 whitespace-separated fields"),
    ],
)
def test_malformed_file_is_rejected_and_nothing_is_written(
    warehouse_url: str, tmp_path: Path, bad_line: str, problem: str
) -> None:
    engine = warehouse.get_engine(warehouse_url)
    good = [" 00001 19970101 1 11.77", " 00002 19970112 1 12.00"]
    # into an empty warehouse: nothing is created or written
    bad_path = _write(tmp_path / "CDNOW_bad.txt", [*good, bad_line, " 00003 19970102 2 20.76"])
    with pytest.raises(DataError, match=rf"^CDNOW_bad\.txt line 4: {problem}"):
        cdnow.import_cdnow(engine, bad_path)
    warehouse.init_db(engine)
    assert warehouse.table_counts(engine) == {"users": 0, "orders": 0, "events": 0, "reviews": 0}
    # over an earlier import: the contents stay exactly as they were
    cdnow.import_cdnow(engine, _write(tmp_path / "good.txt", good))
    before = _contents(engine)
    with pytest.raises(DataError, match="line 4"):
        cdnow.import_cdnow(engine, bad_path)
    assert _contents(engine) == before


def test_a_failing_write_rolls_back_the_whole_import(warehouse_url: str, tmp_path: Path) -> None:
    engine = warehouse.get_engine(warehouse_url)
    cdnow.import_cdnow(engine, _write(tmp_path / "good.txt", [" 00001 19970101 1 11.77"]))
    before = _contents(engine)
    # injected fault: a synthetic order already holds an id the import is about to insert
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (order_id, user_id, ordered_at, amount, items, category, status) "
                "VALUES ('cdnow-5-3', 'u5', :t, 1.0, 1, 'music', 'completed')"
            ),
            {"t": dt.datetime(2024, 1, 1)},
        )
    before_orders = before[1] + [("cdnow-5-3", "u5")]
    with pytest.raises(DataError, match="clash.txt failed .*nothing was written"):
        cdnow.import_cdnow(engine, _write(tmp_path / "clash.txt", [" 00001 19970101 1 11.77", " 00005 19970102 1 3.00"]))
    users, orders = _contents(engine)
    assert users == before[0]
    assert [o[:2] for o in orders] == [o[:2] for o in before_orders]
