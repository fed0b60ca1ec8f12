"""DAG integrity: every DAG file imports cleanly, is wired as documented, validates its params,
and parsing it touches no database or connection and imports nothing heavy.

Like Airflow's own ``test_example_dags.py``: the DAG folder is parsed with the DagBag the
DAG processor uses; the "parse is cheap" checks run in a fresh interpreter so that modules
imported by other tests cannot hide a heavy import.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.dags.conftest import DAGS_DIR

EXPECTED_TASKS = {
    "spendpred_weekly_retrain": [
        "extract_training_snapshot", "validate_snapshot", "train_model", "evaluate_and_register", "promote_model",
    ],
    "spendpred_nightly_scoring": [
        "extract_scoring_snapshot", "validate_snapshot", "plan_shards", "score_shard", "assign_tiers", "explain_scores", "publish_scores",
        "monitor_scores",
    ],
}  # fmt: skip
WAREHOUSE_TASKS = {"extract_training_snapshot", "extract_scoring_snapshot", "publish_scores"}
HEAVY_MODULES = ("torch", "transformers", "mlflow", "great_expectations", "sklearn", "pandas", "pyarrow")


@pytest.fixture(scope="module")
def dagbag() -> Any:
    """The repository's DAG folder parsed by the DAG processor's DagBag."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS_DIR, bundle_path=DAGS_DIR, bundle_name="dags-folder")


@pytest.fixture(scope="module")
def scheduler_dags(dagbag: Any) -> dict[str, Any]:
    """The DAGs as the scheduler and the API server see them (serialised and restored).

    Creating a run, from the UI, the REST API or ``dag.test()``, validates the run's conf
    against these params before anything is stored.
    """
    from airflow.serialization.serialized_objects import DagSerialization

    return {
        dag_id: DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        for dag_id, dag in dagbag.dags.items()
    }


@pytest.fixture(scope="module")
def common() -> Any:
    """The DAGs' shared helper module (importable once the DAG folder is on sys.path)."""
    if str(DAGS_DIR) not in sys.path:
        sys.path.append(str(DAGS_DIR))
    import _spendpred_common

    return _spendpred_common


