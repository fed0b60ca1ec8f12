"""Downstream views on SQLite and PostgreSQL, and the read-only role on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import publish, warehouse
from spendpred.errors import ConfigError

D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)
STAMP = dt.datetime(2024, 3, 4, 1, 2, 3)

# (as_of, user_id, predicted_spend, tier): three runs, hand-made to cover each case
ROWS = [
    (D1, "u1", 100.0, "high"),
    (D1, "u2", 50.0, "medium"),
    (D1, "u3", 10.0, "low"),
    (D1, "u4", 5.0, "low"),  # only in the first run
    (D2, "u1", 90.0, "high"),
    (D2, "u2", 20.0, "low"),
    (D2, "u3", 30.0, "medium"),
    (D2, "u5", 200.0, "high"),
    (D2, "u7", 0.0, "low"),
    (D2, "u8", 10.0, "high"),
    (D2, "u9", 1.0, "low"),  # absent from the latest run
    (D3, "u1", 40.0, "high"),  # same tier, spend -55.6%: churn warning
    (D3, "u2", 10.0, "low"),  # same tier, spend exactly -50%: no warning
    (D3, "u3", 80.0, "high"),  # up
    (D3, "u5", 100.0, "medium"),  # down: churn warning
    (D3, "u6", 0.5, "low"),  # new in the latest run
    (D3, "u7", 5.0, "low"),  # previous spend 0: pct is NULL
    (D3, "u8", 8.0, "low"),  # dropped two tiers, spend -20%: churn warning
]

EXPECTED_CHANGES = {
    # user: previous_tier, current_tier, previous_spend, current_spend, change, pct, movement, churn
    "u1": ("high", "high", 90.0, 40.0, -50.0, -55.5556, "same", True),
    "u2": ("low", "low", 20.0, 10.0, -10.0, -50.0, "same", False),
    "u3": ("medium", "high", 30.0, 80.0, 50.0, 166.6667, "up", False),
    "u5": ("high", "medium", 200.0, 100.0, -100.0, -50.0, "down", True),
    "u7": ("low", "low", 0.0, 5.0, 5.0, None, "same", False),
    "u8": ("high", "low", 10.0, 8.0, -2.0, -20.0, "down", True),
}


def _load(engine: sa.Engine, rows: list[tuple[dt.date, str, float, str]]) -> None:
    table = pa.table(
        {
            "as_of": pa.array([r[0] for r in rows], pa.date32()),
            "user_id": [r[1] for r in rows],
            "predicted_spend": [r[2] for r in rows],
            "tier": [r[3] for r in rows],
            "model_name": ["m"] * len(rows),
            "model_version": [str(r[0].day) for r in rows],
            "scored_at": pa.array([STAMP] * len(rows), pa.timestamp("s")),
        }
    )
    with engine.begin() as conn:
        warehouse.bulk_insert(conn, "user_spend_scores", table)


def _query(engine: sa.Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql))]


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    engine = warehouse.get_engine(warehouse_url)
    warehouse.init_db(engine)
    return engine


def test_current_view_holds_each_users_latest_row(engine: sa.Engine) -> None:
    _load(engine, ROWS)
    rows = _query(engine, "SELECT * FROM user_spend_tier_current ORDER BY user_id")
    assert list(rows[0]) == ["user_id", "as_of", "predicted_spend", "tier", "model_name", "model_version", "scored_at"]
    got = {r["user_id"]: (_day(r["as_of"]), r["predicted_spend"], r["tier"], r["model_version"]) for r in rows}
    latest: dict[str, tuple[dt.date, float, str, str]] = {}
    for as_of, user, spend, tier in sorted(ROWS):
        latest[user] = (as_of, spend, tier, str(as_of.day))
    assert got == latest
    assert got["u4"] == (D1, 5.0, "low", "1")  # not scored since the first run: kept, with its date
    assert got["u9"][0] == D2


def test_changes_view_compares_the_two_latest_runs(engine: sa.Engine) -> None:
    _load(engine, ROWS)
    rows = _query(engine, "SELECT * FROM user_spend_tier_changes ORDER BY user_id")
    assert list(rows[0]) == [
        "user_id",
        "previous_as_of",
        "current_as_of",
        "previous_tier",
        "current_tier",
        "previous_spend",
        "current_spend",
        "spend_change",
        "spend_change_pct",
        "movement",
        "churn_warning",
    ]
    assert [r["user_id"] for r in rows] == sorted(EXPECTED_CHANGES)  # u4, u6, u9 are not in both runs
    for row in rows:
        prev_tier, cur_tier, prev_spend, cur_spend, change, pct, movement, churn = EXPECTED_CHANGES[row["user_id"]]
        assert (_day(row["previous_as_of"]), _day(row["current_as_of"])) == (D2, D3)
        assert (row["previous_tier"], row["current_tier"], row["movement"]) == (prev_tier, cur_tier, movement)
        assert (row["previous_spend"], row["current_spend"]) == (prev_spend, cur_spend)
        assert row["spend_change"] == pytest.approx(change)
        if pct is None:
            assert row["spend_change_pct"] is None
        else:
            assert row["spend_change_pct"] == pytest.approx(pct, abs=1e-4)
        assert bool(row["churn_warning"]) is churn, row["user_id"]
    warned = _query(engine, "SELECT user_id FROM user_spend_tier_changes WHERE churn_warning ORDER BY user_id")
    assert [r["user_id"] for r in warned] == ["u1", "u5", "u8"]


def test_changes_view_is_empty_with_a_single_run_and_follows_new_runs(engine: sa.Engine) -> None:
    assert _query(engine, "SELECT * FROM user_spend_tier_changes") == []
    _load(engine, [r for r in ROWS if r[0] == D1])
    assert _query(engine, "SELECT * FROM user_spend_tier_changes") == []
    assert len(_query(engine, "SELECT * FROM user_spend_tier_current")) == 4
    _load(engine, [r for r in ROWS if r[0] == D2])
    pairs = _query(engine, "SELECT user_id, movement FROM user_spend_tier_changes ORDER BY user_id")
    assert pairs == [
        {"user_id": "u1", "movement": "same"},
        {"user_id": "u2", "movement": "down"},
        {"user_id": "u3", "movement": "up"},
    ]


def test_views_survive_init_db_again(engine: sa.Engine) -> None:
    _load(engine, ROWS)
    before = _query(engine, "SELECT * FROM user_spend_tier_changes ORDER BY user_id")
    warehouse.init_db(engine)
    assert _query(engine, "SELECT * FROM user_spend_tier_changes ORDER BY user_id") == before
    assert len(_query(engine, "SELECT * FROM user_spend_tier_current")) == 9


# --------------------------------------------------------------------------- read-only role (PostgreSQL)

WRITES = [
    "INSERT INTO spendpred.user_spend_scores VALUES ('2024-03-05', 'x', 1, 'low', 'm', '1', now())",
    "UPDATE spendpred.user_spend_scores SET tier = 'high'",
    "DELETE FROM spendpred.user_spend_scores",
    "INSERT INTO spendpred.tier_thresholds VALUES ('2024-03-05', 'low', 0, 1, '1')",
    "DELETE FROM spendpred.tier_thresholds",
    "TRUNCATE spendpred.user_spend_scores",
    "CREATE TABLE spendpred.intruder (x int)",
]
VIEW_WRITES = [
    "INSERT INTO spendpred.user_spend_tier_current (user_id) VALUES ('x')",
    "UPDATE spendpred.user_spend_tier_current SET tier = 'high'",
    "DELETE FROM spendpred.user_spend_tier_current",
    "DELETE FROM spendpred.user_spend_tier_changes",
    "DELETE FROM spendpred.user_spend_tier_thresholds",
]


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = warehouse.get_engine(pg_url)
    warehouse.init_db(engine)
    _load(engine, ROWS)
    yield engine
    engine.dispose()


@pytest.fixture
def reader(pg_engine: sa.Engine) -> Iterator[str]:
    """A NOLOGIN role for this test, dropped again at the end (roles are cluster-wide)."""
    role = f"spendpred_test_reader_{uuid.uuid4().hex[:8]}"
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')
    yield role
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE "{role}"')


def _as_role(engine: sa.Engine, role: str, sql: str) -> list[Any]:
    """Run ``sql`` as ``role`` (SET LOCAL ROLE) in a transaction that is rolled back."""
    with engine.connect() as conn:
        with conn.begin() as tx:
            conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
            try:
                result = conn.exec_driver_sql(sql)
                return list(result) if result.returns_rows else []
            finally:
                tx.rollback()


def _privileges(engine: sa.Engine, role: str, relation: str) -> dict[str, bool]:
    checks = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with engine.connect() as conn:
        return {
            p: bool(conn.execute(sa.text("SELECT has_table_privilege(:r, :t, :p)"), {"r": role, "t": relation, "p": p}).scalar_one())
            for p in checks
        }


@pytest.mark.postgres
def test_readonly_role_reads_the_views_and_nothing_else(pg_engine: sa.Engine, reader: str) -> None:
    # a stale grant on a base table must disappear when the script runs
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA spendpred TO "{reader}"')
        conn.exec_driver_sql(f'GRANT SELECT, INSERT ON spendpred.user_spend_scores TO "{reader}"')
    publish.grant_readonly(pg_engine, reader)
    publish.grant_readonly(pg_engine, reader)  # re-running is harmless

    assert len(_as_role(pg_engine, reader, "SELECT * FROM spendpred.user_spend_tier_current")) == 9
    assert len(_as_role(pg_engine, reader, "SELECT * FROM spendpred.user_spend_tier_changes")) == 6

    for relation in [f"spendpred.{view}" for view in publish.readonly_views()]:
        assert _privileges(pg_engine, reader, relation) == {
            "SELECT": True, "INSERT": False, "UPDATE": False, "DELETE": False,
            "TRUNCATE": False, "REFERENCES": False, "TRIGGER": False,
        }  # fmt: skip
    for relation in ("spendpred.user_spend_scores", "spendpred.tier_thresholds", "spendpred.partition_metrics", "spendpred.drift_metrics"):
        assert not any(_privileges(pg_engine, reader, relation).values())
    with pg_engine.connect() as conn:
        schema = conn.execute(
            sa.text("SELECT has_schema_privilege(:r, 'spendpred', 'USAGE'), has_schema_privilege(:r, 'spendpred', 'CREATE')"),
            {"r": reader},
        ).one()
    assert tuple(schema) == (True, False)
    with pg_engine.connect() as conn:  # exactly the script's list: nothing missing, nothing more
        readable = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'spendpred' AND has_table_privilege(:r, c.oid, 'SELECT')"
            ),
            {"r": reader},
        ).scalars().all()
    assert sorted(readable) == sorted(publish.readonly_views())

    for sql in ["SELECT * FROM spendpred.user_spend_scores", "SELECT * FROM spendpred.tier_thresholds", *WRITES]:
        with pytest.raises(sa.exc.ProgrammingError) as refused:
            _as_role(pg_engine, reader, sql)
        assert refused.value.orig.pgcode == "42501", sql  # insufficient_privilege
        assert "permission denied" in str(refused.value.orig)
    for sql in VIEW_WRITES:
        # the views are not updatable; PostgreSQL says so before it checks privileges
        with pytest.raises(sa.exc.DBAPIError) as refused:
            _as_role(pg_engine, reader, sql)
        assert refused.value.orig.pgcode in {"42501", "55000"}, (sql, refused.value.orig.pgcode)
        assert "cannot" in str(refused.value.orig) or "permission denied" in str(refused.value.orig)
    assert len(_query(pg_engine, "SELECT * FROM user_spend_scores")) == len(ROWS)  # nothing changed


def _example_queries(text: str) -> list[str]:
    """The SQL statements under "query the results with SQL:" in a ``spendpred report`` text."""
    block = text.split("query the results with SQL:", 1)[1]
    statements = [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("--")]
    assert statements and all(s.endswith(";") for s in statements), statements
    return [s.rstrip(";") for s in statements]


def _publish_thresholds(engine: sa.Engine) -> None:
    """Three tiers' thresholds for each of the three runs (the high tier from 144.48)."""
    bounds = [("high", 144.48, None), ("medium", 10.0, 144.48), ("low", None, 10.0)]
    rows = [(day, tier, low, high) for day in (D1, D2, D3) for tier, low, high in bounds]
    table = pa.table({
        "as_of": pa.array([r[0] for r in rows], pa.date32()), "tier": [r[1] for r in rows],
        "lower_bound": pa.array([r[2] for r in rows], pa.float64()), "upper_bound": pa.array([r[3] for r in rows], pa.float64()),
        "model_version": [str(r[0].day) for r in rows],
    })  # fmt: skip
    with engine.begin() as conn:
        warehouse.bulk_insert(conn, "tier_thresholds", table)


