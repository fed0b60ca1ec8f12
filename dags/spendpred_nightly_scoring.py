"""
### spendpred nightly scoring

Scores every user with the champion model, buckets the scores into high / medium / low
tiers and publishes them to the warehouse (`user_spend_scores`, `tier_thresholds`).

`extract_scoring_snapshot` → `validate_snapshot` → `plan_shards` → `score_shard` × N
(dynamic task mapping) → `assign_tiers` → `explain_scores` → `publish_scores` → `monitor_scores`

* **Reasons** (`explain_scores`): the top three reasons (signed, in currency) of the high tier's
  and the tier changers' scores (`SPENDPRED_REASONS_SCOPE=all`: everyone), published with the
  scores in the same transaction (`user_spend_reasons`, view `current_user_spend_reasons`).

* **Run date D**: the `as_of` param, else the last complete day before the run's data
  interval end (the 02:00 run on July 1 scores as of June 30). Features use only rows up to
  the end of D, and publishing replaces the whole D partition in one transaction, so a rerun
  or a backfill of a date leaves exactly one partition.
* **Validation** (Great Expectations) stops the run before anything is scored or published.
* **Shards**: users are split by a hash of `user_id`; each shard is a mapped task that
  retries on its own (queue `SPENDPRED_SCORE_QUEUE` when set).
* **Priority**: every task has weight 100 (absolute), the retrain's 1, so a waiting nightly task
  gets the next free slot before a waiting retrain task (a running one keeps its slot).
* **Publishing** emits an event on the asset `spendpred://warehouse/spendpred/user_spend_scores`;
  a dry run checks the scores, publishes nothing and ends `publish_scores` as *skipped*.
* **Monitoring** (`monitor_scores`): every published partition whose horizon has ended is
  evaluated once against the spend it predicted (`partition_metrics`), and tonight's features
  and scores are compared with the champion's training data (`drift_metrics`; one warning per
  alerting feature), with tonight's estimated RMSE/MAE (`estimated_metrics`). A drift alert, or a
  matured partition ranking below a baseline or `SPENDPRED_MONITOR_GINI_FLOOR`, requests a retrain:
  an event on `spendpred://monitoring/spendpred-regressor/retrain-request` (through the alias
  `spendpred_model_health`), at most once per `SPENDPRED_RETRAIN_COOLDOWN_DAYS` (`retrain_requests`
  records each decision); a warning only reports. A monitoring failure is a warning in the task's
  result, never a failed night.
* **Warehouse**: Airflow connection `spendpred_warehouse`, else `SPENDPRED_WAREHOUSE_URL`
  (a SQLite file that does not exist is refused, never created).
* **Failures** are one line naming the problem and the fix, as in the `spendpred` CLI (an
  invalid `SPENDPRED_*` setting, an unreachable warehouse or registry, a full disk); only
  transient causes (a refused or lost connection, a lock, a full disk) are retried. A failed
  extract stages nothing.

Manual runs: *Trigger DAG w/ config*; the form is validated before the run is created.
"""

from __future__ import annotations

from typing import Any

