"""Both DAGs end to end with ``dag.test()``: a tiny random BERT, a seeded synthetic warehouse
(SQLite and PostgreSQL), a real MLflow registry and Airflow's SQLite metadata database.

The warehouse is reached through the Airflow connection ``spendpred_warehouse`` (given as
``AIRFLOW_CONN_SPENDPRED_WAREHOUSE``), while ``SPENDPRED_WAREHOUSE_URL`` points at a file that
must never be created: the connection has to win. The run dates come from the runs'
logical dates: retraining due 2024-07-01 00:00 trains with R = 2024-06-30, scoring due
2024-07-01 02:00 scores as of 2024-06-30.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spendpred import pipeline, registry, warehouse
from spendpred.config import get_settings
from tests.dags.conftest import DAGS_DIR

pytestmark = pytest.mark.slow

END = dt.date(2024, 6, 30)
RETRAIN_DUE = dt.datetime(2024, 7, 1, 0, 0, tzinfo=dt.UTC)
SCORING_DUE = dt.datetime(2024, 7, 1, 2, 0, tzinfo=dt.UTC)
USERS = 200


@pytest.fixture
def dags() -> dict[str, Any]:
    """The repository's DAGs, parsed as the DAG processor parses them, fresh for each test.

    Fresh because ``dag.test()`` runs tasks in this process, and a run's conf is merged
    into the in-memory params of the DAG object it ran (a worker process would start clean).
    """
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS_DIR, bundle_path=DAGS_DIR, bundle_name="dags-folder")
    assert bag.import_errors == {}
    return bag.dags



def _airflow_uri(url: str) -> str:
    """The Airflow connection URI for a warehouse URL (Airflow names the type ``postgres``)."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def _states(run_id: str) -> dict[tuple[str, int], str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id).all()
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}


def _tries(run_id: str, task_id: str) -> set[int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id, TaskInstance.task_id == task_id).all()
        return {int(ti.try_number) for ti in tis}


def _asset_events(run_id: str) -> list[tuple[str, dict[str, Any]]]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == run_id).all()
        return [(event.asset.uri, dict(event.extra or {})) for event in events]


def _published(url: str) -> dict[str, Any]:
    engine = warehouse.get_engine(url)  # on PostgreSQL: search_path reaches schema spendpred
    try:
        with engine.connect() as conn:
            scores = conn.execute(
                sa.text(
                    "SELECT CAST(as_of AS TEXT), COUNT(*), COUNT(DISTINCT user_id), MIN(model_version), "
                    "MAX(model_version) FROM user_spend_scores GROUP BY as_of ORDER BY 1"
                )
            ).all()
            tiers = dict(conn.execute(sa.text("SELECT tier, COUNT(*) FROM user_spend_scores GROUP BY tier")).all())
            thresholds = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT as_of) FROM tier_thresholds")).one()
    finally:
        engine.dispose()
    return {"partitions": [tuple(row) for row in scores], "tiers": tiers, "thresholds": tuple(thresholds)}


