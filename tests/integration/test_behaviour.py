"""Point-in-time snapshots on SQLite and PostgreSQL: exact features, labels and text (both templates); no leakage."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from spendpred import behaviour, textify, warehouse
from spendpred.files import sha256_file
from spendpred.snapshot import (
    FEATURE_COLUMNS,
    MANIFEST_FILE,
    SNAPSHOT_FILE,
    VALIDATION_JSON,
    VALIDATION_MD,
    Manifest,
    snapshot_columns,
)
from spendpred.errors import ConfigError

AS_OF = date(2024, 6, 30)  # cutoff 2024-07-01 00:00
H = 30  # label window [2024-07-01, 2024-07-31)
TS = pa.timestamp("us")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _users(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "signup_at": pa.array([_ts(r[1]) for r in rows], TS),
            "country": pa.array([None] * len(rows), pa.string()),
            "segment": pa.array([None] * len(rows), pa.string()),
        }
    )


def _orders(rows: list[tuple[str, str, str, float, str | None, str]]) -> pa.Table:
    return pa.table(
        {
            "order_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "ordered_at": pa.array([_ts(r[2]) for r in rows], TS),
            "amount": pa.array([r[3] for r in rows], pa.float64()),
            "items": [1] * len(rows),
            "category": pa.array([r[4] for r in rows], pa.string()),
            "status": [r[5] for r in rows],
        }
    )


def _events(rows: list[tuple[str, str, str, str | None]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "occurred_at": pa.array([_ts(r[1]) for r in rows], TS),
            "event_type": [r[2] for r in rows],
            "category": pa.array([None] * len(rows), pa.string()),
            "query": pa.array([r[3] for r in rows], pa.string()),
            "price": pa.array([None] * len(rows), pa.float64()),
        }
    )


def _reviews(rows: list[tuple[str, str, int, str]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "created_at": pa.array([_ts(r[1]) for r in rows], TS),
            "rating": pa.array([r[2] for r in rows], pa.int32()),
            "body": [r[3] for r in rows],
        }
    )


def _insert(engine: sa.Engine, **tables: pa.Table) -> None:
    with engine.begin() as conn:
        for name, data in tables.items():
            warehouse.bulk_insert(conn, name, data)


# User ids chosen so that byte order (U2 < a0 < u1 < é3) differs from a locale collation,
# with an orphan "a0" (orders, no user) between them; "u4" signs up exactly at the cutoff.
USERS = [
    ("u1", "2024-01-01 09:00:00"),
    ("U2", "2024-03-01 10:00:00"),
    ("é3", "2024-06-30 23:00:00"),
    ("u4", "2024-07-01 00:00:00"),
]
ORDERS = [
    ("o1", "u1", "2024-06-01 10:00:00", 10.50, "books", "completed"),
    ("o2", "u1", "2024-06-29 12:00:00", 20.25, "toys", "completed"),
    ("o3", "u1", "2024-03-15 08:00:00", 5.00, "books", "cancelled"),
    ("o5", "u1", "2024-07-05 10:00:00", 100.00, "books", "completed"),  # label
    ("o6", "u1", "2024-07-31 00:00:00", 50.00, "books", "completed"),  # after D+H: nowhere
    ("o7", "u1", "2024-07-30 23:59:59", 25.00, "books", "completed"),  # label (last second)
    ("o8", "u1", "2024-06-30 23:59:59", 4.00, "games", "completed"),  # features (last second)
    ("o9", "u1", "2024-02-10 10:00:00", 60.00, "books", "completed"),  # 365d, not 90d
    ("o10", "u1", "2024-07-02 10:00:00", 999.00, "books", "cancelled"),  # not spend
    ("o11", "U2", "2024-05-01 10:00:00", 7.00, None, "cancelled"),
    ("o12", "é3", "2024-07-10 10:00:00", 35.00, "garden", "completed"),  # label
    ("o13", "a0", "2024-06-01 10:00:00", 1.00, "books", "completed"),  # orphan
    ("o14", "u4", "2024-07-01 09:00:00", 8.00, "books", "completed"),  # user after cutoff
]
EVENTS = [
    ("u1", "2024-06-25 10:00:00", "view", None),
    ("u1", "2024-06-25 11:00:00", "view", None),
    ("u1", "2024-05-20 09:00:00", "click", None),
    ("u1", "2024-06-28 13:00:00", "search", "running shoes"),
    ("u1", "2024-06-20 08:00:00", "search", "mail me at bob@example.com"),
    ("u1", "2024-04-01 12:00:00", "add_to_cart", None),  # before the 90-day window
    ("u1", "2024-07-01 00:00:00", "wishlist", None),  # at the cutoff: excluded
    ("u1", "2024-07-15 10:00:00", "search", "future query"),  # excluded
    ("zz", "2024-06-29 10:00:00", "view", None),  # orphan
]
REVIEWS = [
    ("u1", "2024-06-10 09:00:00", 5, "Great shoes! Call me on +44 20 7946 0958 or mail john.doe@example.com"),
    ("u1", "2024-05-05 09:00:00", 4, "Decent."),
    ("u1", "2024-07-02 09:00:00", 1, "future review"),  # excluded
    ("U2", "2024-04-01 09:00:00", 3, "ok, ask @shopfan"),
]

ZERO = dict.fromkeys(FEATURE_COLUMNS, 0.0)
EXPECTED: dict[str, dict[str, Any]] = {
    "U2": ZERO
    | {
        "recency_days": 121.0,  # no completed order: tenure
        "tenure_days": 121.0,
        "review_count": 1.0,
        "mean_rating": 3.0,
        "days_since_last_event": 121.0,  # no event: tenure
        "past_spend": 0.0,
        "label": 0.0,
        "text": (
            "member for 121 days. no completed orders. no browsing events in the last 90 days. "
            'orders: 60 days ago 7.00 (cancelled). reviews: 90 days ago 3/5 "ok, ask [handle]".'
        ),
        "text_v2": 'no completed orders. orders: 7.00 (cancelled). reviews: 3/5 "ok, ask [handle]".',
    },
    "u1": ZERO
    | {
        "recency_days": 0.0,
        "tenure_days": 181.0,
        "frequency_30d": 3.0,
        "frequency_90d": 3.0,
        "frequency_365d": 4.0,
        "frequency_all": 4.0,
        "monetary_30d": 34.75,
        "monetary_90d": 34.75,
        "monetary_365d": 94.75,
        "monetary_all": 94.75,
        "avg_basket": 23.6875,
        "category_diversity": 3.0,
        "views_30d": 2.0,
        "views_90d": 2.0,
        "clicks_90d": 1.0,
        "searches_30d": 2.0,
        "searches_90d": 2.0,
        "review_count": 2.0,
        "mean_rating": 4.5,
        "days_since_last_event": 2.0,
        "purchase_days": 4.0,  # 02-10, 06-01, 06-29, 06-30 (the cancelled 03-15 and the label orders not)
        "first_purchase_days": 141.0,  # 2024-02-10 -> 2024-06-30
        "repeat_value": 11.58,  # (94.75 - 60.00 on the first day) / 3 repeat days, rounded to cents
        "past_spend": 34.75,
        "label": 125.0,
        "text": (
            "member for 181 days. 4 completed orders, 94.75 spent. last 30 days: 2 views, 2 searches. "
            "last 90 days: 2 views, 1 click, 2 searches. last active 2 days ago. "
            'orders: today 4.00 games; 1 day ago 20.25 toys. searches: 2 days ago "running shoes"; '
            '10 days ago "mail me at [email]".'
        ),
        # v2 spends no tokens on tenure, windows and recency: more items fit the 128-token budget
        # (only the oldest, the 60.00 books order of 2024-02-10, is dropped)
        "text_v2": (
            "4 completed orders, 94.75 spent. orders: 4.00 games; 1 day earlier 20.25 toys; 28 days earlier "
            "10.50 books; 78 days earlier 5.00 books (cancelled). "
            'searches: "running shoes"; 8 days earlier "mail me at [email]". reviews: 5/5 "Great shoes! '
            'Call me on [number] or mail [email]"; 36 days earlier 4/5 "Decent.".'
        ),
    },
    "é3": ZERO
    | {
        "label": 35.0,
        "text": "joined today. no completed orders. no browsing events in the last 90 days.",
        "text_v2": "no completed orders.",
    },
}
TEXT_COLUMN = {"v1": "text", "v2": "text_v2"}  # the expected text of each template


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    eng = warehouse.get_engine(warehouse_url)
    warehouse.init_db(eng)
    _insert(eng, users=_users(USERS), orders=_orders(ORDERS), events=_events(EVENTS), reviews=_reviews(REVIEWS))
    return eng


def _rows(snapshot_dir: Path) -> dict[str, dict[str, Any]]:
    table = pq.read_table(snapshot_dir / SNAPSHOT_FILE)
    return {row["user_id"]: row for row in table.to_pylist()}


@pytest.mark.parametrize("template", textify.TEMPLATE_VERSIONS)
def test_exact_features_labels_and_text(engine: sa.Engine, tmp_path: Path, template: str) -> None:
    manifest = behaviour.extract_snapshot(
        engine, AS_OF, tmp_path / "snap", H, with_labels=True, chunk_rows=1, template_version=template
    )
    table = pq.read_table(tmp_path / "snap" / SNAPSHOT_FILE)
    assert table.schema == behaviour.snapshot_schema(True)
    assert table.column("user_id").to_pylist() == ["U2", "u1", "é3"]  # byte order, u4 excluded
    rows = _rows(tmp_path / "snap")
    for user, expected in EXPECTED.items():
        got = rows[user]
        assert got["text"] == expected[TEXT_COLUMN[template]], user
        for column, value in expected.items():
            if not column.startswith("text"):
                assert got[column] == pytest.approx(value, abs=1e-9), (user, column)
    # a chunk per user: three row groups, appended one at a time
    assert pq.ParquetFile(tmp_path / "snap" / SNAPSHOT_FILE).metadata.num_row_groups == 3

    on_disk = json.loads((tmp_path / "snap" / MANIFEST_FILE).read_text())
    assert on_disk == manifest.to_dict()
    assert on_disk["as_of"] == "2024-06-30" and on_disk["horizon_days"] == H and on_disk["with_labels"] is True
    assert on_disk["row_count"] == 3
    assert on_disk["text_template_version"] == manifest.text_template_version == template
    assert on_disk["feature_columns"] == list(FEATURE_COLUMNS)
    # rows before the cutoff only: 3 users (u4 signs up at the cutoff), orders o1 o2 o3 o8 o9 o11 o13
    assert on_disk["source_row_counts"] == {"users": 3, "orders": 7, "events": 7, "reviews": 3}
    assert on_disk["max_source_timestamp"] == "2024-06-30T23:59:59"
    assert on_disk["checksum"] == sha256_file(tmp_path / "snap" / SNAPSHOT_FILE)


def test_without_labels_has_no_label_column(engine: sa.Engine, tmp_path: Path) -> None:
    manifest = behaviour.extract_snapshot(engine, AS_OF, tmp_path / "snap", H, with_labels=False)
    table = pq.read_table(tmp_path / "snap" / SNAPSHOT_FILE)
    assert "label" not in table.column_names
    assert table.column_names == snapshot_columns(False)
    assert manifest.with_labels is False
    assert _rows(tmp_path / "snap")["u1"]["past_spend"] == pytest.approx(34.75)


@pytest.mark.parametrize("template", textify.TEMPLATE_VERSIONS)
def test_no_leakage_rows_after_as_of_change_only_labels(engine: sa.Engine, tmp_path: Path, template: str) -> None:
    behaviour.extract_snapshot(engine, AS_OF, tmp_path / "a", H, True, template_version=template)
    before = _rows(tmp_path / "a")
    # everything below is dated after D (>= the cutoff): orders inside and beyond the label
    # window, events, reviews and a new user
    _insert(
        engine,
        users=_users([("u5", "2024-07-02 08:00:00")]),
        orders=_orders(
            [
                ("p1", "u1", "2024-07-01 00:00:00", 77.00, "jewels", "completed"),  # label window, first second
                ("p2", "U2", "2024-09-01 10:00:00", 500.00, "jewels", "completed"),  # beyond D+H
                ("p3", "é3", "2024-07-03 10:00:00", 3.00, "books", "refunded"),  # not completed
                ("p4", "u5", "2024-07-03 10:00:00", 9.00, "books", "completed"),
            ]
        ),
        events=_events([("U2", "2024-07-01 00:00:00", "search", "after cutoff"), ("é3", "2024-08-01 00:00:00", "view", None)]),
        reviews=_reviews([("é3", "2024-07-01 00:00:01", 1, "after cutoff")]),
    )
    behaviour.extract_snapshot(engine, AS_OF, tmp_path / "b", H, True, template_version=template)
    after = _rows(tmp_path / "b")
    assert set(after) == set(before) == {"U2", "u1", "é3"}
    for user in before:
        for column in ("text", *FEATURE_COLUMNS, "past_spend"):
            assert after[user][column] == before[user][column], (user, column)
    assert after["u1"]["label"] == pytest.approx(before["u1"]["label"] + 77.0)
    assert after["U2"]["label"] == before["U2"]["label"]
    assert after["é3"]["label"] == before["é3"]["label"]

    # sensitivity check: a row on D itself does change the snapshot
    _insert(engine, orders=_orders([("q1", "U2", "2024-06-30 18:00:00", 12.00, "books", "completed")]))
    behaviour.extract_snapshot(engine, AS_OF, tmp_path / "c", H, True, template_version=template)
    moved = _rows(tmp_path / "c")["U2"]
    assert moved["frequency_all"] == 1.0 and moved["recency_days"] == 0.0
    assert {"v1": "orders: today 12.00 books;", "v2": "1 completed order, 12.00 spent. orders: 12.00 books;"}[template] in moved["text"]


def test_the_template_setting_chooses_the_text_and_the_manifest_records_it(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPENDPRED_TEXT_TEMPLATE", raising=False)
    default = behaviour.extract_snapshot(engine, AS_OF, tmp_path / "default", H, True)
    assert default.text_template_version == textify.DEFAULT_TEMPLATE == "v2"
    assert _rows(tmp_path / "default")["u1"]["text"] == EXPECTED["u1"]["text_v2"]
    monkeypatch.setenv("SPENDPRED_TEXT_TEMPLATE", "v1")
    chosen = behaviour.extract_snapshot(engine, AS_OF, tmp_path / "v1", H, True)
    assert chosen.text_template_version == Manifest.read(tmp_path / "v1").text_template_version == "v1"
    assert _rows(tmp_path / "v1")["u1"]["text"] == EXPECTED["u1"]["text"]
    # an explicit version wins over the setting
    assert behaviour.extract_snapshot(engine, AS_OF, tmp_path / "v2", H, True, template_version="v2").text_template_version == "v2"


def test_v2_texts_stay_the_same_night_after_night_without_new_rows(sqlite_url: str, tmp_path: Path) -> None:
    """Nights D, D+1 and D+45 of a warehouse with no row after D: the v2 texts are identical, the v1 texts all move."""
    engine = warehouse.get_engine(sqlite_url)
    warehouse.init_db(engine)
    cutoff = "2024-07-01 00:00:00"
    _insert(
        engine,
        users=_users([u for u in USERS if u[1] < cutoff]),
        orders=_orders([o for o in ORDERS if o[2] < cutoff and o[1] != "a0"]),
        events=_events([e for e in EVENTS if e[1] < cutoff and e[0] != "zz"]),
        reviews=_reviews([r for r in REVIEWS if r[1] < cutoff]),
    )
    texts: dict[tuple[str, int], dict[str, str]] = {}
    for template in textify.TEMPLATE_VERSIONS:
        for k in (0, 1, 45):
            out = tmp_path / f"{template}-{k}"
            behaviour.extract_snapshot(engine, AS_OF + timedelta(days=k), out, H, False, template_version=template)
            texts[template, k] = {u: r["text"] for u, r in _rows(out).items()}
    assert set(texts["v2", 0]) == {"U2", "u1", "é3"}
    assert texts["v2", 0] == texts["v2", 1] == texts["v2", 45]
    assert texts["v2", 0]["u1"] == EXPECTED["u1"]["text_v2"]
    for user in texts["v1", 0]:
        assert len({texts["v1", k][user] for k in (0, 1, 45)}) == 3, user


def test_empty_warehouse_gives_an_empty_snapshot(engine: sa.Engine, tmp_path: Path) -> None:
    manifest = behaviour.extract_snapshot(engine, date(2023, 1, 1), tmp_path / "snap", H, True)
    table = pq.read_table(tmp_path / "snap" / SNAPSHOT_FILE)
    assert table.num_rows == 0 and table.schema == behaviour.snapshot_schema(True)
    assert manifest.row_count == 0
    assert manifest.max_source_timestamp is None
    assert manifest.source_row_counts == {"users": 0, "orders": 0, "events": 0, "reviews": 0}


def test_rerun_replaces_files_and_drops_stale_reports(engine: sa.Engine, tmp_path: Path) -> None:
    out = tmp_path / "snap"
    out.mkdir()
    (out / VALIDATION_JSON).write_text("{}")
    (out / VALIDATION_MD).write_text("old")
    first = behaviour.extract_snapshot(engine, AS_OF, out, H, True)
    second = behaviour.extract_snapshot(engine, AS_OF, out, H, True)
    assert first.checksum == second.checksum
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, SNAPSHOT_FILE]


def test_bad_arguments_are_refused(sqlite_url: str, tmp_path: Path) -> None:
    engine = warehouse.get_engine(sqlite_url)
    warehouse.init_db(engine)
    with pytest.raises(ConfigError, match="horizon_days"):
        behaviour.extract_snapshot(engine, AS_OF, tmp_path, 0, True)
    with pytest.raises(ConfigError, match="template 'v9' is not available"):
        behaviour.extract_snapshot(engine, AS_OF, tmp_path, H, True, template_version="v9")
    assert not (tmp_path / SNAPSHOT_FILE).exists()


@pytest.mark.postgres
def test_byte_order_merge_with_a_locale_collated_warehouse(pg_url: str, tmp_path: Path) -> None:
    """A warehouse whose user_id columns sort by a locale (ICU) still merges features and items."""
    eng = warehouse.get_engine(pg_url)
    warehouse.init_db(eng)
    with eng.begin() as conn:
        if not conn.exec_driver_sql("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'").first():
            pytest.skip("this PostgreSQL has no ICU collation")
        for table in ("users", "orders", "events", "reviews"):
            conn.exec_driver_sql(f'ALTER TABLE {table} ALTER COLUMN user_id TYPE TEXT COLLATE "und-x-icu"')
        locale_order = conn.exec_driver_sql(
            "SELECT x FROM (VALUES ('u1'), ('U2'), ('é3')) v(x) ORDER BY x COLLATE \"und-x-icu\""
        ).scalars().all()
    assert locale_order != ["U2", "u1", "é3"]  # the locale order really differs from byte order
    _insert(eng, users=_users(USERS), orders=_orders(ORDERS), events=_events(EVENTS), reviews=_reviews(REVIEWS))
    behaviour.extract_snapshot(eng, AS_OF, tmp_path / "snap", H, with_labels=True, chunk_rows=1, template_version="v2")
    rows = _rows(tmp_path / "snap")
    assert list(rows) == ["U2", "u1", "é3"]
    assert {u: r["text"] for u, r in rows.items()} == {u: e["text_v2"] for u, e in EXPECTED.items()}


def test_failed_extraction_keeps_the_previous_snapshot(engine: sa.Engine, tmp_path: Path) -> None:
    out = tmp_path / "snap"
    good = behaviour.extract_snapshot(engine, AS_OF, out, H, True, chunk_rows=1)
    calls = {"n": 0}

    def failing_counter(text: str) -> int:  # injected fault on the second user
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("injected failure")
        return textify.estimate_tokens(text)

    with pytest.raises(RuntimeError, match="injected failure"):
        behaviour.extract_snapshot(engine, AS_OF, out, H, True, chunk_rows=1, count_tokens=failing_counter)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, SNAPSHOT_FILE]
    assert sha256_file(out / SNAPSHOT_FILE) == good.checksum
    assert Manifest.read(out).checksum == good.checksum
