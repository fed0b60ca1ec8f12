"""Airflow's logging configuration for spendpred: Airflow's default, with library warnings filtered.

Selected by ``AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS=spendpred_logging.LOGGING_CONFIG``
(``scripts/airflow-env.sh``: ``make airflow`` and the demo). Airflow imports it in every process
while it sets up logging, after putting the plugins folder on ``sys.path`` and before a CLI
command or the DAG processor runs, so the two warnings of ``spendpred.logs.LIBRARY_WARNINGS``
(graphviz not installed, pathspec's deprecated pattern class used by Airflow itself) stay out
of the logs; every other warning is kept. Defines no plugin.
"""

from __future__ import annotations

from airflow.config_templates.airflow_local_settings import DEFAULT_LOGGING_CONFIG

from spendpred.logs import quiet_warnings

quiet_warnings()

LOGGING_CONFIG = DEFAULT_LOGGING_CONFIG
