"""The source-data contract of the gate, on SQLite and PostgreSQL: each rule broken once is named with its count.

The warehouse contract's own tables carry CHECK and key constraints, but a real warehouse maps
its tables onto the source relations with views that enforce nothing; these tests create the
source relations without any constraint so that every kind of bad row can reach the extract.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import behaviour, warehouse
from spendpred.behaviour import UNREADABLE
from spendpred.errors import ValidationFailed
from spendpred.snapshot import MANIFEST_FILE
from spendpred.validation import MAX_PLAUSIBLE_MONEY, SOURCE_RULES, validate_snapshot

AS_OF = date(2024, 6, 30)  # cutoff 2024-07-01 00:00
H = 30
TS = pa.timestamp("us")

_PERMISSIVE_SOURCES = (
    "CREATE TABLE users (user_id TEXT, signup_at TIMESTAMP, country TEXT, segment TEXT)",
    "CREATE TABLE orders (order_id TEXT, user_id TEXT, ordered_at TIMESTAMP, amount NUMERIC, items INTEGER, "
    "category TEXT, status TEXT)",
    "CREATE TABLE events (user_id TEXT, occurred_at TIMESTAMP, event_type TEXT, category TEXT, query TEXT, price NUMERIC)",
    "CREATE TABLE reviews (user_id TEXT, created_at TIMESTAMP, rating INTEGER, body TEXT)",
)

USERS = [("u1", "2024-01-01 09:00:00"), ("u2", "2024-03-01 10:00:00"), ("u3", "2024-05-01 10:00:00")]
ORDERS = [  # order_id, user_id, ordered_at, amount, items, status
    ("o1", "u1", "2024-06-01 10:00:00", 40.0, 2, "completed"),
    ("o2", "u1", "2024-06-20 10:00:00", 25.5, 1, "completed"),
    ("o3", "u1", "2024-05-02 10:00:00", 30.0, 1, "completed"),
    ("o4", "u2", "2024-06-15 10:00:00", 12.0, 1, "completed"),
    ("o5", "u2", "2024-07-10 10:00:00", 18.0, 1, "completed"),  # label window
    ("o6", "u3", "2024-09-01 10:00:00", 5.0, 1, "completed"),  # after the as-of date: legitimately present
]
EVENTS = [  # user_id, occurred_at, event_type
    ("u1", "2024-06-25 10:00:00", "view"),
    ("u2", "2024-06-29 10:00:00", "search"),
    ("u3", "2024-06-30 10:00:00", "click"),
]
REVIEWS = [("u1", "2024-06-10 09:00:00", 5), ("u2", "2024-06-12 09:00:00", 3)]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _tables(users: list[Any], orders: list[Any], events: list[Any], reviews: list[Any]) -> dict[str, pa.Table]:
    return {
        "users": pa.table(
            {
                "user_id": [u[0] for u in users],
                "signup_at": pa.array([_ts(u[1]) for u in users], TS),
            }
        ),
        "orders": pa.table(
            {
                "order_id": [o[0] for o in orders],
                "user_id": [o[1] for o in orders],
                "ordered_at": pa.array([_ts(o[2]) for o in orders], TS),
                "amount": pa.array([o[3] for o in orders], pa.float64()),
                "items": pa.array([o[4] for o in orders], pa.int64()),
                "category": ["books"] * len(orders),
                "status": [o[5] for o in orders],
            }
        ),
        "events": pa.table(
            {
                "user_id": [e[0] for e in events],
                "occurred_at": pa.array([_ts(e[1]) for e in events], TS),
                "event_type": [e[2] for e in events],
                "query": pa.array(["shoes" if e[2] == "search" else None for e in events], pa.string()),
            }
        ),
        "reviews": pa.table(
            {
                "user_id": [r[0] for r in reviews],
                "created_at": pa.array([_ts(r[1]) for r in reviews], TS),
                "rating": pa.array([r[2] for r in reviews], pa.int64()),
                "body": ["fine"] * len(reviews),
            }
        ),
    }


def _build(url: str, *, users: list[Any] = (), orders: list[Any] = (), events: list[Any] = (), reviews: list[Any] = ()) -> sa.Engine:
    """A constraint-free warehouse holding the clean rows plus the extra ones given."""
    engine = warehouse.get_engine(url)
    with engine.begin() as conn:
        for ddl in _PERMISSIVE_SOURCES:
            conn.exec_driver_sql(ddl)
        tables = _tables(USERS + list(users), ORDERS + list(orders), EVENTS + list(events), REVIEWS + list(reviews))
        for name, data in tables.items():
            warehouse.bulk_insert(conn, name, data)
    return engine


def _extract(url: str, tmp_path: Path, **extra: list[Any]) -> Path:
    engine = _build(url, **extra)
    try:
        behaviour.extract_snapshot(engine, AS_OF, tmp_path / "snap", H, with_labels=True)
    finally:
        engine.dispose()
    return tmp_path / "snap"


def _failures(snap: Path) -> dict[str, dict[str, Any]]:
    report = json.loads((snap / "validation.json").read_text())
    assert report["success"] is False
    return {f["check"]: f for f in report["summary"]["failures"]}


def _check(rule: str) -> str:
    return f"source contract {rule}: {SOURCE_RULES[rule]}"


def test_a_clean_warehouse_passes(warehouse_url: str, tmp_path: Path) -> None:
    snap = _extract(warehouse_url, tmp_path)
    result = validate_snapshot(snap)
    assert result.success and result.row_count == 3
    manifest = json.loads((snap / MANIFEST_FILE).read_text())
    # every contract rule, plus the count of rows that could not be read (none here)
    assert set(manifest["source_checks"]) == set(SOURCE_RULES) | {UNREADABLE}
    assert manifest["source_checks"][UNREADABLE]["rows"] == 0
    checks = {rule: entry for rule, entry in manifest["source_checks"].items() if rule != UNREADABLE}
    assert all(entry["violations"] == 0 and entry["examples"] == [] for entry in checks.values())
    report = json.loads((snap / "validation.json").read_text())
    source = report["gx"]["source"]["results"]
    assert len(source) == len(SOURCE_RULES) and all(r["success"] for r in source)
    assert "| source | source contract order_amount_negative" in (snap / "validation.md").read_text()


CASES: dict[str, tuple[dict[str, list[Any]], str]] = {
    # rule: (extra rows, the example the failure names)
    "order_amount_negative": (
        {"orders": [("bad1", "u1", "2024-06-05 10:00:00", -5.0, 1, "completed")]},
        "order bad1: amount -5",
    ),
    "order_items_below_one": ({"orders": [("bad1", "u2", "2024-06-05 10:00:00", 3.0, 0, "completed")]}, "order bad1: items 0"),
    "event_type_unknown": ({"events": [("u1", "2024-06-05 10:00:00", "purchase")]}, "type purchase"),
    "review_rating_out_of_range": ({"reviews": [("u2", "2024-06-05 10:00:00", 7)]}, "rating 7"),
    "order_user_unknown": ({"orders": [("bad1", "ghost", "2024-06-05 10:00:00", 3.0, 1, "completed")]}, "order bad1: user ghost"),
    "event_user_unknown": ({"events": [("ghost", "2024-06-05 10:00:00", "view")]}, "event of user ghost at 2024-06-05 10:00:00"),
    "review_user_unknown": ({"reviews": [("ghost", "2024-06-05 10:00:00", 4)]}, "review of user ghost at 2024-06-05 10:00:00"),
    "order_id_not_unique": ({"orders": [("o1", "u2", "2024-06-05 10:00:00", 3.0, 1, "cancelled")]}, "order o1: 2 rows"),
    "user_id_not_unique": ({"users": [("u2", "2024-03-02 10:00:00")]}, "user u2: 2 rows"),
    "timestamp_in_future": ({"orders": [("bad1", "u1", "2999-12-31 10:00:00", 3.0, 1, "completed")]}, "order bad1 at 2999-12-31 10:00:00"),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_broken_once_is_named_with_its_count(warehouse_url: str, tmp_path: Path, rule: str) -> None:
    extra, example = CASES[rule]
    snap = _extract(warehouse_url, tmp_path, **extra)
    with pytest.raises(ValidationFailed) as info:
        validate_snapshot(snap)
    message = str(info.value)
    failures = _failures(snap)
    failure = failures[_check(rule)]
    assert failure["batch"] == "source"
    assert failure["detail"] == "1 violating source row(s) visible to the snapshot"
    assert len(failure["examples"]) == 1 and example in failure["examples"][0]
    line = next(ln for ln in message.splitlines() if rule in ln)
    assert "1 violating source row(s)" in line and example in line
    # the other source rules hold
    assert [c for c in failures if c.startswith("source contract")] == [_check(rule)]
    manifest = json.loads((snap / MANIFEST_FILE).read_text())
    assert manifest["source_checks"][rule]["violations"] == 1
    if rule in ("order_amount_negative", "order_items_below_one", "event_type_unknown", "review_rating_out_of_range"):
        assert list(failures) == [_check(rule)]  # per-user aggregates alone would not notice


def test_negative_orders_inside_a_multi_order_customer_are_counted(warehouse_url: str, tmp_path: Path) -> None:
    """The probe's case: u1's lifetime spend stays positive, yet each negative order is refused."""
    extra = [("neg1", "u1", "2024-06-05 10:00:00", -5.0, 1, "completed"), ("neg2", "u1", "2024-06-06 10:00:00", -1.25, 1, "completed")]
    snap = _extract(warehouse_url, tmp_path, orders=extra)
    with pytest.raises(ValidationFailed, match=r"order_amount_negative.*2 violating source row\(s\)"):
        validate_snapshot(snap)
    failure = _failures(snap)[_check("order_amount_negative")]
    assert [e.split(":")[0] for e in failure["examples"]] == ["order neg1", "order neg2"]


@pytest.mark.parametrize("amount", [math.inf, 1e300, MAX_PLAUSIBLE_MONEY * 2, math.nan])
def test_non_finite_or_implausible_amounts_are_refused(warehouse_url: str, tmp_path: Path, amount: float) -> None:
    snap = _extract(warehouse_url, tmp_path, orders=[("big", "u1", "2024-06-05 10:00:00", amount, 1, "completed")])
    with pytest.raises(ValidationFailed) as info:
        validate_snapshot(snap)
    failures = _failures(snap)
    failure = failures[_check("order_amount_not_finite")]
    assert failure["detail"] == "1 violating source row(s) visible to the snapshot"
    assert failure["examples"][0].startswith("order big: amount ")
    assert "order_amount_not_finite" in str(info.value)
    if amount != amount and warehouse_url.startswith("sqlite"):
        # SQLite stores NaN as NULL, which SUM skips: the snapshot looks fine, only the source rule sees it
        assert list(failures) == [_check("order_amount_not_finite")]
        assert failure["examples"] == ["order big: amount NULL"]
    elif amount != amount:  # PostgreSQL NUMERIC 'NaN': the sums are NaN, i.e. null in the snapshot
        assert "monetary_all has no nulls" in failures
        assert failure["examples"] == ["order big: amount NaN"]
    else:  # the snapshot's money is refused too, whatever the source checks say
        assert "money is finite and plausible (monetary_all <= 1e+09)" in failures
        if amount > 1e10:  # the mean over u1's four orders too
            assert "money is finite and plausible (avg_basket <= 1e+09)" in failures


def test_a_large_but_plausible_amount_passes(warehouse_url: str, tmp_path: Path) -> None:
    snap = _extract(warehouse_url, tmp_path, orders=[("big", "u1", "2024-06-05 10:00:00", 250_000.0, 1, "completed")])
    assert validate_snapshot(snap).success


def test_rows_after_the_as_of_date_are_not_violations(warehouse_url: str, tmp_path: Path) -> None:
    """Rows dated after the as-of date (but not in the future) are normal: the snapshot never sees them."""
    late = [("late", "ghost", "2024-08-01 10:00:00", -3.0, 0, "completed")]  # broken, but not visible on 2024-06-30
    snap = _extract(warehouse_url, tmp_path, orders=late, events=[("u1", "2024-07-02 10:00:00", "bogus")])
    assert validate_snapshot(snap).success
