"""Airflow glue shared by the spendpred DAG files: params, run date, warehouse URL, retries.

Wiring only, no business logic (that lives in ``spendpred.pipeline``). Every task body runs
inside ``one_line`` (``spendpred.failures.one_line``, the CLI's error path too): ``@one_line()``
right under ``@task``. An expected failure (an invalid ``SPENDPRED_*`` setting, an unreachable
warehouse, a full disk, a missing SQLite warehouse file, which is refused, never created)
fails the task with one line naming the problem and the fix, secrets masked, as a
``SpendpredError``: retried only when it is a ``TransientError`` (``NO_RETRY_POLICY``). Importing this module
is cheap: it reads a few environment variables and builds ``Param`` objects; it touches no
database, no connection and imports nothing heavy. The functions that need the task
runtime (connections) import what they need when they are called.

Environment read at parse time (all optional, defaults run locally with no set-up):

* ``SPENDPRED_TRAIN_POOL``  pool of the ``train_model`` task (default ``default_pool``;
  create a dedicated pool first, e.g. ``airflow pools set gpu 1 "GPU trainers"``). The nightly's
  tasks outrank the retrain's (``NIGHTLY_PRIORITY``) for free slots either way.
* ``SPENDPRED_TRAIN_QUEUE`` Celery queue of ``train_model`` (default: Airflow's default queue;
  ``gpu`` in docker-compose, where a GPU worker listens on it).
* ``SPENDPRED_SCORE_QUEUE`` Celery queue of the ``score_shard`` tasks (default queue).
* ``SPENDPRED_SHARDS``      default of the nightly ``shards`` param (default 1: on one machine a
  single shard already uses every core, and each extra shard loads the model again; set it
  to the number of scoring workers, as docker-compose does). Anything but a whole number in
  1..64 makes the nightly DAG fail to import, naming the variable.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, NoReturn

from airflow.sdk import (
    Asset,
    AssetAlias,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
)

from spendpred.errors import ConfigError
from spendpred.failures import one_line
from spendpred.masking import excerpt
from spendpred.params import MAX_SHARDS, RunParams, ScoreParams, Spec, TrainParams, check, param_specs

WAREHOUSE_CONN_ID = "spendpred_warehouse"
"""Airflow connection holding the warehouse credentials (else ``SPENDPRED_WAREHOUSE_URL``)."""

START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
TAGS = ["spendpred"]

CHAMPION_ASSET = Asset(name="spendpred_champion_model", uri="spendpred://models/spendpred-regressor/champion")
"""Gets an event when a new model version becomes champion (the ``champion`` alias moved)."""
SCORES_ASSET = Asset(name="spendpred_user_spend_scores", uri="spendpred://warehouse/spendpred/user_spend_scores")
"""Gets an event when a scoring run has published a partition of ``user_spend_scores``."""
RETRAIN_REQUEST_ASSET = Asset(name="spendpred_retrain_request", uri="spendpred://monitoring/spendpred-regressor/retrain-request")
"""Gets an event when the nightly monitoring crossed an alert threshold and requested a retrain
(``pipeline.decide_retrain``: at most once per ``SPENDPRED_RETRAIN_COOLDOWN_DAYS``); the weekly
retrain is scheduled on its cron or this asset (``retrain_schedule``)."""
MODEL_HEALTH_ALIAS = AssetAlias(name="spendpred_model_health")
"""``monitor_scores``' outlet: an alias, so the task emits an event (``RETRAIN_REQUEST_ASSET``'s)
only on a night that requests a retrain, and stays a success on every other night."""
RETRAIN_CRON = "@weekly"


def retrain_schedule() -> AssetOrTimeSchedule:
    """Return the weekly retrain's schedule: its cron (``RETRAIN_CRON``, UTC) or a retrain request event (raises nothing)."""
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(RETRAIN_CRON, timezone="UTC"), assets=RETRAIN_REQUEST_ASSET)


def request_retrain(context: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    """Emit the retrain request event when the monitoring's decision (``result["retrain"]``) requests one.

    The event's extra carries the night, the model version and the reasons (the retrain's MLflow
    run records them as ``trigger_reason``). Returns whether an event was emitted; raises nothing.
    """
    decision = result.get("retrain") or {}
    if not decision.get("request"):
        return False
    context["outlet_events"][MODEL_HEALTH_ALIAS].add(
        RETRAIN_REQUEST_ASSET,
        extra={"as_of": str(result.get("as_of")), "model_version": str(decision.get("model_version")),
               "reasons": [str(r) for r in decision.get("reasons") or []]},
    )  # fmt: skip
    return True


def retrain_trigger(context: Mapping[str, Any]) -> dict[str, str]:
    """Return why this retrain run runs (``monitoring.retrain_trigger``: tags ``trigger``, ``trigger_reason``),
    from the run's type and its triggering asset events' extras. Raises nothing."""
    from spendpred.monitoring import retrain_trigger as tags

    run_type = getattr(context.get("dag_run"), "run_type", None)
    events = context.get("triggering_asset_events") or {}
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}  # an event through an alias is listed under the alias and the asset
    for batch in events.values():
        for event in batch:
            key = (getattr(event, "source_dag_id", None), getattr(event, "source_run_id", None), str(getattr(event, "timestamp", "")))
            unique.setdefault(key, dict(getattr(event, "extra", None) or {}))
    return tags(str(getattr(run_type, "value", run_type) or "manual"), list(unique.values()))

