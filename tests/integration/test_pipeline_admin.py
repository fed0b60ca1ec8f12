"""Warehouse administration steps (``spendpred.pipeline.admin``): schema, grants, loading, summaries.

Real warehouses (SQLite, and PostgreSQL where marked); the steps are called as both front ends
call them, with a URL and the settings of the environment.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from spendpred import pipeline, publish, synth, warehouse
from spendpred.config import Settings
from spendpred.errors import ConfigError, DataError

END = dt.date(2024, 3, 31)


def test_init_warehouse_creates_the_contract_once_and_reports_what_it_applied(warehouse_url: str) -> None:
    first = pipeline.init_warehouse(warehouse_url)
    again = pipeline.init_warehouse(warehouse_url)  # idempotent: the same files, nothing breaks
    assert again["applied"] == first["applied"]
    assert any(name.startswith("schema/") for name in first["applied"])
    assert any(name.startswith("views/") for name in first["applied"])
    with warehouse.opened_engine(warehouse_url) as engine:
        assert warehouse.table_counts(engine) == dict.fromkeys(warehouse.SOURCE_TABLES, 0)
    assert first["url"] == again["url"]


@pytest.mark.postgres
def test_init_warehouse_never_shows_the_password(pg_url: str) -> None:
    url = sa.make_url(pg_url).set(password="s3cret-Pw")  # the test cluster trusts local connections
    done = pipeline.init_warehouse(url.render_as_string(hide_password=False))
    assert "s3cret-Pw" not in done["url"] and "***" in done["url"]


def test_seed_takes_the_settings_seed_and_writes_what_synth_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_SEED", "7")
    via_step = f"sqlite:///{tmp_path / 'step.db'}"
    direct = f"sqlite:///{tmp_path / 'direct.db'}"
    counts = pipeline.seed(users=150, days=45, end_date=END, url=via_step)
    with warehouse.opened_engine(direct) as engine:
        assert synth.seed_warehouse(engine, 150, 45, END, seed=7, daily_active=synth.DEFAULT_DAILY_ACTIVE) == counts
    rows = []
    for url in (via_step, direct):
        with warehouse.opened_engine(url) as engine, engine.connect() as conn:
            rows.append(conn.execute(sa.text("SELECT order_id, user_id, amount FROM orders ORDER BY order_id")).fetchall())
    assert rows[0] == rows[1] and len(rows[0]) == counts["orders"] > 0
    other = pipeline.seed(users=150, days=45, end_date=END, seed=8, url=f"sqlite:///{tmp_path / 'other.db'}")
    assert other != counts  # the explicit seed wins over the setting


def test_append_day_adds_one_day_and_never_creates_a_warehouse(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "warehouse.db"
    with pytest.raises(ConfigError):
        pipeline.append_day(END + dt.timedelta(days=1), url=f"sqlite:///{missing}")
    assert not missing.exists() and not missing.parent.exists()

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    seeded = pipeline.seed(users=120, days=40, end_date=END, seed=3, url=url)
    day = END + dt.timedelta(days=1)
    added = pipeline.append_day(day, seed=3, url=url)
    assert added["day"] == day.isoformat()
    with warehouse.opened_engine(url) as engine:
        counts = warehouse.table_counts(engine)
    assert counts == {table: seeded[table] + int(added[table]) for table in warehouse.SOURCE_TABLES}
    with pytest.raises(DataError, match="on or after"):  # the same day again: refused, nothing written
        pipeline.append_day(day, seed=3, url=url)


def test_warehouse_and_run_summaries_before_any_run(sqlite_url: str, isolated_settings: Path) -> None:
    pipeline.seed(users=60, days=30, end_date=END, seed=1, url=sqlite_url)
    summary = pipeline.warehouse_summary(sqlite_url)
    assert summary["counts"]["users"] == 60 and summary["buyers"] > 0 and summary["completed_spend"] > 0
    assert summary["last_order"] is not None and summary["last_order"] <= f"{END.isoformat()} 23:59:59"
    run = pipeline.run_summary(sqlite_url)
    assert run["champion"] is None  # nothing registered yet
    assert not (run.get("summary") or {}).get("as_of")  # nothing published yet
    store = Settings().resolved_tracking_uri.removeprefix("sqlite:///")
    assert Path(store).parent == isolated_settings and not Path(store).exists()  # asking created no registry


@pytest.fixture
def reader(pg_url: str) -> Iterator[str]:
    """A NOLOGIN role for this test, dropped again at the end (roles are cluster-wide)."""
    role = f"spendpred_admin_reader_{uuid.uuid4().hex[:8]}"
    with warehouse.opened_engine(pg_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')
    yield role
    with warehouse.opened_engine(pg_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE "{role}"')


@pytest.mark.postgres
def test_grant_readonly_reports_exactly_what_the_role_can_read(pg_url: str, reader: str) -> None:
    pipeline.init_warehouse(pg_url)
    done = pipeline.grant_readonly(reader, pg_url)
    assert done["role"] == reader
    assert done["granted"] == [f"spendpred.{view}" for view in publish.readonly_views()]
    with warehouse.opened_engine(pg_url) as engine, engine.connect() as conn:
        readable = conn.execute(
            sa.text(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('spendpred', 'public') AND has_table_privilege(:r, c.oid, 'SELECT')"
            ),
            {"r": reader},
        ).scalars().all()
    assert sorted(readable) == sorted(done["granted"])
