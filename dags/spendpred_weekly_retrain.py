"""
### spendpred weekly retrain

Retrains the spend regressor on the latest complete horizon and promotes it only when it
beats the model in production.

`extract_training_snapshot` → `validate_snapshot` → `train_model` → `evaluate_and_register`
→ `promote_model`

* **Run date R**: the `as_of` param, else the last complete day before the run's data
  interval end (a run due on Sunday 00:00 trains with R = Saturday). Features are taken as
  of R − H and labels are the completed spend in (R − H, R]; a rerun of the same run
  rebuilds the same snapshot.
* **Schedule**: weekly (Sunday 00:00 UTC) **or** when the nightly monitoring requests a retrain
  (asset `spendpred://monitoring/spendpred-regressor/retrain-request`: a drift alert or a matured
  partition ranking poorly, at most once per `SPENDPRED_RETRAIN_COOLDOWN_DAYS`). The MLflow run is
  tagged `trigger` = `schedule`, `asset` or `manual` with `trigger_reason` (the alert's reasons).
* **Validation** (Great Expectations) stops the run before anything trains.
* **Training** runs in pool `SPENDPRED_TRAIN_POOL` (default `default_pool`) and on queue
  `SPENDPRED_TRAIN_QUEUE` (e.g. `gpu`, served by the GPU Celery worker).
* **Priority**: this DAG's tasks have weight 1, the nightly's 100 (absolute), so a waiting
  nightly task gets the next free slot first; a running training task keeps its slot until it
  ends (on `make airflow`'s single slot the night then waits for it: give training a pool of
  its own and one more slot of `AIRFLOW__CORE__PARALLELISM` to avoid that).
* **Registry**: every candidate becomes a new version of `spendpred-regressor` with alias
  `challenger`; `promote` = `auto` makes it `champion` only when it wins the gate, `never`
  registers only, `force` promotes regardless (recorded with the Airflow user who triggered
  the run, and the gate condition it skipped). When the champion changes, the asset
  `spendpred://models/spendpred-regressor/champion` gets an event; otherwise
  `promote_model` ends as *skipped* (the decision is in its XCom `result`).
* **Warehouse**: Airflow connection `spendpred_warehouse`, else `SPENDPRED_WAREHOUSE_URL`
  (a SQLite file that does not exist is refused, never created).
* **Failures** are one line naming the problem and the fix, as in the `spendpred` CLI (an
  invalid `SPENDPRED_*` setting, an unreachable warehouse or registry, a full disk); only
  transient causes (a refused or lost connection, a lock, a full disk) are retried. A failed
  extract stages nothing; an unreachable or unwritable MLflow store fails the first task.

Manual runs: *Trigger DAG w/ config*; the form is validated before the run is created.
"""

from __future__ import annotations

from typing import Any

from _spendpred_common import (
    CHAMPION_ASSET,
    PARAMS_KEY,
    RETRAIN_PRIORITY,
    START_DATE,
    TAGS,
    TrainParams,
    default_args,
    first_params,
    one_line,
    retrain_params,
    retrain_schedule,
    retrain_trigger,
    run_params,
    skip_unchanged,
    train_task_kwargs,
    triggering_user,
    warehouse_url,
)
from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="spendpred_weekly_retrain",
    schedule=retrain_schedule(),  # the weekly cron, or the nightly monitoring's retrain request
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(RETRAIN_PRIORITY),
    params=retrain_params(),
    tags=[*TAGS, "training", "mlflow"],
    doc_md=__doc__,
)
def spendpred_weekly_retrain() -> None:
    """Weekly retraining of the spend regressor (see the module docstring)."""

    @task
    @one_line()
    def extract_training_snapshot() -> dict[str, Any]:
        """Write the labelled snapshot (features as of R − H, labels in (R − H, R])."""
        from spendpred import pipeline

        params = first_params(get_current_context(), TrainParams)  # first: the run's one check, pushed as XCom run_params
        return pipeline.extract_training_snapshot(params, url=warehouse_url())  # checks the encoder and freeze first

    # Retried like the others: a failed gate raises ValidationFailed, which the retry policy
    # fails at once; what retries is a task that never ran (the broker was down when it was
    # queued, its worker died).
    @task
    @one_line()
    def validate_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
        """Validate the snapshot with Great Expectations; a failure stops the run."""
        from spendpred import pipeline

        return {**snapshot, "validation": pipeline.validate_snapshot(snapshot)}

    @task(retries=1, **train_task_kwargs())
    @one_line()
    def train_model(snapshot: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune the regressor on the snapshot (GPU pool/queue when configured)."""
        from spendpred import pipeline

        return pipeline.train_model(snapshot, run_params(checked, TrainParams))

    @task
    @one_line()
    def evaluate_and_register(trained: dict[str, Any]) -> dict[str, Any]:
        """Evaluate on the test split, log the MLflow run and register a challenger version."""
        from spendpred import pipeline

        return pipeline.evaluate_and_register(trained, trigger=retrain_trigger(get_current_context()))

    @task(outlets=[CHAMPION_ASSET])
    @one_line()
    def promote_model(registered: dict[str, Any], trained: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
        """Apply the promotion gate; skipped (no asset event) when the champion stays as it is."""
        from spendpred import pipeline

        context = get_current_context()
        mode = run_params(checked, TrainParams).promote_mode  # never on a dry run
        result = pipeline.promote_model(
            registered["version"], mode=mode, run=trained, url=warehouse_url(), actor=triggering_user(context)
        )
        if not result.get("promoted"):
            skip_unchanged(context, result, f"champion unchanged (version {result.get('champion_version')}): {result.get('reason')}")
        context["outlet_events"][CHAMPION_ASSET].extra = {
            "version": str(result.get("champion_version")),
            "mode": mode,
            "reason": result.get("reason"),
        }
        return result

    extracted = extract_training_snapshot()
    checked = extracted[PARAMS_KEY]  # the run's checked params, as the first task pushed them
    trained = train_model(validate_snapshot(extracted), checked)
    promote_model(evaluate_and_register(trained), trained, checked)


weekly_retrain = spendpred_weekly_retrain()

if __name__ == "__main__":
    weekly_retrain.test()