from _spendpred_common import (
    MODEL_HEALTH_ALIAS,
    NIGHTLY_PRIORITY,
    PARAMS_KEY,
    SCORES_ASSET,
    START_DATE,
    TAGS,
    ScoreParams,
    default_args,
    first_params,
    one_line,
    request_retrain,
    run_params,
    score_task_kwargs,
    scoring_params,
    skip_unchanged,
    warehouse_url,
)
from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="spendpred_nightly_scoring",
    schedule="0 2 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(NIGHTLY_PRIORITY),
    params=scoring_params(),
    tags=[*TAGS, "scoring"],
    doc_md=__doc__,
)
def spendpred_nightly_scoring() -> None:
    """Nightly scoring and tier publishing (see the module docstring)."""

    @task
    @one_line()
    def extract_scoring_snapshot() -> dict[str, Any]:
        """Write the behaviour snapshot as of the run date D."""
        from spendpred import pipeline

        params = first_params(get_current_context(), ScoreParams)  # first: the run's one check, pushed as XCom run_params
        return pipeline.extract_scoring_snapshot(params, url=warehouse_url())

    # Retried like the others: a failed gate raises ValidationFailed, which the retry policy
    # fails at once; what retries is a task that never ran (the broker was down when it was
    # queued, its worker died).
    @task
    @one_line()
    def validate_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
        """Validate the snapshot with Great Expectations; a failure stops the run."""
        from spendpred import pipeline

        return {**snapshot, "validation": pipeline.validate_snapshot(snapshot)}

    @task
    @one_line()
    def plan_shards(snapshot: dict[str, Any], checked: dict[str, Any]) -> list[dict[str, Any]]:
        """Split the snapshot into shards; one mapped ``score_shard`` task per shard."""
        from spendpred import pipeline

        return pipeline.plan_shards(snapshot, params=run_params(checked, ScoreParams))

    @task(map_index_template="{{ shard_label }}", **score_task_kwargs())
    @one_line()
    def score_shard(spec: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
        """Predict spend for one shard with the run's model alias or version."""
        from spendpred import pipeline

        get_current_context()["shard_label"] = f"shard {spec['shard']}/{spec['shards']}"
        return pipeline.score_shard(spec, spec["shard"], spec["shards"], params=run_params(checked, ScoreParams))

    @task
    @one_line()
    def assign_tiers(snapshot: dict[str, Any], shard_results: list[dict[str, Any]]) -> dict[str, Any]:
        """Combine the shards and bucket the scores into tiers."""
        from spendpred import pipeline

        # a slice fetches every shard's result in one request (iterating probes past the end)
        return pipeline.assign_tiers(snapshot, list(shard_results[:]), url=warehouse_url())

    @task
    @one_line()
    def explain_scores(tiers: dict[str, Any]) -> dict[str, Any]:
        """Attribute the high tier's and the tier changers' scores (SPENDPRED_REASONS_SCOPE); write their top reasons."""
        from spendpred import pipeline

        return pipeline.explain_scores(tiers)

    @task(outlets=[SCORES_ASSET])
    @one_line()
    def publish_scores(tiers: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
        """Replace the run's partition in the warehouse; skipped (no asset event) on a dry run."""
        from spendpred import pipeline

        context = get_current_context()
        dry_run = run_params(checked, ScoreParams).dry_run
        result = pipeline.publish_scores(tiers, dry_run=dry_run, url=warehouse_url())
        if not result.get("published"):
            skip_unchanged(context, result, f"dry run: {result.get('rows')} scores for {result.get('as_of')} checked, nothing published")
        context["outlet_events"][SCORES_ASSET].extra = {
            "as_of": str(result.get("as_of")),
            "rows": result.get("rows"),
            "model_version": tiers.get("model_version"),
        }
        return result

    @task(outlets=[MODEL_HEALTH_ALIAS])
    @one_line()
    def monitor_scores(tiers: dict[str, Any], published: dict[str, Any]) -> dict[str, Any]:
        """Realized performance, drift and estimate; a retrain request event on an alert (cool-down kept); never fails the night."""
        from spendpred import pipeline

        result = pipeline.monitor_scores(tiers, url=warehouse_url())
        request_retrain(get_current_context(), result)
        return result

    extracted = extract_scoring_snapshot()
    checked = extracted[PARAMS_KEY]  # the run's checked params, as the first task pushed them
    snapshot = validate_snapshot(extracted)
    shard_results = score_shard.partial(checked=checked).expand(spec=plan_shards(snapshot, checked))
    tiers = assign_tiers(snapshot, shard_results)
    monitor_scores(tiers, publish_scores(explain_scores(tiers), checked))


nightly_scoring = spendpred_nightly_scoring()

if __name__ == "__main__":
    nightly_scoring.test()