def test_retrain_then_score_through_airflow(
    warehouse_url: str,
    airflow_db: Path,
    dags: dict[str, Any],
    tiny_encoder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    torch.set_num_threads(1)
    unused = tmp_path / "fallback-warehouse.db"
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", f"sqlite:///{unused}")
    monkeypatch.setenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", _airflow_uri(warehouse_url))
    pipeline.seed(users=USERS, days=400, end_date=END, seed=11, url=warehouse_url)

    # -- weekly retrain: snapshot, validation, training, registration, promotion -------------
    # 200 users hold too few held-out users for the gate to promote on its own: force (recorded)
    retrain = dags["spendpred_weekly_retrain"].test(logical_date=RETRAIN_DUE, run_conf={"epochs": 1, "promote": "force"})
    assert str(retrain.state) == "success", _states(retrain.run_id)
    assert set(_states(retrain.run_id).values()) == {"success"}
    client = registry.get_client()
    champion = client.get_model_version_by_alias(registry.REGISTERED_MODEL, registry.CHAMPION)
    challenger = client.get_model_version_by_alias(registry.REGISTERED_MODEL, registry.CHALLENGER)
    assert str(champion.version) == str(challenger.version) == "1"
    assert champion.tags["promoted_by"] == "dag_test"  # dag.test's triggering user, not the OS user of the worker
    assert champion.tags["promotion_skipped_gate"]  # forced past the gate: the condition it did not meet is recorded
    events = _asset_events(retrain.run_id)
    assert [(uri, extra["version"], extra["mode"]) for uri, extra in events] == [
        ("spendpred://models/spendpred-regressor/champion", "1", "force")
    ]
    staging = get_settings().resolved_staging_dir
    train_manifest = json.loads((staging / "train" / "2024-04-01" / "snapshot" / "manifest.json").read_text())
    assert train_manifest["as_of"] == "2024-04-01" and train_manifest["horizon_days"] == 90  # R - H, R = 2024-06-30

    # -- nightly scoring: two mapped shards, tiers, publish -------------------------------------
    scoring = dags["spendpred_nightly_scoring"]
    first = scoring.test(logical_date=SCORING_DUE, run_conf={"shards": 2, "dry_run": False})
    assert str(first.state) == "success", _states(first.run_id)
    states = _states(first.run_id)
    assert {k: v for k, v in states.items() if k[0] == "score_shard"} == {("score_shard", 0): "success", ("score_shard", 1): "success"}
    users = json.loads((staging / "score" / "2024-06-30" / "snapshot" / "manifest.json").read_text())["row_count"]
    assert 0 < users <= USERS
    published = _published(warehouse_url)
    assert published["partitions"] == [("2024-06-30", users, users, "1", "1")]
    assert set(published["tiers"]) <= {"high", "medium", "low"} and sum(published["tiers"].values()) == users
    assert published["thresholds"] == (3, 1)
    events = _asset_events(first.run_id)
    assert [(uri, extra["as_of"], extra["rows"]) for uri, extra in events] == [
        ("spendpred://warehouse/spendpred/user_spend_scores", "2024-06-30", users)
    ]

    # -- a rerun of the same date (other shard count) replaces the partition ------------------
    rerun = scoring.test(logical_date=SCORING_DUE, run_conf={"shards": 3, "dry_run": False})
    assert str(rerun.state) == "success", _states(rerun.run_id)
    assert len([k for k in _states(rerun.run_id) if k[0] == "score_shard"]) == 3
    assert _published(warehouse_url) == published
    assert len(_asset_events(rerun.run_id)) == 1

    # -- a dry run for the next day checks everything, publishes nothing, emits no event ---------
    dry = scoring.test(logical_date=SCORING_DUE + dt.timedelta(days=1), run_conf={"dry_run": True, "model": "1"})
    assert str(dry.state) == "success"
    assert _states(dry.run_id)[("publish_scores", -1)] == "skipped"
    assert _asset_events(dry.run_id) == []
    assert _published(warehouse_url)["partitions"] == published["partitions"]

    # -- a missing model version fails at once, before anything is extracted: no retries ----------
    started = time.monotonic()
    runs_before = sorted(p.name for p in (staging / "score").iterdir())
    missing = scoring.test(logical_date=SCORING_DUE + dt.timedelta(days=2), run_conf={"model": "99", "shards": 2})
    assert str(missing.state) == "failed"
    states = _states(missing.run_id)
    assert states[("extract_scoring_snapshot", -1)] == "failed", states  # not up_for_retry
    assert _tries(missing.run_id, "extract_scoring_snapshot") == {1}
    assert {v for k, v in states.items() if k[0] == "score_shard"} <= {"upstream_failed"}
    assert time.monotonic() - started < 120
    assert _published(warehouse_url)["partitions"] == published["partitions"]
    assert sorted(p.name for p in (staging / "score").iterdir()) == runs_before  # no run folder for that date

    assert not unused.exists(), "the Airflow connection must win over SPENDPRED_WAREHOUSE_URL"


# -- failures: the CLI's error path, one line, retried only when transient ---------------------------

SECRET = "s3cret"


def _callable(task: Any) -> Any:
    """The task's Python function (a mapped task keeps it in its partial kwargs)."""
    return getattr(task, "python_callable", None) or task.partial_kwargs["python_callable"]


def test_every_task_runs_inside_the_one_line_wrapper(dags: dict[str, Any]) -> None:
    for dag in dags.values():
        for task in dag.tasks:
            assert getattr(_callable(task), "spendpred_one_line", False), f"{dag.dag_id}.{task.task_id}"


def _settings_error() -> None:
    get_settings()  # SPENDPRED_HORIZON_DAYS=0 in the environment: pydantic's 20-line error


def _refused_warehouse() -> None:
    with warehouse.opened_engine(f"postgresql://scorer:{SECRET}@127.0.0.1:1/w") as engine, engine.connect():
        pass


def _wrong_password() -> None:
    raise sa.exc.OperationalError("SELECT 1", {}, Exception('FATAL:  password authentication failed for user "scorer"'))


def _disk_full() -> None:
    raise OSError(28, "No space left on device", "/staging/score/2024-06-30/snapshot/.snapshot.parquet.tmp")


def _read_only_staging() -> None:
    raise PermissionError(13, "Permission denied", "/staging/score")


@pytest.mark.parametrize(
    ("fail", "line", "retried"),
    [
        (_settings_error, "SPENDPRED_HORIZON_DAYS=0 is out of range: use a whole number in 1..", False),
        (_refused_warehouse, "cannot connect to the warehouse postgresql+psycopg2://scorer:***@127.0.0.1:1/w", True),
        (_wrong_password, "password authentication failed", False),
        (_disk_full, "cannot use /staging/score/2024-06-30/snapshot/.snapshot.parquet.tmp: No space left on device", True),
        (_read_only_staging, "cannot use /staging/score: Permission denied", False),
    ],
    ids=["invalid-setting", "warehouse-unreachable", "wrong-password", "disk-full", "read-only-staging"],
)
def test_a_task_fails_with_one_line_and_retries_only_transient_causes(
    dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fail: Any, line: str, retried: bool
) -> None:
    """The task body as Airflow calls it, with the step failing the way a library fails."""
    from airflow.sdk import RetryAction

    from spendpred.errors import SpendpredError, TransientError

    if fail is _settings_error:
        monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "0")
    monkeypatch.setattr(pipeline, "validate_snapshot", lambda snapshot: fail())
    for dag in dags.values():
        task = dag.get_task("validate_snapshot")
        with pytest.raises(SpendpredError) as info:
            _callable(task)({"kind": "score", "as_of": "2024-06-30", "root": "/staging"})
        message = str(info.value)
        assert message.startswith(line) or line in message, message
        assert "\n" not in message and SECRET not in message
        assert info.value.__suppress_context__  # the task log shows the line, not the library's traceback
        assert isinstance(info.value, TransientError) is retried
        retry = dag.get_task("extract_scoring_snapshot" if "scoring" in dag.dag_id else "extract_training_snapshot")
        action = retry.retry_policy.evaluate(info.value, 1, 4).action
        assert action == (RetryAction.DEFAULT if retried else RetryAction.FAIL), (message, action)


def test_a_missing_sqlite_warehouse_fails_the_first_task_at_once_and_creates_nothing(
    airflow_db: Path, dags: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real run: the first task refuses a mistyped warehouse path as the CLI does, with one line, no retry."""
    home = tmp_path / "var"
    missing = tmp_path / "typo" / "warehouse.db"
    monkeypatch.delenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", raising=False)
    monkeypatch.setenv("SPENDPRED_HOME", str(home))
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", f"sqlite:///{missing}")
    started = time.monotonic()
    run = dags["spendpred_nightly_scoring"].test(logical_date=SCORING_DUE + dt.timedelta(days=30), run_conf={"dry_run": True})
    assert str(run.state) == "failed"
    states = _states(run.run_id)
    assert states[("extract_scoring_snapshot", -1)] == "failed"  # not up_for_retry
    assert "success" not in states.values(), states
    assert _tries(run.run_id, "extract_scoring_snapshot") == {1}
    assert time.monotonic() - started < 120
    output = "".join(capfd.readouterr())
    assert f"warehouse file {missing} does not exist: run `spendpred db init`" in output
    assert list(tmp_path.iterdir()) == []  # no warehouse file, no staging folder, no MLflow store