NO_RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="spendpred.errors.TransientError",
            action=RetryAction.DEFAULT,
            reason="transient: the warehouse or registry was unreachable or busy",
        ),
        RetryRule(
            exception="spendpred.errors.SpendpredError",
            action=RetryAction.FAIL,
            reason="bad parameters, data, validation or model reference: retrying cannot help",
        ),
    ]
)
"""Fail at once on errors a retry cannot fix (every ``SpendpredError`` but a ``TransientError``);
transient ones and unexpected ones (a bug, or a library error raised outside ``one_line``) retry.
Inside ``one_line`` a driver's or the file system's error arrives already sorted: an outage
(connection refused or lost, lock, full disk) as a ``TransientError``, a mistake (wrong
password, missing table, read-only folder) as a permanent ``SpendpredError``."""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "spendpred",
    "depends_on_past": False,
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=10),
    "retry_policy": NO_RETRY_POLICY,
}
"""Warehouse-friendly retries: 30 s, 60 s, 120 s (capped at 10 min); bad input fails at once."""

NIGHTLY_PRIORITY = 100
RETRAIN_PRIORITY = 1
"""Task priorities (``weight_rule`` absolute: each task has exactly this weight, not the sum of its
downstream tasks'). When both DAGs have tasks waiting for a slot (``make airflow`` has one:
``AIRFLOW__CORE__PARALLELISM=1`` on 2 cores), the scheduler starts the nightly's first, so a
retrain never delays a night by more than the task that is already running. A *running* task
keeps its slot until it ends, so the night may still wait for one retrain task (training is the
long one); to take training off the nightly's slots altogether, give it a pool of its own
(``SPENDPRED_TRAIN_POOL``) and one more slot of parallelism (``AIRFLOW__CORE__PARALLELISM``)."""


def default_args(priority: int) -> dict[str, Any]:
    """Return ``DEFAULT_ARGS`` with ``priority_weight`` ``priority`` and ``weight_rule`` absolute (raises nothing)."""
    return {**DEFAULT_ARGS, "priority_weight": priority, "weight_rule": "absolute"}


NO_RETRIES: dict[str, Any] = {"retries": 0}
"""For tasks whose failure is deterministic (validation, training on the same snapshot)."""


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def train_task_kwargs() -> dict[str, Any]:
    """Return ``pool``/``queue`` kwargs for the training task from the environment.

    Only set values are returned, so the defaults (``default_pool``, the default queue) run
    anywhere; raises nothing.
    """
    kwargs: dict[str, Any] = {"pool": _env("SPENDPRED_TRAIN_POOL") or "default_pool"}
    if queue := _env("SPENDPRED_TRAIN_QUEUE"):
        kwargs["queue"] = queue
    return kwargs


def default_shards() -> int:
    """Return the default shard count: ``SPENDPRED_SHARDS`` (a whole number in 1..MAX_SHARDS), 1 when unset.

    Read when the DAG file is parsed, so any other value (``0``, ``abc``, ``1000``) raises
    ``ConfigError`` there: the DAG fails to import with that one line in the UI's import errors,
    instead of quietly scoring with one shard.
    """
    value = _env("SPENDPRED_SHARDS")
    if value is None:
        return 1
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_SHARDS:
        return int(value)
    raise ConfigError(
        f"SPENDPRED_SHARDS={excerpt(value, 20)} is not valid: use a whole number in 1..{MAX_SHARDS} "
        "(the nightly's default shard count), or unset it for 1"
    )


def score_task_kwargs() -> dict[str, Any]:
    """Return the ``queue`` kwarg for the scoring shards when ``SPENDPRED_SCORE_QUEUE`` is set."""
    queue = _env("SPENDPRED_SCORE_QUEUE")
    return {"queue": queue} if queue else {}


# -- params --------------------------------------------------------------------------------


def spec_params(spec: type[RunParams], **defaults: Any) -> dict[str, Param]:
    """Return one Airflow ``Param`` per field of ``spec`` (``spendpred.params``), in its order.

    Type, range, choices, pattern, title and description come from the spec, so the trigger
    form refuses what the CLI and the pipeline refuse. ``defaults`` replaces a field's default
    (e.g. ``shards`` from the environment). Raises nothing.
    """
    return {
        name: Param(defaults.get(name, field.default), title=field.title, description=field.description, **field.schema)
        for name, field in param_specs(spec).items()
    }