@pytest.mark.postgres
def test_every_example_query_of_the_report_runs_as_the_readonly_role(
    pg_engine: sa.Engine, pg_url: str, reader: str, tmp_path: Any
) -> None:
    """Issue 22: the report printed ``SELECT * FROM spendpred.tier_thresholds``, which the role set up by
    ``db grant-readonly`` cannot run; now every query it prints reads a view that role may read."""
    from spendpred import report
    from spendpred.config import Settings

    _publish_thresholds(pg_engine)
    publish.grant_readonly(pg_engine, reader)
    text = report.format_report(report.page_data(pg_url, Settings(home=tmp_path / "var")))
    queries = _example_queries(text)
    assert len(queries) == 4 and all("spendpred.user_spend_tier_" in q for q in queries[:3])
    assert "FROM spendpred.current_user_spend_reasons" in queries[3]
    results = [_as_role(pg_engine, reader, sql) for sql in queries]  # none raises permission denied
    assert results[3] == []  # no reasons published in this world: the query runs, as the reader
    assert [len(rows) for rows in results[:2]] == [9, 3]  # the latest users (top 10), the churn warnings
    thresholds = [tuple(r) for r in results[2]]
    assert thresholds[:3] == [(D3, "high", 144.48, None), (D3, "medium", 10.0, 144.48), (D3, "low", None, 10.0)]
    assert len(thresholds) == 9
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):  # the table itself stays closed
        _as_role(pg_engine, reader, "SELECT * FROM spendpred.tier_thresholds")


