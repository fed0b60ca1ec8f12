"""`make airflow` for real: Airflow standalone started from a plain shell, used through its REST API.

The command is the Makefile's own target, run with a clean environment: a PATH without the
virtual environment (``airflow standalone`` starts its components as ``airflow`` from PATH,
so this checks that the target puts the venv first), a temporary ``SPENDPRED_HOME`` (so
``AIRFLOW_HOME`` and the warehouse live under ``tmp_path``, never in ``var/``) and free ports
for the API server and the two log servers. The test then checks what the README promises:

* the API server answers on 127.0.0.1 and listens on the loopback interface only;
* login is on: anonymous requests get 401, ``POST /auth/token`` with the admin password from
  the generated password file gives a token; that file is readable by its owner only (0600);
* both spendpred DAGs are listed; unpausing and triggering ``spendpred_nightly_scoring`` with
  ``{"as_of": D, "dry_run": true}`` creates a run that the scheduler and the LocalExecutor
  carry to success (a seeded warehouse and a champion trained beforehand on a tiny random
  BERT), with ``publish_scores`` skipped because of the dry run;
* killing the process group leaves nothing listening.

Scheduled runs are switched off (``[scheduler] use_job_schedule``) so that unpausing creates
no run of its own: only the triggered run is executed. The whole test takes about 1.5-2 minutes
on two CPU cores.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
DAG_IDS = {"spendpred_nightly_scoring", "spendpred_weekly_retrain"}
NIGHTLY = "spendpred_nightly_scoring"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
AS_OF = dt.date(2024, 6, 30)

START_TIMEOUT = 180.0
RUN_TIMEOUT = 240.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: TCP_LISTEN
                found.add(address)
    return found


def _outward_ipv4() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.255", 9))
            address = str(sock.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the whole process group (make, standalone and every component), then kill."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        proc.poll()
        time.sleep(0.5)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture
def champion_warehouse(tmp_path: Path) -> dict[str, str]:
    """A seeded SQLite warehouse and an MLflow champion trained on a tiny random BERT, under tmp_path.

    Returns the environment (SPENDPRED_HOME, SPENDPRED_ENCODER_DIR) that reaches them.
    """
    from spendpred.model.tiny import make_tiny_bert

    home = tmp_path / "var"
    home.mkdir(exist_ok=True)
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": CLEAN_PATH,
        "LANG": "C.UTF-8",
        "SPENDPRED_HOME": str(home),
        "SPENDPRED_ENCODER_DIR": str(make_tiny_bert(tmp_path / "tiny-bert")),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TQDM_DISABLE": "1",
    }
    spendpred = str(VENV / "bin" / "spendpred")
    for args in (
        ["seed", "--users", "200", "--days", "365", "--end-date", AS_OF.isoformat(), "--seed", "7"],
        ["train", "--as-of", AS_OF.isoformat(), "--epochs", "1", "--promote", "force"],
    ):
        result = subprocess.run([spendpred, *args], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"spendpred {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return {"SPENDPRED_HOME": env["SPENDPRED_HOME"], "SPENDPRED_ENCODER_DIR": env["SPENDPRED_ENCODER_DIR"]}


@contextlib.contextmanager
def _make_airflow(tmp_path: Path, port: int, champion_warehouse: dict[str, str]) -> Iterator[tuple[str, Path, Path]]:
    """`make airflow` in a clean environment; yields (base URL, AIRFLOW_HOME, output log).

    Stops the whole process group on the way out, whatever happened.
    """
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    if not (VENV / "bin" / "airflow").exists():
        pytest.skip(f"no airflow executable in {VENV}/bin: run the tests with the project's virtual environment")
    log_port, trigger_log_port = _free_port(), _free_port()
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": CLEAN_PATH,  # no venv: the Makefile has to provide it
        "LANG": "C.UTF-8",
        **champion_warehouse,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the triggered run is executed
        "NO_COLOR": "1",
    }
    airflow_home = Path(champion_warehouse["SPENDPRED_HOME"]) / "airflow"
    log = tmp_path / "make-airflow.log"
    # -o: never (re)install the venv here, even when its stamp is older than the requirements
    command = [make, "-C", str(REPO), "-o", f"{VENV}/.installed", f"VENV={VENV}", "airflow"]
    with log.open("wb") as out:
        # umask 022, as on most desktops: the password file must still be 0600
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, umask=0o022)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=base, trust_env=False, timeout=5.0) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"`make airflow` exited with {proc.returncode} before answering:\n{_tail(log)}")
                try:
                    if client.get("/api/v2/monitor/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer on {base}/api/v2/monitor/health after {START_TIMEOUT:.0f} s:\n{_tail(log)}")
                time.sleep(1.0)
        yield base, airflow_home, log
    finally:
        _stop(proc)


def _wait_for(what: str, probe, timeout: float, log: Path, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{_tail(log)}")
        time.sleep(interval)


def test_make_airflow_serves_the_dags_on_localhost_with_login(tmp_path: Path, champion_warehouse: dict[str, str]) -> None:
    port = _free_port()
    with _make_airflow(tmp_path, port, champion_warehouse) as (base, airflow_home, log):
        _check_running_airflow(base, port, airflow_home, log)
    # the process group is gone: nothing answers any more
    assert not _port_open("127.0.0.1", port), f"port {port} still open after stopping `make airflow`"
    assert not _listen_addresses(port)


def _check_running_airflow(base: str, port: int, airflow_home: Path, log: Path) -> None:

    # -- bound to the loopback interface only ---------------------------------------------
    assert f"Airflow UI: http://127.0.0.1:{port}" in log.read_text(errors="replace")
    addresses = _listen_addresses(port)
    if addresses:  # Linux: 0100007F is 127.0.0.1 (0.0.0.0 would be 00000000)
        assert addresses == {"0100007F"}, f"port {port} listens on {addresses}, not 127.0.0.1 only"
    outward = _outward_ipv4()
    if outward:
        assert not _port_open(outward, port), f"the API server answers on {outward}:{port}"

    with httpx.Client(base_url=base, trust_env=False, timeout=30.0) as client:
        # -- login is on ----------------------------------------------------------------------
        assert client.get("/api/v2/dags").status_code == 401
        password_file = airflow_home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(password_file.read_text())["admin"]
        mode = password_file.stat().st_mode & 0o777
        assert mode == 0o600, f"the admin password file is {oct(mode)}, readable by others"
        assert client.post("/auth/token", json={"username": "admin", "password": "wrong"}).status_code == 401
        response = client.post("/auth/token", json={"username": "admin", "password": password})
        assert response.status_code == 201, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

        # -- both DAGs parsed and listed --------------------------------------------------------
        def listed() -> dict[str, bool] | None:
            dags = client.get("/api/v2/dags", params={"tags": "spendpred"}).json().get("dags", [])
            paused = {d["dag_id"]: d["is_paused"] for d in dags}
            return paused if set(paused) >= DAG_IDS else None

        paused = _wait_for("both spendpred DAGs in /api/v2/dags", listed, 120.0, log)
        assert paused[NIGHTLY] is True  # paused at creation

        # -- unpause, trigger a dry run, follow it to the end -------------------------------------
        response = client.patch(f"/api/v2/dags/{NIGHTLY}", json={"is_paused": False})
        assert response.status_code == 200, response.text
        assert response.json()["is_paused"] is False
        conf = {"as_of": AS_OF.isoformat(), "dry_run": True, "shards": 1}
        response = client.post(f"/api/v2/dags/{NIGHTLY}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["conf"] == conf and run["state"] in {"queued", "running"}
        run_url = f"/api/v2/dags/{NIGHTLY}/dagRuns/{run['dag_run_id']}"

        def finished() -> dict | None:
            body = client.get(run_url).json()
            return body if body["state"] in {"success", "failed"} else None

        final = _wait_for(f"run {run['dag_run_id']} to finish", finished, RUN_TIMEOUT, log, interval=3.0)
        tis = client.get(f"{run_url}/taskInstances").json()["task_instances"]
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
        assert final["state"] == "success", f"{states}\n{_tail(log)}"
        assert states == {
            ("extract_scoring_snapshot", -1): "success",
            ("validate_snapshot", -1): "success",
            ("plan_shards", -1): "success",
            ("score_shard", 0): "success",
            ("assign_tiers", -1): "success",
            ("explain_scores", -1): "success",  # reasons are staged; a dry run publishes none
            ("publish_scores", -1): "skipped",  # dry run: nothing published
            ("monitor_scores", -1): "skipped",  # nothing published, nothing to monitor
        }

        # -- task logs say what matters: no ERROR line in a successful run, no library filler ---
        for ti in tis:
            url = f"{run_url}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
            body = client.get(url, params={"map_index": ti["map_index"]}, headers={"Accept": "application/json"})
            assert body.status_code == 200, body.text
            entries = [e for e in body.json().get("content", []) if isinstance(e, dict)]
            text = "\n".join(str(e.get("event", "")) for e in entries)
            errors = [e for e in entries if str(e.get("level", "")).lower() in {"error", "critical"}]
            assert not errors, (ti["task_id"], errors[:5])
            for filler in ("Skipping registering function", "Loading weights", "Downloading artifacts"):
                assert filler not in text, (ti["task_id"], filler)
            if ti["task_id"] == "validate_snapshot":
                assert text.count("passed validation") == 1, text[-2000:]

