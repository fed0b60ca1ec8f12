"""Airflow glue shared by the spendpred DAG files: params, run date, warehouse URL, retries.

Wiring only, no business logic (that lives in ``spendpred.pipeline``). Importing this module
is cheap: it reads a few environment variables and builds ``Param`` objects; it touches no
database, no connection and imports nothing heavy. The functions that need the task
runtime (connections) import what they need when they are called.

Environment read at parse time (all optional, defaults run locally with no set-up):

* ``SPENDPRED_TRAIN_POOL``  pool of the ``train_model`` task (default ``default_pool``;
  create a dedicated pool first, e.g. ``airflow pools set gpu 1 "GPU trainers"``).
* ``SPENDPRED_TRAIN_QUEUE`` Celery queue of ``train_model`` (default: Airflow's default queue;
  ``gpu`` in docker-compose, where a GPU worker listens on it).
* ``SPENDPRED_SCORE_QUEUE`` Celery queue of the ``score_shard`` tasks (default queue).
* ``SPENDPRED_SHARDS``      default of the nightly ``shards`` param (default 1: on one machine a
  single shard already uses every core, and each extra shard loads the model again; set it
  to the number of scoring workers, as docker-compose does).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, NoReturn

from airflow.sdk import Asset, ExceptionRetryPolicy, Param, RetryAction, RetryRule

from spendpred.errors import ConfigError

WAREHOUSE_CONN_ID = "spendpred_warehouse"
"""Airflow connection holding the warehouse credentials (else ``SPENDPRED_WAREHOUSE_URL``)."""

START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
TAGS = ["spendpred"]

CHAMPION_ASSET = Asset(name="spendpred_champion_model", uri="spendpred://models/spendpred-regressor/champion")
"""Gets an event when a new model version becomes champion (the ``champion`` alias moved)."""
SCORES_ASSET = Asset(name="spendpred_user_spend_scores", uri="spendpred://warehouse/spendpred/user_spend_scores")
"""Gets an event when a scoring run has published a partition of ``user_spend_scores``."""

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
transient ones and unexpected ones (a driver's connection error, an OS error) retry."""

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

NO_RETRIES: dict[str, Any] = {"retries": 0}
"""For tasks whose failure is deterministic (validation, training on the same snapshot)."""

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
FREEZE_PATTERN = r"^(none|embeddings|all-but-head|bottom-k:[0-9]{1,2})$"
MODEL_PATTERN = r"^(champion|challenger|[1-9][0-9]*)$"


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
    """Return the default shard count: ``SPENDPRED_SHARDS`` when it is a whole number in 1..64, else 1."""
    value = _env("SPENDPRED_SHARDS")
    if value is not None and value.isdigit() and 1 <= int(value) <= 64:
        return int(value)
    return 1


def score_task_kwargs() -> dict[str, Any]:
    """Return the ``queue`` kwarg for the scoring shards when ``SPENDPRED_SCORE_QUEUE`` is set."""
    queue = _env("SPENDPRED_SCORE_QUEUE")
    return {"queue": queue} if queue else {}


# -- params --------------------------------------------------------------------------------


def common_params() -> dict[str, Param]:
    """Return the params both DAGs share (as_of, dry_run), with working defaults."""
    return {
        "as_of": Param(
            None,
            type=["null", "string"],
            pattern=DATE_PATTERN,
            title="As of (YYYY-MM-DD)",
            description="Business date to run for. Empty: the day before the run's data interval end "
            "(a nightly run at 02:00 on July 1 scores as of June 30).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Do everything but change what others read: scoring checks the scores but "
            "publishes nothing; retraining registers the candidate as challenger but never promotes it.",
        ),
    }


def scoring_params() -> dict[str, Param]:
    """Return the params of ``spendpred_nightly_scoring``."""
    return {
        **common_params(),
        "model": Param(
            "champion",
            type="string",
            pattern=MODEL_PATTERN,
            title="Model",
            description="Registry alias (champion, challenger) or version number of spendpred-regressor.",
        ),
        "shards": Param(
            default_shards(),
            type="integer",
            minimum=1,
            maximum=64,
            title="Shards",
            description="Number of scoring shards (hash of user_id), each a mapped task.",
        ),
    }