def test_dag_files_import_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(EXPECTED_TASKS)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_dag_wiring(dagbag: Any, dag_id: str) -> None:
    """Task ids and their order: each task feeds the next, as in the DESIGN data flow."""
    dag = dagbag.dags[dag_id]
    tasks = EXPECTED_TASKS[dag_id]
    assert sorted(dag.task_ids) == sorted(tasks)
    for upstream, downstream in zip(tasks, tasks[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids, f"{upstream} -> {downstream}"
    assert not dag.get_task(tasks[0]).upstream_task_ids


def test_schedules_tags_docs_and_catchup(dagbag: Any) -> None:
    retrain = dagbag.dags["spendpred_weekly_retrain"]
    scoring = dagbag.dags["spendpred_nightly_scoring"]
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    # the retrain: its weekly cron or the nightly monitoring's retrain request (issue 24, item 4)
    assert isinstance(retrain.timetable, AssetOrTimeSchedule) and isinstance(scoring.timetable, CronTriggerTimetable)
    assert isinstance(retrain.timetable.timetable, CronTriggerTimetable)
    assert retrain.timetable.timetable.expression == "0 0 * * 0"  # @weekly: Sunday 00:00 UTC
    assert retrain.timetable.asset_condition.uri == "spendpred://monitoring/spendpred-regressor/retrain-request"
    assert scoring.timetable.expression == "0 2 * * *"
    for dag in (retrain, scoring):
        assert dag.catchup is False
        assert dag.max_active_runs == 1
        assert "spendpred" in dag.tags
        assert dag.doc_md and dag.dag_id.replace("spendpred_", "").replace("_", " ") in dag.doc_md.lower()
        assert dag.start_date == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert {"training", "mlflow"} <= set(retrain.tags)
    assert "scoring" in scoring.tags


def test_retries_with_backoff_on_warehouse_tasks(dagbag: Any) -> None:
    """Warehouse tasks retry with exponential backoff; a failed validation or bad input fails at once."""
    from airflow.sdk import RetryAction

    from spendpred.errors import (
        ConfigError,
        DataError,
        ModelError,
        PublishError,
        PublishInterrupted,
        RegistryUnavailable,
        ValidationFailed,
    )

    seen = set()
    for dag_id in EXPECTED_TASKS:
        for task in dagbag.dags[dag_id].tasks:
            if task.task_id in WAREHOUSE_TASKS:
                seen.add(task.task_id)
                assert task.retries >= 2, task.task_id
                assert task.retry_exponential_backoff >= 2.0
                assert task.max_retry_delay == dt.timedelta(minutes=10)
            if task.task_id == "validate_snapshot":
                # retried only when it never ran (broker down, worker lost): the gate's verdict fails at once
                assert task.retries >= 2
            policy = task.retry_policy
            permanent = (ConfigError("x"), ValidationFailed("x"), DataError("x"), ModelError("no version 99"), PublishError("x"))
            for error in permanent:
                assert policy.evaluate(error, 1, 4).action == RetryAction.FAIL, (task.task_id, error)
            for error in (PublishInterrupted("x"), RegistryUnavailable("x"), OSError("connection reset")):
                assert policy.evaluate(error, 1, 4).action == RetryAction.DEFAULT
    assert seen == WAREHOUSE_TASKS


def test_mapped_scoring_and_training_resources(dagbag: Any) -> None:
    scoring = dagbag.dags["spendpred_nightly_scoring"]
    shard = scoring.get_task("score_shard")
    assert type(shard).__name__.endswith("MappedOperator")
    checked = shard.partial_kwargs["op_kwargs"]["checked"]  # the run's checked params, never the raw {{ params.model }}
    assert list(shard.partial_kwargs["op_kwargs"]) == ["checked"]
    assert (checked.operator.task_id, checked.key) == ("extract_scoring_snapshot", "run_params")
    train = dagbag.dags["spendpred_weekly_retrain"].get_task("train_model")
    assert train.pool == "default_pool" and train.queue == "default"  # runs anywhere without set-up


def test_the_nightly_outranks_the_retrain_for_a_free_slot(dagbag: Any, scheduler_dags: dict[str, Any], common: Any) -> None:
    """Issue 22: on make airflow's single slot an unpaused retrain blocked the night. Every nightly task now
    outranks every retrain task (absolute weights, also after serialisation), so a queued night goes first."""
    from airflow.task.priority_strategy import _AbsolutePriorityWeightStrategy

    weights: dict[str, set[int]] = {}
    for dag_id in EXPECTED_TASKS:
        for task in dagbag.dags[dag_id].tasks:
            assert task.weight_rule == "absolute", (dag_id, task.task_id, task.weight_rule)
            weights.setdefault(dag_id, set()).add(task.priority_weight)
        for task in scheduler_dags[dag_id].tasks:  # what the scheduler orders queued tasks by
            assert isinstance(task.weight_rule, _AbsolutePriorityWeightStrategy), (dag_id, task.task_id)
            assert task.priority_weight in weights[dag_id], (dag_id, task.task_id)
    assert weights["spendpred_nightly_scoring"] == {common.NIGHTLY_PRIORITY}  # absolute: not summed downstream
    assert weights["spendpred_weekly_retrain"] == {common.RETRAIN_PRIORITY}
    assert min(weights["spendpred_nightly_scoring"]) > max(weights["spendpred_weekly_retrain"])


def test_last_tasks_produce_the_assets(dagbag: Any) -> None:
    promote = dagbag.dags["spendpred_weekly_retrain"].get_task("promote_model")
    publish = dagbag.dags["spendpred_nightly_scoring"].get_task("publish_scores")
    assert [o.uri for o in promote.outlets] == ["spendpred://models/spendpred-regressor/champion"]
    assert [o.uri for o in publish.outlets] == ["spendpred://warehouse/spendpred/user_spend_scores"]
    assert not promote.downstream_task_ids and publish.downstream_task_ids == {"monitor_scores"}


def test_dags_serialise(dagbag: Any, scheduler_dags: dict[str, Any]) -> None:
    """The DAG processor stores DAGs serialised: default args, params and retries must round-trip."""
    for dag_id in EXPECTED_TASKS:
        restored = scheduler_dags[dag_id]
        assert restored.params.dump() == dagbag.dags[dag_id].params.dump()
        assert restored.get_task(EXPECTED_TASKS[dag_id][0]).retries == 3
        assert restored.get_task("validate_snapshot").retries == 3


# -- params -----------------------------------------------------------------------------------


def test_param_defaults_are_valid(dagbag: Any) -> None:
    scoring = dagbag.dags["spendpred_nightly_scoring"].params.validate()
    retrain = dagbag.dags["spendpred_weekly_retrain"].params.validate()
    assert scoring == {"as_of": None, "dry_run": False, "model": "champion", "shards": 1}
    assert retrain == {
        "as_of": None, "horizon": None, "dry_run": False, "epochs": None, "max_users": None,
        "freeze": None, "loss": None, "promote": "auto", "device": "auto",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [
        ("spendpred_weekly_retrain", {"as_of": "2024-06-30", "horizon": 30, "epochs": 2, "max_users": 500,
                                      "freeze": "bottom-k:4", "loss": "ziln", "promote": "never", "device": "cpu"}),
        ("spendpred_weekly_retrain", {"freeze": "all-but-head", "loss": None}),
        ("spendpred_nightly_scoring", {"as_of": "2024-06-30", "model": "12", "shards": 64, "dry_run": True}),
        ("spendpred_nightly_scoring", {"model": "challenger"}),
        ("spendpred_weekly_retrain", {"horizon": 3650, "max_users": 100, "promote": "force"}),
    ],
)  # fmt: skip
def test_valid_confs_pass(scheduler_dags: dict[str, Any], dag_id: str, conf: dict[str, Any]) -> None:
    resolved = scheduler_dags[dag_id].params.deep_merge(conf).validate()
    assert {k: resolved[k] for k in conf} == conf


@pytest.mark.parametrize(
    ("dag_id", "conf", "param"),
    [
        ("spendpred_nightly_scoring", {"shards": 0}, "shards"),
        ("spendpred_nightly_scoring", {"shards": 65}, "shards"),
        ("spendpred_nightly_scoring", {"model": "latest"}, "model"),
        ("spendpred_nightly_scoring", {"as_of": "30/06/2024"}, "as_of"),
        ("spendpred_nightly_scoring", {"as_of": "2024-6-30"}, "as_of"),
        ("spendpred_nightly_scoring", {"as_of": "2024-02-30"}, "as_of"),
        ("spendpred_nightly_scoring", {"dry_run": "yes"}, "dry_run"),
        ("spendpred_weekly_retrain", {"epochs": 101}, "epochs"),
        ("spendpred_weekly_retrain", {"max_users": 10}, "max_users"),
        ("spendpred_weekly_retrain", {"horizon": 0}, "horizon"),
        ("spendpred_weekly_retrain", {"freeze": "bottom-k"}, "freeze"),
        ("spendpred_weekly_retrain", {"freeze": "top-k:2"}, "freeze"),
        ("spendpred_weekly_retrain", {"loss": "mae"}, "loss"),
        ("spendpred_weekly_retrain", {"promote": "always"}, "promote"),
        ("spendpred_weekly_retrain", {"horizon": 3651}, "horizon"),
    ],
)
def test_invalid_confs_are_refused(scheduler_dags: dict[str, Any], dag_id: str, conf: dict[str, Any], param: str) -> None:
    from airflow.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=f"param {param}"):
        scheduler_dags[dag_id].params.deep_merge(conf).validate()


def test_invalid_conf_refused_before_the_run_is_created(airflow_db: Path, dagbag: Any) -> None:
    """Triggering with a bad conf fails at run creation: no DAG run, no task instance, no work."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.utils.session import create_session

    dag = dagbag.dags["spendpred_nightly_scoring"]
    with pytest.raises(ParamValidationError, match="shards: 0 is less than the minimum of 1"):
        dag.test(logical_date=dt.datetime(2024, 7, 1, 2, tzinfo=dt.UTC), run_conf={"shards": 0})
    with create_session() as session:
        assert session.query(DagRun).filter(DagRun.dag_id == dag.dag_id).count() == 0
        assert session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id).count() == 0


def test_checked_params_refuses_what_the_schema_cannot(common: Any) -> None:
    from spendpred.errors import ConfigError
    from spendpred.params import ScoreParams, TrainParams

    checked = common.checked_params({"as_of": "2024-02-29", "promote": "force", "dry_run": False}, TrainParams)
    assert (checked.as_of, checked.promote, checked.promote_mode) == (dt.date(2024, 2, 29), "force", "force")
    assert common.checked_params({"dry_run": True}, TrainParams).promote_mode == "never"
    with pytest.raises(ConfigError, match="as_of='2024-02-30' is not a date: use YYYY-MM-DD"):
        common.checked_params({"as_of": "2024-02-30"}, ScoreParams)
    with pytest.raises(ConfigError, match="promote='force' and dry_run=true"):
        common.checked_params({"promote": "force", "dry_run": True}, TrainParams)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_params_are_generated_from_the_one_spec(dagbag: Any, dag_id: str) -> None:
    """Names, order, types, ranges, choices, patterns, defaults, titles and descriptions: all from spendpred.params."""
    from spendpred.params import ScoreParams, TrainParams, param_specs

    spec = {"spendpred_nightly_scoring": ScoreParams, "spendpred_weekly_retrain": TrainParams}[dag_id]
    params = dagbag.dags[dag_id].params
    fields = param_specs(spec)
    assert list(params) == list(fields)
    for name, field in fields.items():
        param = params.get_param(name)
        assert param.schema == {**field.schema, "title": field.title}, name
        assert param.description == field.description, name
        assert param.value == field.default, name
    assert params.get_param("as_of").schema["format"] == "date"  # the trigger form offers a date picker


def test_shards_default_comes_from_the_environment(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from spendpred.errors import ConfigError
    from spendpred.params import MAX_SHARDS

    for value, expected in (("8", 8), (str(MAX_SHARDS), MAX_SHARDS), (" 2 ", 2), ("", 1)):
        monkeypatch.setenv("SPENDPRED_SHARDS", value)
        assert common.scoring_params()["shards"].value == expected, value
    assert common.scoring_params()["shards"].schema["maximum"] == MAX_SHARDS
    for value in (str(MAX_SHARDS + 1), "0", "x", "-1", "²", "2.0"):
        monkeypatch.setenv("SPENDPRED_SHARDS", value)
        with pytest.raises(ConfigError, match=rf"^SPENDPRED_SHARDS='.*' is not valid: use a whole number in 1..{MAX_SHARDS}"):
            common.scoring_params()


@pytest.mark.parametrize("value", ["0", "abc", "1000", "x" * 100_000])
def test_an_invalid_shards_setting_fails_the_nightly_import_in_one_line(tmp_path: Path, value: str) -> None:
    """``SPENDPRED_SHARDS`` is read when the nightly DAG file is parsed: a bad value is an import error naming it
    (shown in the UI), never one shard in silence; the retraining DAG, which does not read it, still imports."""
    report = _parse_in_fresh_interpreter(tmp_path, SPENDPRED_SHARDS=value)
    assert report["dag_ids"] == ["spendpred_weekly_retrain"]
    (path, error), = report["errors"].items()
    assert path.endswith("spendpred_nightly_scoring.py")
    line = next(ln for ln in error.splitlines() if "SPENDPRED_SHARDS=" in ln)
    assert "is not valid: use a whole number in 1..64" in line and len(line) < 200, line
    assert "x" * 100 not in error


def test_unknown_conf_key_is_refused_by_the_first_task(common: Any, scheduler_dags: dict[str, Any]) -> None:
    """Airflow keeps unknown conf keys (a param without a schema), so the first task must refuse them."""
    from spendpred.errors import ConfigError
    from spendpred.params import ScoreParams, TrainParams

    conf = {"as_of_date": "2024-06-30"}
    resolved = scheduler_dags["spendpred_nightly_scoring"].params.deep_merge(conf).validate()
    assert resolved["as_of_date"] == "2024-06-30" and resolved["as_of"] is None  # Airflow alone would score another day
    message = r"unknown param 'as_of_date' \(did you mean as_of\?\): use one of as_of, dry_run, model, shards"
    with pytest.raises(ConfigError, match=message):
        common.checked_params(resolved, ScoreParams)
    with pytest.raises(ConfigError, match="unknown param 'shards'.*use one of as_of, dry_run, horizon"):
        common.checked_params({**scheduler_dags["spendpred_weekly_retrain"].params.validate(), "shards": 2}, TrainParams)


def test_unknown_conf_key_fails_the_run_before_anything_is_written(
    airflow_db: Path, dagbag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A run triggered with the CLI's old ``horizon_days`` fails in its first task, which reads and writes nothing."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv("SPENDPRED_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("SPENDPRED_STAGING_DIR", str(tmp_path / "var" / "staging"))
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'warehouse.db'}")
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    dag = dagbag.dags["spendpred_weekly_retrain"]
    run = dag.test(logical_date=dt.datetime(2024, 7, 7, tzinfo=dt.UTC), run_conf={"horizon_days": 30})
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["extract_training_snapshot"] == TaskInstanceState.FAILED
    assert all(state != TaskInstanceState.SUCCESS for state in states.values()), states
    assert "unknown param 'horizon_days' (did you mean horizon?)" in "".join(capfd.readouterr())
    assert list(tmp_path.iterdir()) == []  # no staging folder, warehouse or MLflow store


# -- run date and warehouse URL ---------------------------------------------------------------


def test_run_date_comes_from_the_run_not_the_clock(common: Any) -> None:
    from spendpred.errors import ConfigError
    from spendpred.params import ScoreParams, check_score

    unset = ScoreParams()
    nightly = dt.datetime(2024, 7, 1, 2, tzinfo=dt.UTC)
    assert common.run_date({"data_interval_end": nightly, "logical_date": nightly}, unset) == dt.date(2024, 6, 30)
    assert common.run_date({"logical_date": dt.datetime(2024, 7, 7, tzinfo=dt.UTC)}, unset) == dt.date(2024, 7, 6)
    run = SimpleNamespace(run_after=dt.datetime(2024, 3, 1, 9, tzinfo=dt.UTC))
    assert common.run_date({"data_interval_end": None, "logical_date": None, "dag_run": run}, unset) == dt.date(2024, 2, 29)
    assert common.run_date({"data_interval_end": nightly}, check_score(as_of="2023-12-31")) == dt.date(2023, 12, 31)
    with pytest.raises(ConfigError, match="trigger it with the as_of param"):
        common.run_date({"dag_run": SimpleNamespace(run_after=None)}, unset)


def test_the_first_task_checks_once_and_later_tasks_rebuild_the_checked_params(common: Any) -> None:
    """The first task checks the raw params and pushes the checked object (its run date fixed);
    later tasks rebuild that object from the XCom, so they never see an unchecked value."""
    from spendpred.params import ScoreParams, TrainParams

    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))
    raw = {"as_of": None, "dry_run": True, "horizon": 30, "epochs": None, "max_users": None, "freeze": "bottom-k:2",
           "loss": "huber", "promote": "auto", "device": "cpu"}  # fmt: skip
    context = {"params": raw, "ti": ti, "data_interval_end": dt.datetime(2024, 7, 7, tzinfo=dt.UTC)}
    params = common.first_params(context, TrainParams)
    assert params.as_of == dt.date(2024, 7, 6) and params.promote_mode == "never"  # the run date travels with them
    assert json.loads(json.dumps(pushed[common.PARAMS_KEY])) == pushed[common.PARAMS_KEY]  # plain JSON in XCom
    assert pushed[common.PARAMS_KEY]["as_of"] == "2024-07-06"
    rebuilt = common.run_params(pushed[common.PARAMS_KEY], TrainParams)
    assert rebuilt == params and isinstance(rebuilt.as_of, dt.date)
    scoring = common.first_params({**context, "params": {"as_of": "2024-06-30", "model": 3, "shards": 2}}, ScoreParams)
    assert common.run_params(pushed[common.PARAMS_KEY], ScoreParams) == scoring and scoring.model == "3"


@pytest.mark.parametrize("dag_file", ["spendpred_weekly_retrain.py", "spendpred_nightly_scoring.py"])
def test_no_task_reads_the_raw_params(dag_file: str) -> None:
    """Only ``first_params`` (in the first task) reads ``context["params"]``; no task renders ``{{ params.* }}``."""
    source = (DAGS_DIR / dag_file).read_text(encoding="utf-8")
    assert '["params"]' not in source and "{{ params." not in source and "checked_params(" not in source
    assert source.count("first_params(") == 1


def test_sqlalchemy_url_from_connection_fields() -> None:
    from spendpred.errors import ConfigError
    from spendpred.warehouse import url_from_connection

    url = url_from_connection("postgres", "db.internal", "scorer", "p@ss:word", 5433, "warehouse", {"sslmode": "require"})
    assert url == "postgresql+psycopg2://scorer:p%40ss%3Aword@db.internal:5433/warehouse?sslmode=require"
    assert url_from_connection("postgresql", "h", schema="w") == "postgresql+psycopg2://h/w"
    assert url_from_connection("sqlite", "/data/wh.db") == "sqlite:////data/wh.db"
    assert url_from_connection("sqlite", "", schema="/data/wh.db") == "sqlite:////data/wh.db"
    assert url_from_connection("generic", None, extra={"sqlalchemy_url": "sqlite:///x.db"}) == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="use a postgres or sqlite connection"):
        url_from_connection("mysql", "h")
    with pytest.raises(ConfigError, match="database file path"):
        url_from_connection("sqlite", None)


def test_train_pool_and_queue_from_environment(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPENDPRED_TRAIN_POOL", raising=False)
    monkeypatch.delenv("SPENDPRED_TRAIN_QUEUE", raising=False)
    monkeypatch.delenv("SPENDPRED_SCORE_QUEUE", raising=False)
    assert common.train_task_kwargs() == {"pool": "default_pool"}
    assert common.score_task_kwargs() == {}
    monkeypatch.setenv("SPENDPRED_TRAIN_POOL", "gpu")
    monkeypatch.setenv("SPENDPRED_TRAIN_QUEUE", "gpu")
    monkeypatch.setenv("SPENDPRED_SCORE_QUEUE", " ")
    assert common.train_task_kwargs() == {"pool": "gpu", "queue": "gpu"}
    assert common.score_task_kwargs() == {}


# -- parse-time cost --------------------------------------------------------------------------

_PARSE_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import sqlalchemy
    from sqlalchemy.pool import Pool

    connects = []
    sqlalchemy.event.listen(Pool, "connect", lambda dbapi_conn, record: connects.append(repr(dbapi_conn)))

    import airflow.sdk
    from airflow.sdk import BaseHook, Connection

    lookups = []
    def refuse(*args, **kwargs):
        lookups.append(repr(args))
        raise RuntimeError("connection lookup at parse time")
    Connection.get = classmethod(refuse)
    BaseHook.get_connection = classmethod(refuse)

    from airflow.dag_processing.dagbag import BundleDagBag
    dags = Path(sys.argv[1])
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
    print(json.dumps({
        "dag_ids": sorted(bag.dag_ids),
        "errors": {k: str(v) for k, v in bag.import_errors.items()},
        "connects": connects,
        "lookups": lookups,
        "modules": sorted({m if m.startswith("spendpred.") else m.split(".")[0]
                            for m in sys.modules if m.split(".")[0] in {heavy} or m.startswith("spendpred.")}),
        "queue": bag.dags["spendpred_weekly_retrain"].get_task("train_model").queue,
        "pool": bag.dags["spendpred_weekly_retrain"].get_task("train_model").pool,
    }))
    """
).replace("{heavy}", repr(set(HEAVY_MODULES)))


