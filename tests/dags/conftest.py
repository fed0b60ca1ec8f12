"""Airflow test environment for the DAG tests: a throwaway AIRFLOW_HOME with a SQLite
metadata database, examples off, DAGs and plugins from this repository.

Airflow reads its configuration when ``airflow`` is first imported, so the environment is
set when this file is imported (before any test module imports Airflow). The metadata
database is migrated once per test session, and only by the tests that ask for it
(``airflow_db``); parsing DAG files needs no database.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
PLUGINS_DIR = REPO / "plugins"
_MARKER = "SPENDPRED_TEST_AIRFLOW_HOME"


def configure_airflow_env() -> Path:
    """Point Airflow at a temp home (once per process); return that folder.

    Sets AIRFLOW_HOME, the SQLite metadata URL, the DAG and plugin folders, and turns the
    example DAGs off. A home created here is removed when the process exits.
    """
    existing = os.environ.get(_MARKER)
    if existing:
        return Path(existing)
    home = Path(tempfile.mkdtemp(prefix="spendpred-airflow-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.update(
        {
            _MARKER: str(home),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    return home


AIRFLOW_HOME = configure_airflow_env()


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """Migrate the session's Airflow metadata database (SQLite, in the temp home); yield its home."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"`airflow db migrate` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    yield AIRFLOW_HOME
