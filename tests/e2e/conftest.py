"""End-to-end tests share the DAG tests' Airflow environment (temp AIRFLOW_HOME, SQLite
metadata database migrated once per session by the ``airflow_db`` fixture)."""

from __future__ import annotations

from tests.dags.conftest import AIRFLOW_HOME, airflow_db, configure_airflow_env

__all__ = ["AIRFLOW_HOME", "airflow_db", "configure_airflow_env"]
