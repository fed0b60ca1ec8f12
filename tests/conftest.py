"""Shared fixtures: throwaway SQLite and PostgreSQL warehouses, isolated settings.

PostgreSQL tests are marked ``postgres``. They skip when the server cannot be reached,
except when ``SPENDPRED_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), where they fail instead.
Each test session works in its own throwaway database, dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

PG_ADMIN_URL = os.environ.get("SPENDPRED_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _require_postgres() -> bool:
    return os.environ.get("SPENDPRED_REQUIRE_POSTGRES", "") in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default (warehouse, MLflow, staging) into the test's temp folder."""
    for key in list(os.environ):
        if key.startswith("SPENDPRED_") and key not in {"SPENDPRED_REQUIRE_POSTGRES", "SPENDPRED_TEST_PG_ADMIN_URL"}:
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "var"
    monkeypatch.setenv("SPENDPRED_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Run a module's torch work on one thread (fast and repeatable on a shared 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT folder (``tests.tiny_bert``), built once per test module."""
    from tests.tiny_bert import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("encoder") / "tiny-bert")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Create a throwaway PostgreSQL database for this test session; yield its URL."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
        if _require_postgres():
            pytest.fail(message + " (SPENDPRED_REQUIRE_POSTGRES=1: start it, see README)")
        pytest.skip(message)
    name = f"spendpred_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """A clean PostgreSQL warehouse for one test: public and spendpred schemas emptied."""
    engine = sa.create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS spendpred CASCADE")
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    yield pg_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite warehouse file in the test's temp folder."""
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """Parametrised: the same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
