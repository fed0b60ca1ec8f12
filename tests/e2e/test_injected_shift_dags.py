"""The injected shift through Airflow (issue 24, Evidence), with ``dag.test()``: a tiny random BERT
champion trained by the weekly retrain DAG, then two nights appended with ``append_day`` (the path of
``spendpred seed --append-day``) and scored by the nightly DAG with the default drift thresholds.

The unshifted night alerts only on durations up to the as-of date (``monitoring.CLOCK_FEATURES``:
they drift by construction against the champion's R - H reference) and requests nothing: its
``monitor_scores`` emits no retrain request and no retrain is queued. The first night after the
source switches to cents (``--shift cents``) alerts on the money features and emits the request
event, which queues the weekly retrain (its schedule is its cron or that asset).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from spendpred import monitoring, pipeline
from tests.e2e.test_dags_e2e import END, SCORING_DUE, _asset_events, _states, dags
from tests.e2e.test_monitoring_dags import REQUEST_URI, SCORES_URI, _queued_retrains, _rows, _unpause, forced_champion

pytestmark = pytest.mark.slow

__all__ = ["dags"]  # a fixture shared with test_dags_e2e (tiny_encoder is tests/conftest.py's)

MONEY = {"monetary_30d", "monetary_90d", "monetary_365d", "monetary_all", "avg_basket", "repeat_value"}


def test_the_first_night_in_cents_requests_a_retrain_and_the_night_before_does_not(
    sqlite_url: str, airflow_db: Path, dags: dict[str, Any], tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite_url
    forced_champion(url, 300, dags, tiny_encoder, monkeypatch)
    _unpause("spendpred_weekly_retrain")  # a paused DAG's asset events are not queued
    scoring = dags["spendpred_nightly_scoring"]

    calm_day, shift_day = END + dt.timedelta(days=1), END + dt.timedelta(days=2)
    pipeline.append_day(calm_day, seed=3, url=url)
    calm = scoring.test(logical_date=SCORING_DUE + dt.timedelta(days=1), run_conf={"dry_run": False})
    assert str(calm.state) == "success" and _states(calm.run_id)[("monitor_scores", -1)] == "success", _states(calm.run_id)
    assert [uri for uri, _ in _asset_events(calm.run_id)] == [SCORES_URI]  # no request
    calm_alerts = {f for (f,) in _rows(url, f"SELECT feature FROM drift_metrics WHERE as_of = '{calm_day}' AND status = 'alert'")}
    assert calm_alerts <= monitoring.CLOCK_FEATURES, calm_alerts
    assert _rows(url, "SELECT COUNT(*) FROM retrain_requests") == [(0,)]
    assert _queued_retrains() == 0

    pipeline.append_day(shift_day, seed=3, url=url, shift="cents")  # spendpred seed --append-day D --shift cents
    shifted = scoring.test(logical_date=SCORING_DUE + dt.timedelta(days=2), run_conf={"dry_run": False})
    assert str(shifted.state) == "success" and _states(shifted.run_id)[("monitor_scores", -1)] == "success"
    alerts = {f for (f,) in _rows(url, f"SELECT feature FROM drift_metrics WHERE as_of = '{shift_day}' AND status = 'alert'")}
    assert {"monetary_90d", "monetary_365d", "monetary_all", "avg_basket"} <= alerts, alerts
    assert alerts <= MONEY | monitoring.CLOCK_FEATURES | {"predicted_spend"}, alerts
    events = dict(_asset_events(shifted.run_id))
    assert set(events) == {SCORES_URI, REQUEST_URI}
    request = events[REQUEST_URI]
    assert request["as_of"] == shift_day.isoformat() and request["reasons"][0].startswith("drift alert on ")
    assert "monetary" in request["reasons"][0] and "tenure_days" not in request["reasons"][0]
    assert _rows(url, "SELECT CAST(as_of AS TEXT), decision FROM retrain_requests") == [(shift_day.isoformat(), "requested")]
    assert _queued_retrains() == 1  # the weekly retrain is due on the asset
