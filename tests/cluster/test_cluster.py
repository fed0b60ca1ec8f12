"""The production shape for real: docker-compose.yaml's services as local processes (`make cluster-test`).

``scripts/cluster.sh`` starts, from ``docker/spendpred.env`` (the compose file's own settings),
an MLflow tracking server with a PostgreSQL store and proxied artifacts, Airflow's API server,
scheduler, DAG processor and triggerer with the CeleryExecutor, two CPU workers on the default
queue and a worker on queue ``gpu`` (pool ``gpu``), on this machine's PostgreSQL and on a Redis
this module starts (so that it can restart it). Everything lives in throwaway databases,
ports and folders. The tests run in file order on one cluster and check what a platform
engineer relies on:

1. a retrain triggered through the REST API trains on the ``gpu``-queue worker and registers
   through the MLflow server, its artifacts in the server's store and none on the workers' disk,
   the forced promotion recorded as the Airflow user who triggered it;
2. a nightly with four shards spreads them over both CPU workers, publishes the partition in
   PostgreSQL, and the Spend tiers page and its JSON answer behind the login only;
3. a CPU worker killed in the middle of a shard: the shard is retried on the other worker and
   the partition is complete and equal to the undisturbed run's;
4. the MLflow server stopped during a retrain: a task fails with one clear transient line, is
   retried, and the run succeeds once the server is back;
5. Redis restarted between two tasks: the nightly still completes.

Marked ``cluster`` (deselected by default; ``.ci/run`` runs it after the suite). About 10 minutes
on two cores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
SCRIPT = REPO / "scripts" / "cluster.sh"
PG_ADMIN_URL = os.environ.get("SPENDPRED_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
AS_OF = dt.date(2024, 6, 30)
USERS = 240
RETRAIN = "spendpred_weekly_retrain"
NIGHTLY = "spendpred_nightly_scoring"
RUN_TIMEOUT = 420.0
WORKER_LINE = re.compile(r"Executing workload in Celery: .*?log_path='dag_id=(?P<dag>[^/]+)/run_id=(?P<run>[^/]+)/task_id=(?P<task>[^/']+)(?:/map_index=(?P<index>-?\d+))?/attempt=(?P<attempt>\d+)")


def _free_port(count: int = 1) -> int:
    """A port with ``count - 1`` free ports after it (the workers' log servers take consecutive ports)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count < 65000 and all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free ports")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Cluster:
    """A running throwaway cluster: its environment, folders and REST client."""

    env: dict[str, str]
    home: Path
    api: httpx.Client
    redis_port: int
    redis: subprocess.Popen[bytes] | None = None
    warehouse_url: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    # -- processes ------------------------------------------------------------------------

    def script(self, *args: str, timeout: float = 300.0) -> str:
        result = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"cluster.sh {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def pid(self, service: str) -> int:
        return int((self.home / "run" / f"{service}.pid").read_text())

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        _wait(f"Redis on port {self.redis_port}", lambda: not _port_free(self.redis_port), 30, self)

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=30)

    def log(self, service: str) -> str:
        try:
            return (self.home / "logs" / f"{service}.log").read_text(errors="replace")
        except OSError:
            return ""

    def tails(self, lines: int = 25) -> str:
        parts = []
        for path in sorted((self.home / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- REST API -------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        response = self.api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"])

    def tasks(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list(response.json()["task_instances"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> None:
        state = _wait(
            f"{dag_id} {run_id} to finish",
            lambda: (s := self.run_state(dag_id, run_id)) in ("success", "failed") and s,
            timeout, self, interval=3.0,
        )  # fmt: skip
        if state != "success":
            summary = [(t["task_id"], t["map_index"], t["state"], t["try_number"]) for t in self.tasks(dag_id, run_id)]
            pytest.fail(f"{dag_id} {run_id} ended {state}: {summary}\n{self.tails()}")

    def executions(self, run_id: str) -> dict[str, list[tuple[str, int, int]]]:
        """Per worker service: the (task_id, map_index, attempt) of ``run_id`` its Celery log shows it executing."""
        found: dict[str, list[tuple[str, int, int]]] = {}
        for service in ("worker-cpu1", "worker-cpu2", "worker-gpu"):
            found[service] = [
                (m["task"], int(m["index"] or -1), int(m["attempt"]))
                for m in WORKER_LINE.finditer(self.log(service))
                if m["run"] == run_id
            ]
        return found

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int) -> str:
        path = self.home / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / f"attempt={attempt}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def partition(self) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.warehouse_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT user_id, predicted_spend, tier, model_version FROM spendpred.user_spend_scores "
                        "WHERE as_of = :d ORDER BY user_id"
                    ),
                    {"d": AS_OF},
                ).all()
        finally:
            engine.dispose()
        return [tuple(row) for row in rows]


def _wait(what: str, probe: Callable[[], Any], timeout: float, cluster: Cluster | None = None, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (httpx.TransportError, KeyError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{cluster.tails()}" if cluster else ""))
        time.sleep(interval)


def _admin_engine() -> sa.Engine:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        if os.environ.get("SPENDPRED_REQUIRE_POSTGRES", "") in {"1", "true", "yes"}:
            raise
        pytest.skip(f"PostgreSQL is not reachable: {exc.orig}")
    return engine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for tool in ("redis-server", "psql", "pg_isready", "curl", "setsid"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    from spendpred.model.tiny import make_tiny_bert

    admin = _admin_engine()
    tmp = tmp_path_factory.mktemp("cluster")
    tag = f"spc_{uuid.uuid4().hex[:8]}"
    databases = {name: f"{tag}_{name}" for name in ("airflow", "warehouse", "mlflow")}
    redis_port = _free_port()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",  # the script puts the venv first
        "HOME": os.environ.get("HOME", str(tmp)),
        "LANG": "C.UTF-8",
        "VENV": str(VENV),
        "SPENDPRED_CLUSTER_HOME": str(tmp / "cluster"),
        "AIRFLOW_DB_NAME": databases["airflow"],
        "WAREHOUSE_DB": databases["warehouse"],
        "MLFLOW_DB_NAME": databases["mlflow"],
        "REDIS_PORT": str(redis_port),
        "REDIS_DB": "0",
        "MLFLOW_SERVER_PORT": str(_free_port()),
        "AIRFLOW_API_SERVER_PORT": str(_free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(_free_port()),
        "SPENDPRED_CLUSTER_LOG_PORT": str(_free_port(3)),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW_ADMIN_PASSWORD": "cluster-test-admin-5e1d",
        "SPENDPRED_ENCODER_DIR": str(make_tiny_bert(tmp / "tiny-bert")),
        # only the runs this module triggers; a killed worker's task is noticed within 30 s
        # (Airflow's default is 5 minutes), a task lost with Redis is queued again within 60 s
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
        "TQDM_DISABLE": "1",
        "NO_COLOR": "1",
    }
    state = Cluster(env=env, home=tmp / "cluster", api=httpx.Client(trust_env=False, timeout=30.0), redis_port=redis_port)
    state.warehouse_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{databases['warehouse']}"
    started = time.monotonic()
    try:
        state.start_redis()
        state.script("up", timeout=600)
        state.state["startup_s"] = time.monotonic() - started
        state.script("exec", "spendpred", "seed", "--users", str(USERS), "--days", "365", "--end-date", AS_OF.isoformat(), "--seed", "7")
        base = f"http://127.0.0.1:{env['AIRFLOW_API_SERVER_PORT']}"
        state.api.base_url = httpx.URL(base)
        token = state.api.post("/auth/token", json={"username": "airflow", "password": env["AIRFLOW_ADMIN_PASSWORD"]})
        assert token.status_code == 201, token.text
        state.api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        _wait("both spendpred DAGs", lambda: {d["dag_id"] for d in state.api.get("/api/v2/dags").json()["dags"]} >= {RETRAIN, NIGHTLY}, 180, state)
        for dag_id in (RETRAIN, NIGHTLY):
            assert state.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        yield state
    finally:
        total = time.monotonic() - started
        print(f"\ncluster test: start-up {state.state.get('startup_s', 0):.0f} s, whole module {total:.0f} s")
        try:
            state.script("down", timeout=180)
        finally:
            state.stop_redis()
            state.api.close()
            with admin.connect() as conn:
                for name in databases.values():
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def test_retrain_trains_on_the_gpu_worker_and_registers_through_the_server(cluster: Cluster) -> None:
    from mlflow import MlflowClient

    run_id = cluster.trigger(RETRAIN, {"as_of": AS_OF.isoformat(), "epochs": 1, "promote": "force"})
    cluster.wait_run(RETRAIN, run_id)

    ran = cluster.executions(run_id)
    assert [task for task, _i, _a in ran["worker-gpu"]] == ["train_model"], ran
    assert all(task != "train_model" for service in ("worker-cpu1", "worker-cpu2") for task, _i, _a in ran[service])
    tasks = {t["task_id"]: t for t in cluster.tasks(RETRAIN, run_id)}
    assert tasks["train_model"]["queue"] == "gpu" and tasks["train_model"]["pool"] == "gpu"

    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{cluster.env['MLFLOW_SERVER_PORT']}")
    champion = client.get_model_version_by_alias("spendpred-regressor", "champion")
    assert champion.tags.get("promotion") == "forced", champion.tags
    assert champion.tags.get("promoted_by") == "airflow", champion.tags  # the Airflow user, not the OS user
    # the artifacts went through the server into its store, none onto a worker's disk
    store = cluster.home / "mlartifacts"
    stored = [p for p in store.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in stored) > 10_000, stored
    assert any(p.name == "bundle.json" for p in stored)
    data = cluster.home / "data"
    assert not (data / "mlartifacts").exists() and not list(data.rglob("mlruns"))
    # successful tasks print no ERROR lines (MLflow's own messages come through logging at INFO)
    register_log = cluster.task_log(RETRAIN, run_id, "evaluate_and_register", 1)
    assert "Created version" in register_log and '"level":"error"' not in register_log, register_log[-2000:]
    # no default secret collides with an identifier: nothing in the run's logs is masked
    for task in tasks:
        assert "***" not in cluster.task_log(RETRAIN, run_id, task, 1), task
    cluster.state["champion"] = champion.version


def test_nightly_spreads_four_shards_over_both_cpu_workers(cluster: Cluster) -> None:
    assert "champion" in cluster.state, "needs the retrain above"
    run_id = cluster.trigger(NIGHTLY, {"as_of": AS_OF.isoformat(), "shards": 4})
    cluster.wait_run(NIGHTLY, run_id)

    ran = cluster.executions(run_id)
    shards = {service: {i for task, i, _a in ran[service] if task == "score_shard"} for service in ran}
    assert shards["worker-cpu1"] and shards["worker-cpu2"], shards  # both CPU workers scored
    assert shards["worker-cpu1"] | shards["worker-cpu2"] == {0, 1, 2, 3} and not shards["worker-gpu"], shards

    rows = cluster.partition()
    assert len(rows) == USERS and {row[3] for row in rows} == {str(cluster.state["champion"])}
    cluster.state["undisturbed"] = rows

    base = str(cluster.api.base_url)
    with httpx.Client(base_url=base, trust_env=False, timeout=30.0) as anonymous:
        assert anonymous.get("/spendpred/summary.json").status_code == 401
        assert anonymous.get("/spendpred/", follow_redirects=False).status_code == 307
    summary = cluster.api.get("/spendpred/summary.json")
    assert summary.status_code == 200, summary.text
    assert AS_OF.isoformat() in summary.text
    page = cluster.api.get("/spendpred/")
    assert page.status_code == 200 and "Spend tiers" in page.text


def test_a_worker_killed_mid_shard_is_retried_on_the_other(cluster: Cluster) -> None:
    assert "undisturbed" in cluster.state, "needs the nightly above"
    run_id = cluster.trigger(NIGHTLY, {"as_of": AS_OF.isoformat(), "shards": 4})

    def running_shard() -> tuple[str, int] | None:
        for service, executed in cluster.executions(run_id).items():
            for task, index, _attempt in executed:
                if task == "score_shard" and service.startswith("worker-cpu"):
                    states = {t["map_index"]: t["state"] for t in cluster.tasks(NIGHTLY, run_id) if t["task_id"] == "score_shard"}
                    if states.get(index) == "running":
                        return service, index
        return None

    victim, index = _wait("a score_shard running on a CPU worker", running_shard, RUN_TIMEOUT, cluster, interval=0.5)
    time.sleep(2.0)  # in the middle of the shard
    os.killpg(cluster.pid(victim), signal.SIGKILL)
    try:
        cluster.wait_run(NIGHTLY, run_id)
    finally:
        cluster.script("start", victim)
    survivor = "worker-cpu2" if victim == "worker-cpu1" else "worker-cpu1"
    retried = [(i, a) for task, i, a in cluster.executions(run_id)[survivor] if task == "score_shard" and i == index and a > 1]
    assert retried, f"shard {index} was not retried on {survivor}: {cluster.executions(run_id)}"
    assert cluster.partition() == cluster.state["undisturbed"]  # complete and equal to the undisturbed run
    _wait(f"{victim} back", lambda: f"{victim.split('-')[1]}@" in cluster.script("exec", "celery", "--app", "airflow.providers.celery.executors.celery_executor.app", "inspect", "ping", "--timeout", "3"), 120, cluster, interval=3.0)


def test_mlflow_outage_during_a_retrain_is_retried_until_it_is_back(cluster: Cluster) -> None:
    assert "champion" in cluster.state, "needs the first retrain"
    run_id = cluster.trigger(RETRAIN, {"as_of": AS_OF.isoformat(), "epochs": 1, "promote": "auto"})
    _wait("train_model to start", lambda: any(t["task_id"] == "train_model" and t["state"] == "running" for t in cluster.tasks(RETRAIN, run_id)), RUN_TIMEOUT, cluster)
    cluster.script("stop", "mlflow")
    try:
        retrying = _wait(
            "a task waiting to retry while MLflow is down",
            lambda: next((t for t in cluster.tasks(RETRAIN, run_id) if t["state"] == "up_for_retry"), None),
            RUN_TIMEOUT, cluster, interval=2.0,
        )  # fmt: skip
    finally:
        cluster.script("start", "mlflow")
    log = cluster.task_log(RETRAIN, run_id, retrying["task_id"], int(retrying["try_number"]))
    assert "MLflow" in log and "RegistryUnavailable" in log, log[-3000:]
    cluster.wait_run(RETRAIN, run_id)
    tasks = {t["task_id"]: t for t in cluster.tasks(RETRAIN, run_id)}
    assert tasks[retrying["task_id"]]["try_number"] >= 2


def test_redis_restart_between_two_tasks(cluster: Cluster) -> None:
    assert "undisturbed" in cluster.state, "needs the first nightly"
    run_id = cluster.trigger(NIGHTLY, {"as_of": AS_OF.isoformat(), "shards": 2})
    _wait("the extract to finish", lambda: any(t["task_id"] == "extract_scoring_snapshot" and t["state"] == "success" for t in cluster.tasks(NIGHTLY, run_id)), RUN_TIMEOUT, cluster, interval=0.5)
    cluster.stop_redis()
    time.sleep(3.0)
    cluster.start_redis()
    cluster.wait_run(NIGHTLY, run_id)
    assert cluster.partition() == cluster.state["undisturbed"]