def test_the_report_queries_run_on_sqlite_too(sqlite_url: str, tmp_path: Any) -> None:
    from spendpred import report
    from spendpred.config import Settings

    engine = warehouse.get_engine(sqlite_url)
    try:
        warehouse.init_db(engine)
        _load(engine, ROWS)
        _publish_thresholds(engine)
        queries = _example_queries(report.format_report(report.page_data(sqlite_url, Settings(home=tmp_path / "var"))))
        assert [len(_query(engine, sql)) for sql in queries] == [9, 3, 9, 0]  # no reasons published in this world
        assert _query(engine, queries[2])[0] == {"as_of": "2024-03-03", "tier": "high", "lower_bound": 144.48, "upper_bound": None}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_readonly_grants_survive_init_db_and_see_new_runs(pg_engine: sa.Engine, reader: str) -> None:
    publish.grant_readonly(pg_engine, reader)
    warehouse.init_db(pg_engine)  # CREATE OR REPLACE VIEW keeps the grants
    _load(pg_engine, [(dt.date(2024, 3, 4), "u1", 1.0, "low")])
    rows = _as_role(pg_engine, reader, "SELECT user_id, movement, churn_warning FROM spendpred.user_spend_tier_changes")
    assert [tuple(r) for r in rows] == [("u1", "down", True)]


