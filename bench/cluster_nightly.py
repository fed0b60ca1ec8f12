"""Benchmark: one nightly on the cluster (two Celery CPU workers) against `make airflow`'s single worker.

Both run the same nightly DAG, triggered through the REST API, on the same PostgreSQL
warehouse and the same champion (registered in the cluster's MLflow server), each with an
empty staging folder of its own (so both nights encode every user: no embedding cache):

1. **setup** (timed, reported apart): ``scripts/cluster.sh up`` on throwaway databases and
   ports (the production shape of ``docker-compose.yaml``: CeleryExecutor, Redis, MLflow
   server, workers cpu1 and cpu2 on the default queue, gpu on queue ``gpu``); ``spendpred seed``
   of N users (default 100,000) over 365 days; a champion trained through the CLI on a hash
   sample of ``--max-users`` users (encoder frozen, head only, 1 epoch);
2. **cluster**: the nightly with ``--shards`` shards (default 2, one per CPU worker);
3. **standalone**: the cluster's Airflow components are stopped (its MLflow server stays, as the
   registry), and ``airflow standalone`` runs with ``scripts/airflow-env.sh``'s settings (what
   ``make airflow`` does: LocalExecutor, one task slot on two cores, each task with every core's
   threads), on the same warehouse; the nightly with 1 shard (the single-machine default).

It prints each run's wall time (the DAG run's start to end, as Airflow records it), each task's
duration, the ratio of the two, and whether both published the same rows (they must: scores
do not depend on sharding). Plain public tools: Airflow's REST API, PostgreSQL, ``time``.

    .venv/bin/python bench/cluster_nightly.py --encoder tiny              # 100,000 users (~15 min)
    .venv/bin/python bench/cluster_nightly.py --users 5000 --encoder tiny  # a quick look
    .venv/bin/python bench/cluster_nightly.py --users 20000               # MiniLM (scoring dominates)

``--encoder tiny`` builds a tiny random BERT (``spendpred.model.tiny``), so scoring costs little
and the figures show what the orchestration itself costs and saves; without it the product
default encoder (MiniLM) is used. Admin URL: ``SPENDPRED_BENCH_PG_URL`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
SCRIPT = REPO / "scripts" / "cluster.sh"
NIGHTLY = "spendpred_nightly_scoring"
ADMIN_URL = os.environ.get("SPENDPRED_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    "HOME": os.environ.get("HOME", "/tmp"),
    "LANG": "C.UTF-8",
    "TQDM_DISABLE": "1",
    "NO_COLOR": "1",
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the triggered runs
}


def free_port(count: int = 1) -> int:
    """A free port on 127.0.0.1 followed by ``count - 1`` free ones."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        ok = True
        for port in range(base, base + count):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise SystemExit("no free ports")


