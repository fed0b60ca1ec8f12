"""Why a retrain ran, read from the task context the Task SDK builds (issue 24, item 4): the DAG glue
``_spendpred_common.retrain_trigger`` over Airflow's own run types and triggering-event accessor."""

from __future__ import annotations

import datetime as dt
import sys
from types import SimpleNamespace
from typing import Any

from tests.dags.conftest import DAGS_DIR


def _common() -> Any:
    if str(DAGS_DIR) not in sys.path:
        sys.path.append(str(DAGS_DIR))
    import _spendpred_common

    return _spendpred_common


def _event(as_of: str, reasons: list[str], run_id: str) -> Any:
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult.model_validate({
        "asset": {"name": "spendpred_retrain_request", "uri": "spendpred://monitoring/spendpred-regressor/retrain-request",
                  "extra": {}},
        "extra": {"as_of": as_of, "model_version": "4", "reasons": reasons},
        "source_task_id": "monitor_scores", "source_dag_id": "spendpred_nightly_scoring", "source_run_id": run_id,
        "source_map_index": -1, "source_aliases": [{"name": "spendpred_model_health"}],
        "timestamp": dt.datetime(2024, 7, 2, 2, 30, tzinfo=dt.UTC),
    })  # fmt: skip


def test_an_asset_triggered_retrain_records_the_alerts_once() -> None:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
    from airflow.utils.types import DagRunType

    common = _common()
    events = TriggeringAssetEventsAccessor.build([_event("2024-07-01", ["drift alert on monetary_90d, predicted_spend"], "r1")])
    assert len(events) == 2  # the one event, under the asset and under the alias it came through
    context = {"dag_run": SimpleNamespace(run_type=DagRunType.ASSET_TRIGGERED), "triggering_asset_events": events}
    assert common.retrain_trigger(context) == {
        "trigger": "asset", "trigger_reason": "monitoring of 2024-07-01: drift alert on monetary_90d, predicted_spend"}


def test_scheduled_and_manual_retrains() -> None:
    from airflow.utils.types import DagRunType

    common = _common()
    scheduled = common.retrain_trigger({"dag_run": SimpleNamespace(run_type=DagRunType.SCHEDULED), "triggering_asset_events": {}})
    assert scheduled["trigger"] == "schedule"
    assert common.retrain_trigger({"dag_run": SimpleNamespace(run_type=DagRunType.MANUAL)})["trigger"] == "manual"
    assert common.retrain_trigger({"dag_run": SimpleNamespace(run_type=DagRunType.BACKFILL_JOB)})["trigger"] == "schedule"