def _parse_in_fresh_interpreter(tmp_path: Path, **env: str) -> dict[str, Any]:
    environment = {
        **os.environ,
        # any metadata DB access would fail loudly: the folder does not exist
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'absent' / 'airflow.db'}",
        "SPENDPRED_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "SPENDPRED_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SPENDPRED_HOME": str(tmp_path / "var"),
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(DAGS_DIR)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_parsing_touches_no_database_connection_or_heavy_module(tmp_path: Path) -> None:
    report = _parse_in_fresh_interpreter(tmp_path)
    assert report["dag_ids"] == sorted(EXPECTED_TASKS)
    assert report["errors"] == {}
    assert report["connects"] == [], "a DAG file opened a database connection while being parsed"
    assert report["lookups"] == [], "a DAG file looked up an Airflow connection while being parsed"
    assert report["modules"] == ["spendpred.errors", "spendpred.failures", "spendpred.masking", "spendpred.params"], (
        "parsing imported more than the errors, the error path (no settings, no warehouse) and the param spec"
    )
    assert not (tmp_path / "warehouse.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "var").exists() and not (tmp_path / "absent").exists()


def test_gpu_queue_and_pool_are_configurable_at_parse_time(tmp_path: Path) -> None:
    report = _parse_in_fresh_interpreter(tmp_path, SPENDPRED_TRAIN_POOL="gpu", SPENDPRED_TRAIN_QUEUE="gpu")
    assert (report["pool"], report["queue"]) == ("gpu", "gpu")


def test_a_forced_promotion_is_recorded_as_the_triggering_airflow_user(common: Any) -> None:
    assert common.triggering_user({"dag_run": SimpleNamespace(triggering_user_name="alice")}) == "alice"
    assert common.triggering_user({"dag_run": SimpleNamespace(triggering_user_name=None)}) == common.SCHEDULED_ACTOR
    assert common.triggering_user({}) == "airflow scheduler"  # never the OS user the worker runs as