def retrain_params() -> dict[str, Param]:
    """Return the params of ``spendpred_weekly_retrain``."""
    return {
        **common_params(),
        "horizon": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=3650,
            title="Horizon (days)",
            description="Prediction horizon H: labels are the spend in (R - H, R]. Empty: SPENDPRED_HORIZON_DAYS (90).",
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100,
            title="Epochs",
            description="Maximum training epochs (early stopping may end sooner). Empty: the training default.",
        ),
        "max_users": Param(
            None,
            type=["null", "integer"],
            minimum=10,
            title="Max users",
            description="Train on a stable hash-chosen subset of at most this many users (>= 10). Empty: all users.",
        ),
        "freeze": Param(
            None,
            type=["null", "string"],
            pattern=FREEZE_PATTERN,
            title="Freezing",
            description="none | embeddings | bottom-k:N (freeze embeddings and the N lowest layers) | "
            "all-but-head. Empty: the training default.",
        ),
        "loss": Param(
            None,
            type=["null", "string"],
            enum=[None, "mse", "huber", "ziln"],
            title="Loss",
            description="Regression loss. Empty: the training default.",
        ),
        "promote": Param(
            "auto",
            type="string",
            enum=["auto", "never", "force"],
            title="Promotion",
            description="auto: champion only if the candidate beats it; never: register only; "
            "force: make it champion regardless (recorded).",
        ),
        "device": Param(
            "auto",
            type="string",
            enum=["auto", "cpu", "cuda"],
            title="Device",
            description="Training device; auto uses CUDA when the worker has it.",
        ),
    }


def checked_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return the run's params after the checks a JSON schema cannot express.

    The schema (checked by Airflow when the run is created) already refused wrong types and
    ranges; here: ``as_of`` must be a real calendar date, and ``promote=force`` cannot go with
    ``dry_run``. Raises ``spendpred.errors.ConfigError`` naming the param and the fix.
    """
    values = dict(params)
    as_of = values.get("as_of")
    if as_of:
        try:
            dt.date.fromisoformat(str(as_of))
        except ValueError:
            raise ConfigError(f"param as_of={as_of!r} is not a calendar date: use YYYY-MM-DD, e.g. 2024-06-30") from None
    if values.get("promote") == "force" and values.get("dry_run"):
        raise ConfigError("params promote='force' and dry_run=true contradict each other: drop one of them")
    return values


def skip_unchanged(context: Mapping[str, Any], result: Mapping[str, Any], message: str) -> NoReturn:
    """End a producing task as *skipped* because it changed nothing (no promotion, a dry run).

    A skipped task emits no asset event, so consumers of the champion / scores assets only
    hear about real changes; the step's result stays readable as XCom ``result``.
    Always raises ``AirflowSkipException``.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    context["ti"].xcom_push(key="result", value=dict(result))
    raise AirflowSkipException(message)


# -- run date and warehouse ----------------------------------------------------------------


def run_date(context: Mapping[str, Any]) -> str:
    """Return the run's business date ``YYYY-MM-DD`` from the task context (never the clock).

    The ``as_of`` param wins when set; otherwise the last complete day before the run's data
    interval end (or logical date, or ``run_after`` for runs without one), so a rerun or a
    backfill of a run rewrites the same partition. Raises ``ConfigError`` when neither exists.
    """
    as_of = (context.get("params") or {}).get("as_of")
    if as_of:
        return checked_params({"as_of": as_of})["as_of"]
    moment = context.get("data_interval_end") or context.get("logical_date")
    if moment is None:
        moment = getattr(context.get("dag_run"), "run_after", None)
    if moment is None:
        raise ConfigError("the DAG run has no logical date or data interval: trigger it with the as_of param")
    return (moment.date() - dt.timedelta(days=1)).isoformat()


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
