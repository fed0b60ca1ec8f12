"""The registry through a real MLflow tracking server with proxied artifacts, as docker-compose runs it.

The test starts ``mlflow server --serve-artifacts`` on a free localhost port (SQLite backend,
artifacts in a tmp folder) and registers a tiny real model with the compose file's artifact
root, ``mlflow-artifacts:/spendpred``: the files must land in the server's store, not on the
client's disk.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from spendpred import registry
from spendpred.config import Settings
from spendpred.errors import RegistryError, SpendpredError, TransientError
from spendpred.failures import as_error, one_line
from tests.integration.test_registry import Trained, _log, trained  # noqa: F401 - the tiny model fixture

pytestmark = pytest.mark.slow

COMPOSE_ARTIFACT_ROOT = "mlflow-artifacts:/spendpred"
"""``SPENDPRED_MLFLOW_ARTIFACT_ROOT`` in docker-compose.yaml."""


@dataclass
class Server:
    uri: str
    artifacts: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An MLflow tracking server serving artifacts (one worker), stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the MLflow server did not start: {(root / 'server.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield Server(uri, artifacts)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_compose_artifact_root_registers_into_the_servers_store(
    server: Server, trained: Trained, tmp_path: Path  # noqa: F811 - the imported fixture
) -> None:
    home = tmp_path / "client-var"
    settings = Settings(home=home, mlflow_tracking_uri=server.uri, mlflow_artifact_root=COMPOSE_ARTIFACT_ROOT)
    registry.check_writable(settings)  # accepted: the compose file's value with an HTTP tracking server

    run_id, version = _log(trained, settings)

    client = registry.get_client(settings)
    assert client.get_experiment_by_name(registry.EXPERIMENT_NAME).artifact_location == COMPOSE_ARTIFACT_ROOT
    assert client.get_model_version(registry.REGISTERED_MODEL, version).run_id == run_id
    stored = {p.name for p in (server.artifacts / "spendpred").rglob("*") if p.is_file()}
    assert {"bundle.json", "MLmodel"} <= stored  # the bundle and the pyfunc went to the server's store
    assert not home.exists()  # nothing on the client's disk (no mlartifacts, no SQLite store)

    model, model_version = registry.load_model(version, settings=settings, device="cpu")
    assert str(model_version.version) == version
    np.testing.assert_allclose(model.predict(trained.test_df), trained.model.predict(trained.test_df), rtol=1e-6)


def test_a_client_error_from_the_server_is_permanent(server: Server, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    settings = Settings(home=tmp_path / "var", mlflow_tracking_uri=server.uri, mlflow_artifact_root=COMPOSE_ARTIFACT_ROOT)
    client = registry.get_client(settings)
    with pytest.raises(MlflowException) as missing:
        client.get_model_version("spendpred-no-such-model", "999")  # HTTP 404 RESOURCE_DOES_NOT_EXIST
    error = as_error(missing.value)
    assert isinstance(error, RegistryError) and not isinstance(error, TransientError)
    assert str(error).startswith("MLflow refused the request (RESOURCE_DOES_NOT_EXIST, HTTP 404)")

    client.create_registered_model("spendpred-twice")
    with pytest.raises(SpendpredError) as twice, one_line():  # as in a task: fails at once, not retried
        client.create_registered_model("spendpred-twice")  # HTTP 400 RESOURCE_ALREADY_EXISTS
    assert not isinstance(twice.value, TransientError)
    assert str(twice.value).startswith("MLflow refused the request (RESOURCE_ALREADY_EXISTS, HTTP 400)")
    assert "\n" not in str(twice.value)