@pytest.mark.postgres
def test_grants_script_runs_with_psql(pg_engine: sa.Engine, pg_url: str, reader: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    url = sa.engine.make_url(pg_url)
    script = warehouse.sql_dir() / "grants" / "readonly.postgresql.sql"
    command = [
        psql, "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres", "-d", url.database or "",
        "-c", f"SET spendpred.readonly_role = '{reader}'", "-f", str(script),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert len(_as_role(pg_engine, reader, "SELECT * FROM spendpred.user_spend_tier_current")) == 9

    # without the setting the script stops with a hint
    bare = [c for c in command if not c.startswith("SET ")]
    bare.remove("-c")
    failed = subprocess.run(bare, capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode != 0 and "spendpred.readonly_role is not set" in failed.stderr


@pytest.mark.postgres
def test_grant_readonly_refuses_a_missing_or_malformed_role(pg_engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it first"):
        publish.grant_readonly(pg_engine, f"spendpred_test_reader_missing_{uuid.uuid4().hex[:6]}")
    for bad in ['x"; DROP TABLE users; --', "1abc", "", "a" * 64]:
        with pytest.raises(ConfigError, match="invalid role name"):
            publish.grant_readonly(pg_engine, bad)


def test_the_granted_views_are_listed_once_in_the_grant_script_and_exist_after_db_init(sqlite_url: str) -> None:
    """sql/grants/readonly.postgresql.sql owns the list: the code reads it there (issue 23), and every view in it is one `db init` creates."""
    script = warehouse.load_sql("grants/readonly", "postgresql")
    views = publish.readonly_views()
    assert views[:3] == ("user_spend_tier_current", "user_spend_tier_changes", "user_spend_tier_thresholds")
    assert len(set(views)) == len(views)
    for view in views:
        assert script.count(f"'{view}'") == 1, view  # named once, in the granted array, and nowhere else
        assert f"spendpred.{view}" not in script, view  # no second, hand-written GRANT list
    engine = warehouse.get_engine(sqlite_url)
    try:
        warehouse.init_db(engine)
        created = set(sa.inspect(engine).get_view_names())
    finally:
        engine.dispose()
    assert set(views) <= created, set(views) - created


def test_grant_readonly_needs_postgresql(sqlite_url: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    with pytest.raises(ConfigError, match="need PostgreSQL"):
        publish.grant_readonly(engine, "reader")