def run(command: list[str], env: dict[str, str], what: str, timeout: float = 7200) -> float:
    """Run ``command``; return its wall time; exit with its output when it fails."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def client(base: str, user: str, password: str) -> httpx.Client:
    """A REST client logged in as ``user``, once the API server answers."""
    api = httpx.Client(base_url=base, trust_env=False, timeout=60.0)
    deadline = time.monotonic() + 300
    while True:
        try:
            response = api.post("/auth/token", json={"username": user, "password": password})
            if response.status_code == 201:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no token from {base}")
        time.sleep(2)
    api.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return api


def nightly(api: httpx.Client, as_of: dt.date, shards: int, timeout: float) -> dict[str, Any]:
    """Trigger the nightly, wait for it, return its wall time and task durations."""
    deadline = time.monotonic() + 300
    while NIGHTLY not in {d["dag_id"] for d in api.get("/api/v2/dags").json().get("dags", [])}:
        if time.monotonic() > deadline:
            raise SystemExit("the nightly DAG was never parsed")
        time.sleep(2)
    api.patch(f"/api/v2/dags/{NIGHTLY}", json={"is_paused": False}).raise_for_status()
    response = api.post(f"/api/v2/dags/{NIGHTLY}/dagRuns", json={"logical_date": None, "conf": {"as_of": as_of.isoformat(), "shards": shards}})
    response.raise_for_status()
    run_id = response.json()["dag_run_id"]
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}").json()
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the nightly did not finish within {timeout:.0f} s")
        time.sleep(3)
    tasks = api.get(f"/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances", params={"limit": 200}).json()["task_instances"]
    if run["state"] != "success":
        failed = [t for t in tasks if t["state"] == "failed"]
        logs = "".join(
            api.get(f"/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances/{t['task_id']}/logs/{t['try_number']}",
                    params={"map_index": t["map_index"]}, headers={"Accept": "text/plain"}).text[-3000:]
            for t in failed
        )  # fmt: skip
        raise SystemExit(f"the nightly failed: {[(t['task_id'], t['map_index'], t['state']) for t in tasks]}\n{logs}")
    start = dt.datetime.fromisoformat(run["start_date"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(run["end_date"].replace("Z", "+00:00"))
    durations: dict[str, list[float]] = {}
    for task in tasks:
        durations.setdefault(task["task_id"], []).append(float(task["duration"] or 0.0))
    return {"wall_s": (end - start).total_seconds(), "tasks": durations}


def admin_password(path: Path) -> str | None:
    """The admin password `airflow standalone` generated, once the file holds it (it may exist empty first)."""
    try:
        return str(json.loads(path.read_text())["admin"])
    except (OSError, ValueError, KeyError):
        return None


def partition(url: str, as_of: dt.date) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT user_id, predicted_spend, tier FROM spendpred.user_spend_scores WHERE as_of = :d ORDER BY user_id"
            ), {"d": as_of})]  # fmt: skip
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--max-users", type=int, default=2000, help="training sample of the champion")
    parser.add_argument("--shards", type=int, default=2, help="shards of the cluster's nightly")
    parser.add_argument("--encoder", default=None, help="'tiny', a checkpoint folder, or the product default")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2024, 6, 30))
    parser.add_argument("--timeout", type=float, default=5400.0, help="seconds each nightly may take")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.users < 100 or args.max_users < 100 or not 1 <= args.shards <= 64:
        parser.error("--users and --max-users must be at least 100, --shards in 1..64")

    tmp = Path(tempfile.mkdtemp(prefix="spendpred-cluster-bench-"))
    tag = f"spb_{uuid.uuid4().hex[:8]}"
    dbs = {name: f"{tag}_{name}" for name in ("airflow", "warehouse", "mlflow")}
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    env = {**BASE_ENV, "VENV": str(VENV), "SPENDPRED_CLUSTER_HOME": str(tmp / "cluster"),
           "AIRFLOW_DB_NAME": dbs["airflow"], "WAREHOUSE_DB": dbs["warehouse"], "MLFLOW_DB_NAME": dbs["mlflow"],
           "REDIS_DB": "11", "MLFLOW_SERVER_PORT": str(free_port()), "AIRFLOW_API_SERVER_PORT": str(free_port()),
           "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
           "SPENDPRED_CLUSTER_LOG_PORT": str(free_port(3)), "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW_ADMIN_PASSWORD": "bench-admin-" + uuid.uuid4().hex[:8]}  # fmt: skip
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        env["SPENDPRED_ENCODER_DIR"] = str(make_tiny_bert(tmp / "tiny-bert"))
    elif args.encoder:
        env["SPENDPRED_ENCODER_DIR"] = str(Path(args.encoder).resolve())
    setup: dict[str, float] = {}
    standalone: subprocess.Popen[bytes] | None = None
    try:
        setup["cluster up"] = run(["bash", str(SCRIPT), "up"], env, "cluster.sh up")
        cluster_env = dict(line.split("=", 1) for line in subprocess.run(
            ["bash", str(SCRIPT), "env"], env=env, capture_output=True, text=True, check=True).stdout.splitlines() if "=" in line)  # fmt: skip
        setup[f"seed {args.users:,} users"] = run(
            ["bash", str(SCRIPT), "exec", "spendpred", "seed", "--users", str(args.users), "--days", "365",
             "--end-date", args.as_of.isoformat(), "--seed", "42"], env, "seed")  # fmt: skip
        setup["champion (CLI train)"] = run(
            ["bash", str(SCRIPT), "exec", "spendpred", "train", "--as-of", args.as_of.isoformat(), "--epochs", "1",
             "--max-users", str(args.max_users), "--freeze", "all-but-head", "--promote", "force"], env, "train")  # fmt: skip

        api = client(f"http://127.0.0.1:{env['AIRFLOW_API_SERVER_PORT']}", "airflow", env["AIRFLOW_ADMIN_PASSWORD"])
        on_cluster = nightly(api, args.as_of, args.shards, args.timeout)
        print(f"cluster nightly: {on_cluster['wall_s']:.1f} s {json.dumps(on_cluster['tasks'])}", flush=True)
        warehouse = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dbs['warehouse']}"
        rows_cluster = partition(warehouse, args.as_of)
        api.close()
        for service in ("worker-gpu", "worker-cpu2", "worker-cpu1", "triggerer", "dag-processor", "scheduler", "apiserver"):
            run(["bash", str(SCRIPT), "stop", service], env, f"stop {service}")

        # `make airflow`: scripts/airflow-env.sh's settings, on the same warehouse and registry
        home = tmp / "standalone"
        port = free_port()
        solo_env = {**BASE_ENV, "VENV": str(VENV), "SPENDPRED_HOME": str(home),
                    "SPENDPRED_WAREHOUSE_URL": cluster_env["SPENDPRED_WAREHOUSE_URL"],
                    "SPENDPRED_MLFLOW_TRACKING_URI": cluster_env["SPENDPRED_MLFLOW_TRACKING_URI"],
                    "AIRFLOW__API__PORT": str(port), "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}  # fmt: skip
        if "SPENDPRED_ENCODER_DIR" in env:
            solo_env["SPENDPRED_ENCODER_DIR"] = env["SPENDPRED_ENCODER_DIR"]
        log = (tmp / "standalone.log").open("wb")
        standalone = subprocess.Popen(
            ["bash", "-c", f". {REPO}/scripts/airflow-env.sh && exec airflow standalone"],
            env=solo_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
        )  # fmt: skip
        password_file = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 300
        while not (password := admin_password(password_file)):
            if time.monotonic() > deadline or standalone.poll() is not None:
                raise SystemExit(f"airflow standalone did not start: see {tmp / 'standalone.log'}")
            time.sleep(2)
        api = client(f"http://127.0.0.1:{port}", "admin", password)
        single = nightly(api, args.as_of, 1, args.timeout)
        rows_single = partition(warehouse, args.as_of)
        api.close()
    finally:
        if standalone is not None:
            try:
                os.killpg(standalone.pid, signal.SIGTERM)
                standalone.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(standalone.pid, signal.SIGKILL)
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True)
        with admin.connect() as conn:
            for name in dbs.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; encoder: {args.encoder or 'product default'}")
    print("setup (not part of either night):")
    for what, seconds in setup.items():
        print(f"  {what:<28} {seconds:8.1f} s")
    print(f"\nnightly of {args.users:,} users, as of {args.as_of}, each from an empty staging folder (every user encoded):")
    names = list(on_cluster["tasks"])
    print(f"  {'task':<26} {'cluster (' + str(args.shards) + ' shards, 2 CPU workers)':>38} {'make airflow (1 shard)':>24}")
    for name in names:
        a, b = on_cluster["tasks"][name], single["tasks"].get(name, [])
        shown_a = f"{sum(a):.1f} s" + (f" ({len(a)} x, max {max(a):.1f})" if len(a) > 1 else "")
        print(f"  {name:<26} {shown_a:>38} {sum(b):>22.1f} s")
    print(f"  {'run wall time':<26} {on_cluster['wall_s']:>36.1f} s {single['wall_s']:>22.1f} s")
    print(f"\ncluster / make airflow wall time: {on_cluster['wall_s'] / single['wall_s']:.2f}x")
    same = rows_cluster == rows_single and len(rows_cluster) > 0
    print(f"published rows identical: {same} ({len(rows_cluster):,} rows)")
    if args.json:
        args.json.write_text(json.dumps({"users": args.users, "setup": setup, "cluster": on_cluster, "standalone": single, "same_rows": same}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