def scoring_params() -> dict[str, Param]:
    """Return the params of ``spendpred_nightly_scoring``: ``ScoreParams``, shards defaulting to ``default_shards()``."""
    return spec_params(ScoreParams, shards=default_shards())


def retrain_params() -> dict[str, Param]:
    """Return the params of ``spendpred_weekly_retrain``: ``TrainParams``."""
    return spec_params(TrainParams)


def checked_params(params: Mapping[str, Any], spec: type[Spec]) -> Spec:
    """Return the run's params validated as ``spec`` (``ScoreParams`` or ``TrainParams``).

    Call it first in a DAG's first task, before anything is read or written. Airflow checks
    each param's schema when the run is created but accepts keys it does not know (it cannot
    refuse them), so here an unknown conf key (``as_of_date``) fails, as do what a schema cannot
    express: ``as_of`` must be a real calendar date, ``promote=force`` cannot go with ``dry_run``.
    Raises ``spendpred.errors.ConfigError`` naming the param and the fix.
    """
    return check(spec, params)


PARAMS_KEY = "run_params"
"""XCom key of the run's checked parameters, pushed once by a DAG's first task (``first_params``)."""


def first_params(context: Mapping[str, Any], spec: type[Spec]) -> Spec:
    """Check the run's params (``checked_params``: the run's one check), fix its date into ``as_of``
    (``run_date``), push them as XCom ``PARAMS_KEY`` (``model_dump(mode="json")``) and return them.

    Call it first in a DAG's first task; the later tasks take the pushed value as an argument
    (``first_task_output[PARAMS_KEY]``) and rebuild the object with ``run_params``, so no task
    after the first reads ``context["params"]``. Raises ``ConfigError`` naming the param and the fix.
    """
    params = checked_params(context["params"], spec)
    params = params.model_copy(update={"as_of": run_date(context, params)})
    context["ti"].xcom_push(key=PARAMS_KEY, value=params.model_dump(mode="json"))
    return params


def run_params(pushed: Mapping[str, Any], spec: type[Spec]) -> Spec:
    """Return the checked parameters the first task pushed (``first_params``), rebuilt as ``spec``.

    ``pushed`` is the JSON form of an object that was checked once already; rebuilding only reads
    it back into its types (``as_of`` a date again). Raises ``ConfigError`` should the XCom hold
    something else.
    """
    return check(spec, pushed)


def skip_unchanged(context: Mapping[str, Any], result: Mapping[str, Any], message: str) -> NoReturn:
    """End a producing task as *skipped* because it changed nothing (no promotion, a dry run).

    A skipped task emits no asset event, so consumers of the champion / scores assets only
    hear about real changes; the step's result stays readable as XCom ``result``.
    Always raises ``AirflowSkipException``.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    context["ti"].xcom_push(key="result", value=dict(result))
    raise AirflowSkipException(message)


# -- run date, actor and warehouse ----------------------------------------------------------

SCHEDULED_ACTOR = "airflow scheduler"
"""The actor of a run nobody triggered (a scheduled run has no triggering user)."""


def triggering_user(context: Mapping[str, Any]) -> str:
    """Return who started the DAG run, recorded on a forced promotion: the Airflow user who
    triggered it (``dag_run.triggering_user_name``), else ``SCHEDULED_ACTOR``. Raises nothing."""
    name = getattr(context.get("dag_run"), "triggering_user_name", None)
    return str(name).strip() if name and str(name).strip() else SCHEDULED_ACTOR



def run_date(context: Mapping[str, Any], params: RunParams) -> dt.date:
    """Return the run's business date from the checked params and the task context (never the clock).

    ``params.as_of`` (see ``checked_params``) wins when set; otherwise the last complete day
    before the run's data interval end (or logical date, or ``run_after`` for runs without
    one), so a rerun or a backfill of a run rewrites the same partition. Raises
    ``ConfigError`` when neither exists.
    """
    if params.as_of is not None:
        return params.as_of
    moment = context.get("data_interval_end") or context.get("logical_date")
    if moment is None:
        moment = getattr(context.get("dag_run"), "run_after", None)
    if moment is None:
        raise ConfigError("the DAG run has no logical date or data interval: trigger it with the as_of param")
    return moment.date() - dt.timedelta(days=1)


def warehouse_url() -> str | None:
    """Return the warehouse URL from the Airflow connection ``spendpred_warehouse``.

    Returns ``None`` when the connection does not exist, so the pipeline falls back to
    ``SPENDPRED_WAREHOUSE_URL`` (then the embedded SQLite file). Call inside a task only.
    Raises ``ConfigError`` for a connection of an unsupported type.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(WAREHOUSE_CONN_ID)
    except AirflowNotFoundException:
        return None
    from spendpred.warehouse import url_from_connection

    return url_from_connection(conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema, conn.extra_dejson)
