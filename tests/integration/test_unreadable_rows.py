"""One bad row costs its user, not the night (``spendpred.behaviour``): source text that is not UTF-8.

SQLite stores whatever bytes it is given in a TEXT column, and its driver fails a whole query on
one value that does not decode, quoting the value. The extract reads source text raw and decodes
it itself: what cannot be read is left out as if it were NULL (the users are rendered exactly as
from a warehouse holding NULL there), counted and named by its key in one warning and in the
manifest, within ``SPENDPRED_MAX_UNREADABLE_SHARE``; above it the extract fails with one line and
writes no snapshot. No source text (here a review quoting an e-mail address and a phone number)
reaches a log or a message. PostgreSQL cannot hold invalid UTF-8 in a text column of a UTF8
database; a warehouse that keeps raw bytes exposes them as ``bytea``, tested through a view.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from spendpred import behaviour, warehouse
from spendpred.errors import DataError
from spendpred.snapshot import MANIFEST_FILE, SNAPSHOT_FILE

AS_OF = date(2024, 6, 30)
H = 30
EMAIL, PHONE = "jane.doe@example.com", "+1 555 0100"
BAD_BODY = f"Call {EMAIL} or {PHONE} about it ".encode() + b"\xff\xfe\x80 broken"
"""A review body that is not UTF-8 and quotes personal data."""
BAD_QUERY = b"cheap \xc3\x28 headphones"
BAD_CATEGORY = b"bo\xffoks"

USERS = [(f"u{i:02d}", "2024-01-01 09:00:00") for i in range(1, 21)]
ORDERS = [  # order_id, user_id, ordered_at, amount, items, category, status
    ("o1", "u01", "2024-06-01 10:00:00", 40.0, 2, "books", "completed"),
    ("o2", "u02", "2024-06-02 10:00:00", 12.5, 1, "toys", "completed"),
    ("o3", "u03", "2024-06-03 10:00:00", 30.0, 1, "games", "completed"),
    ("o4", "u03", "2024-07-05 10:00:00", 9.0, 1, "games", "completed"),
]
EVENTS = [  # user_id, occurred_at, event_type, query
    ("u02", "2024-06-20 10:00:00", "search", "running shoes"),
    ("u04", "2024-06-21 10:00:00", "view", None),
]
REVIEWS = [("u01", "2024-06-10 09:00:00", 5, "Great books, fast delivery")]  # user_id, created_at, rating, body


def _sqlite(path: Path, *, reviews: list = (), orders: list = (), events: list = (), users: list = ()) -> str:
    """A contract warehouse (``db init``'s tables) with the clean rows plus ``extra`` rows; text given as bytes is
    stored as TEXT with those bytes (``CAST(? AS TEXT)``), as a careless loader would."""
    url = f"sqlite:///{path}"
    engine = warehouse.get_engine(url)
    warehouse.init_db(engine)
    engine.dispose()
    conn = sqlite3.connect(path)
    try:
        text = "CAST(? AS TEXT)"
        conn.executemany(f"INSERT INTO users (user_id, signup_at) VALUES ({text}, ?)", USERS + list(users))
        conn.executemany(
            f"INSERT INTO orders (order_id, user_id, ordered_at, amount, items, category, status) "
            f"VALUES (?, ?, ?, ?, ?, {text}, ?)", ORDERS + list(orders),
        )  # fmt: skip
        conn.executemany(
            f"INSERT INTO events (user_id, occurred_at, event_type, query) VALUES (?, ?, ?, {text})", EVENTS + list(events)
        )
        conn.executemany(
            f"INSERT INTO reviews (user_id, created_at, rating, body) VALUES (?, ?, ?, {text})", REVIEWS + list(reviews)
        )
        conn.commit()
    finally:
        conn.close()
    return url


def _extract(url: str, out: Path, share: float = 0.5) -> tuple[dict[str, str], dict]:
    engine = warehouse.get_engine(url)
    try:
        behaviour.extract_snapshot(engine, AS_OF, out, H, with_labels=True, max_unreadable_share=share)
    finally:
        engine.dispose()
    table = pq.read_table(out / SNAPSHOT_FILE)
    texts = dict(zip(table.column("user_id").to_pylist(), table.column("text").to_pylist()))
    return texts, json.loads((out / MANIFEST_FILE).read_text())


def _assert_no_source_text(text: str) -> None:
    for secret in (EMAIL, PHONE, "broken", "headphones", "Call "):
        assert secret not in text, secret


def test_unreadable_text_costs_only_that_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = dict(
        reviews=[("u01", "2024-06-11 09:00:00", 2, BAD_BODY)],
        events=[("u02", "2024-06-22 10:00:00", "search", BAD_QUERY)],
        orders=[("o5", "u05", "2024-06-04 10:00:00", 20.0, 1, BAD_CATEGORY, "completed")],
    )
    nulls = dict(  # the same rows with NULL where the bytes cannot be read
        reviews=[("u01", "2024-06-11 09:00:00", 2, None)],
        events=[("u02", "2024-06-22 10:00:00", "search", None)],
        orders=[("o5", "u05", "2024-06-04 10:00:00", 20.0, 1, None, "completed")],
    )
    with caplog.at_level(logging.DEBUG):
        texts, manifest = _extract(_sqlite(tmp_path / "bad.db", **bad), tmp_path / "bad")
    expected, _ = _extract(_sqlite(tmp_path / "null.db", **nulls), tmp_path / "null")

    assert texts == expected and len(texts) == len(USERS)  # every user scored, from what can be read
    assert "Great books" in texts["u01"] or "great" in texts["u01"].lower()
    entry = manifest["source_checks"][behaviour.UNREADABLE]
    assert (entry["rows"], entry["users"], entry["share"], entry["max_share"]) == (3, 3, 3 / len(USERS), 0.5)
    assert sorted(entry["examples"]) == [
        "order of user u05 at 2024-06-04 10:00:00",
        "review of user u01 at 2024-06-11 09:00:00",
        "search of user u02 at 2024-06-22 10:00:00",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and "review of user u01 at 2024-06-11 09:00:00" in warnings[0]
    _assert_no_source_text(caplog.text)
    _assert_no_source_text(json.dumps(manifest))


def test_a_clean_warehouse_records_no_unreadable_rows(tmp_path: Path) -> None:
    _, manifest = _extract(_sqlite(tmp_path / "w.db"), tmp_path / "snap")
    assert manifest["source_checks"][behaviour.UNREADABLE]["rows"] == 0


def test_above_the_share_the_extract_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = _sqlite(tmp_path / "bad.db", reviews=[("u01", "2024-06-11 09:00:00", 2, BAD_BODY)])
    out = tmp_path / "snap"
    with caplog.at_level(logging.DEBUG), pytest.raises(DataError) as raised:
        _extract(url, out, share=0.01)  # 1 of 20 users is 5%
    message = str(raised.value)
    assert "\n" not in message
    assert "review of user u01 at 2024-06-11 09:00:00" in message and "SPENDPRED_MAX_UNREADABLE_SHARE=0.01" in message
    _assert_no_source_text(message)
    _assert_no_source_text(caplog.text)
    assert not (out / SNAPSHOT_FILE).exists() and not (out / MANIFEST_FILE).exists()
    assert [p.name for p in out.iterdir()] == []


def test_an_id_that_is_not_utf8_fails_in_one_line_without_the_value(tmp_path: Path) -> None:
    """A key cannot be left out (its user has no name): one line naming the column, never the bytes."""
    bad_id = f"{EMAIL}-".encode() + b"\xff"
    url = _sqlite(tmp_path / "bad.db", users=[(bad_id, "2024-01-01 09:00:00")])
    with pytest.raises(DataError, match="column 'user_id' of the source relations is not valid UTF-8") as raised:
        _extract(url, tmp_path / "snap")
    _assert_no_source_text(str(raised.value))


@pytest.mark.postgres
def test_postgresql_bytea_bodies_through_a_view(pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A warehouse keeping review bodies as raw bytes (``bytea``) behind the ``reviews`` view: valid UTF-8
    bodies read as text, the invalid one left out, as on SQLite."""
    engine = warehouse.get_engine(pg_url)
    warehouse.init_db(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id, signup_at) VALUES (:u, :t)"), [{"u": u, "t": t} for u, t in USERS])
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:i, :u, :t, :a, :n, :c, :s)"),
            [dict(zip("iutanc", o[:6]), s=o[6]) for o in ORDERS],
        )
        conn.exec_driver_sql("DROP TABLE reviews")
        conn.exec_driver_sql("CREATE TABLE raw_reviews (user_id TEXT, created_at TIMESTAMP, rating INTEGER, raw BYTEA)")
        conn.exec_driver_sql("CREATE VIEW reviews AS SELECT user_id, created_at, rating, raw AS body FROM raw_reviews")
        conn.execute(
            sa.text("INSERT INTO raw_reviews VALUES (:u, :t, :r, :b)"),
            [{"u": "u01", "t": "2024-06-10 09:00:00", "r": 5, "b": REVIEWS[0][3].encode()},
             {"u": "u01", "t": "2024-06-11 09:00:00", "r": 2, "b": BAD_BODY}],
        )  # fmt: skip
    engine.dispose()
    with caplog.at_level(logging.DEBUG):
        texts, manifest = _extract(pg_url, tmp_path / "pg")
    expected, _ = _extract(_sqlite(tmp_path / "null.db", reviews=[("u01", "2024-06-11 09:00:00", 2, None)]), tmp_path / "sq")

    assert texts["u01"] == expected["u01"]
    entry = manifest["source_checks"][behaviour.UNREADABLE]
    assert (entry["rows"], entry["examples"]) == (1, ["review of user u01 at 2024-06-11 09:00:00"])
    _assert_no_source_text(caplog.text)
