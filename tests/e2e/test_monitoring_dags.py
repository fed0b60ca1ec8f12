"""Monitoring reacts through Airflow (issue 24, item 4), with ``dag.test()``: a tiny random BERT, a
seeded synthetic warehouse (SQLite), a real MLflow registry and Airflow's SQLite metadata database.

A night with warning-level drift only reports; after amounts are switched to cents the next night
alerts and its ``monitor_scores`` emits the retrain request event (through the alias
``spendpred_model_health``), which queues the weekly retrain (scheduled on its cron or that
asset); the night after alerts again and the cool-down suppresses a second request. The retrain's
MLflow run records why it ran.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spendpred import pipeline, registry, warehouse
from tests.e2e.test_dags_e2e import END, RETRAIN_DUE, SCORING_DUE, _airflow_uri, _asset_events, _states, dags

pytestmark = pytest.mark.slow

__all__ = ["dags"]  # a fixture shared with test_dags_e2e (tiny_encoder is tests/conftest.py's)

REQUEST_URI = "spendpred://monitoring/spendpred-regressor/retrain-request"
SCORES_URI = "spendpred://warehouse/spendpred/user_spend_scores"


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def _queued_retrains() -> int:
    """Asset-triggered runs of the weekly retrain the scheduler would create (Airflow's asset queue)."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == "spendpred_weekly_retrain").count()


def _unpause(dag_id: str) -> None:
    """Unpause ``dag_id`` with an empty asset queue: the metadata database lives for the whole session,
    so another test's queued asset-triggered run must not count as this test's."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == dag_id).delete()
        session.query(DagModel).filter(DagModel.dag_id == dag_id).update({DagModel.is_paused: False})


def forced_champion(url: str, users: int, dags: dict[str, Any], tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The world both asset tests start from: a tiny encoder, the warehouse seeded with ``users`` up to END,
    the Airflow connection on it, and a champion from the weekly retrain DAG (promoted by force).
    Returns the retrain's DAG run (asserted successful)."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", _airflow_uri(url))
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", url)
    pipeline.seed(users=users, days=400, end_date=END, seed=11, url=url)
    retrain = dags["spendpred_weekly_retrain"].test(logical_date=RETRAIN_DUE, run_conf={"epochs": 1, "promote": "force"})
    assert str(retrain.state) == "success", _states(retrain.run_id)
    return retrain


def test_an_alert_night_requests_one_retrain_and_the_cooldown_holds(
    sqlite_url: str, airflow_db: Path, dags: dict[str, Any], tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite_url
    monkeypatch.setenv("SPENDPRED_RETRAIN_COOLDOWN_DAYS", "7")
    forced_champion(url, 200, dags, tiny_encoder, monkeypatch)
    client = registry.get_client()
    champion = client.get_model_version_by_alias(registry.REGISTERED_MODEL, registry.CHAMPION)
    tags = client.get_run(champion.run_id).data.tags
    assert tags["trigger"] == "manual" and tags["trigger_reason"] == "triggered by hand"  # dag.test is a manual run
    _unpause("spendpred_weekly_retrain")  # a paused DAG's asset events are not queued

    scoring = dags["spendpred_nightly_scoring"]
    # -- a night whose drift is warning-level only (alert threshold out of reach): it reports, nothing more
    monkeypatch.setenv("SPENDPRED_DRIFT_PSI_WARN", "0.0001")
    monkeypatch.setenv("SPENDPRED_DRIFT_PSI_ALERT", "10")
    calm = scoring.test(logical_date=SCORING_DUE, run_conf={"dry_run": False})
    assert str(calm.state) == "success" and _states(calm.run_id)[("monitor_scores", -1)] == "success", _states(calm.run_id)
    assert [uri for uri, _ in _asset_events(calm.run_id)] == [SCORES_URI]
    statuses = dict(_rows(url, "SELECT status, COUNT(*) FROM drift_metrics WHERE as_of = '2024-06-30' GROUP BY status"))
    assert statuses.get("warn", 0) > 0 and "alert" not in statuses
    estimates = _rows(url, "SELECT metric, estimated, realized FROM user_spend_estimated_performance ORDER BY metric")
    assert [(m, r) for m, _, r in estimates] == [("mae", None), ("rmse", None)] and all(e > 0 for _, e, _ in estimates)
    assert _rows(url, "SELECT COUNT(*) FROM retrain_requests") == [(0,)]
    assert _queued_retrains() == 0

    # -- the world changes: every amount in cents. The next night alerts and requests a retrain
    monkeypatch.delenv("SPENDPRED_DRIFT_PSI_WARN")
    monkeypatch.delenv("SPENDPRED_DRIFT_PSI_ALERT")
    engine = warehouse.get_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE orders SET amount = amount * 100"))
    finally:
        engine.dispose()
    alert = scoring.test(logical_date=SCORING_DUE + dt.timedelta(days=1), run_conf={"dry_run": False})
    assert str(alert.state) == "success" and _states(alert.run_id)[("monitor_scores", -1)] == "success"
    events = dict(_asset_events(alert.run_id))
    assert set(events) == {SCORES_URI, REQUEST_URI}
    request = events[REQUEST_URI]
    assert request["as_of"] == "2024-07-01" and request["model_version"] == "1"
    assert request["reasons"] and request["reasons"][0].startswith("drift alert on ") and "monetary" in request["reasons"][0]
    assert _rows(url, "SELECT CAST(as_of AS TEXT), decision, cooldown_until FROM retrain_requests") == [
        ("2024-07-01", "requested", "2024-07-07")]
    assert _queued_retrains() == 1  # the weekly retrain is due on the asset, not only on its cron

    # -- the night after alerts again: inside the cool-down, recorded but no second request
    again = scoring.test(logical_date=SCORING_DUE + dt.timedelta(days=2), run_conf={"dry_run": False})
    assert str(again.state) == "success" and _states(again.run_id)[("monitor_scores", -1)] == "success"
    assert [uri for uri, _ in _asset_events(again.run_id)] == [SCORES_URI]
    assert _rows(url, "SELECT CAST(as_of AS TEXT), decision FROM retrain_requests ORDER BY as_of") == [
        ("2024-07-01", "requested"), ("2024-07-02", "suppressed")]
    alerts = _rows(url, "SELECT COUNT(*) FROM drift_metrics WHERE as_of = '2024-07-02' AND status = 'alert'")[0][0]
    assert alerts > 0
    assert _queued_retrains() == 1
