"""The registry's store (``spendpred.registry.store``): an unusable MLflow store is reported at once
(never as "no champion"), before anything is trained, creating nothing."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from spendpred import registry
from spendpred.errors import ConfigError, ModelError, RegistryUnavailable, StorageError, TransientError
from spendpred.registry import store

SECRET = "s3cret"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"http://bob:{SECRET}@127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", uri)
    for key in registry.HTTP_LIMITS:  # unset now, and unset again after the test (get_client sets them)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    return uri


@pytest.mark.parametrize(
    "call",
    [
        lambda: registry.champion_info(),
        lambda: registry.require_model("champion"),
        lambda: registry.load_model("champion"),
        lambda: registry.get_client(),
        lambda: registry.check_writable(),
    ],
    ids=["champion_info", "require_model", "load_model", "get_client", "check_writable"],
)
def test_an_unreachable_server_is_reported_at_once_and_never_as_no_champion(unreachable: str, call: object) -> None:
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as info:
        call()  # type: ignore[operator]
    assert time.monotonic() - started < registry.PROBE_TIMEOUT_S + 5
    message = str(info.value)
    assert isinstance(info.value, TransientError)
    assert message.startswith("cannot reach the MLflow registry at http://bob:***@127.0.0.1:")
    assert "connection refused" in message and "SPENDPRED_MLFLOW_TRACKING_URI" in message
    assert SECRET not in message and "no champion" not in message and "\n" not in message


def test_mlflow_http_retries_are_bounded_unless_set(unreachable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    with pytest.raises(RegistryUnavailable):
        registry.get_client()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == registry.HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the operator's own value wins


def test_a_sqlite_store_that_is_a_folder_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store'}")
    started = time.monotonic()
    for call in (registry.champion_info, registry.get_client, registry.check_writable):
        with pytest.raises(StorageError, match="is a folder, not a SQLite file: fix SPENDPRED_MLFLOW_TRACKING_URI"):
            call()
    assert time.monotonic() - started < 5  # MLflow alone retries opening it for about 100 s
    assert list((tmp_path / "store").iterdir()) == []


def test_a_store_that_cannot_be_created_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    with pytest.raises(StorageError, match=r"MLflow store .* cannot be written: a file is in the way \(.*a-file\)"):
        registry.check_writable()
    with pytest.raises(StorageError, match=r"cannot create the MLflow store .*: make its folder writable"):
        registry.get_client()


def test_an_unwritable_artifact_root_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("SPENDPRED_MLFLOW_ARTIFACT_ROOT", (tmp_path / "a-file" / "artifacts").as_uri())
    with pytest.raises(StorageError, match="MLflow artifact root .* cannot be written: .*SPENDPRED_MLFLOW_ARTIFACT_ROOT"):
        registry.check_writable()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no store, no probe left behind


def test_reading_a_registry_that_does_not_exist_yet_creates_nothing(isolated_settings: Path) -> None:
    store = registry.missing_store()
    assert store is not None and store.name == "mlflow.db"
    assert registry.champion_info() is None
    with pytest.raises(ModelError, match="no champion yet"):
        registry.require_model("champion")
    with pytest.raises(ModelError, match="version 3 does not exist"):
        registry.load_model("3")
    registry.check_writable()  # a new store could be created here, but is not by checking
    assert not isolated_settings.exists()


def test_the_compose_artifact_root_is_accepted_with_a_tracking_server(unreachable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow-artifacts:/spendpred`` passes the artifact check; only the (unreachable) server itself fails."""
    monkeypatch.setenv("SPENDPRED_MLFLOW_ARTIFACT_ROOT", "mlflow-artifacts:/spendpred")
    with pytest.raises(RegistryUnavailable, match="cannot reach the MLflow registry"):
        registry.check_writable()


def test_proxied_artifacts_without_a_tracking_server_are_refused_for_the_setting(isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_MLFLOW_ARTIFACT_ROOT", "mlflow-artifacts:/spendpred")
    with pytest.raises(
        ConfigError,
        match=r"^SPENDPRED_MLFLOW_ARTIFACT_ROOT=mlflow-artifacts:/spendpred stores artifacts through an MLflow tracking "
        r"server, but SPENDPRED_MLFLOW_TRACKING_URI is sqlite:///.*, not http\(s\)://: point SPENDPRED_MLFLOW_TRACKING_URI",
    ):
        registry.check_writable()
    assert not isolated_settings.exists()


def test_a_remote_artifact_root_needs_its_client_package(isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_MLFLOW_ARTIFACT_ROOT", "s3://models/spendpred")
    monkeypatch.setattr(store, "_installed", lambda module: module != "boto3")  # a worker built without boto3
    with pytest.raises(ConfigError, match=r"SPENDPRED_MLFLOW_ARTIFACT_ROOT=s3://models/spendpred: MLflow needs the Python package 'boto3'"):
        registry.check_writable()
    monkeypatch.setattr(store, "_installed", lambda module: True)
    registry.check_writable()  # with it: nothing contacted, nothing created
    assert not isolated_settings.exists()


def _read_only_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected fault: every SQLite connection opens read-only, as on a write-protected file
    (``mode=rw`` silently falls back to read-only there; root ignores file modes, so this is injected)."""
    import sqlite3

    connect = sqlite3.connect

    def read_only(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if str(database).startswith("file:"):
            database = str(database).replace("mode=rw", "mode=ro")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)


def test_a_read_only_sqlite_store_is_refused_before_training_but_serves_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    registry.get_client()  # creates the store
    _read_only_sqlite(monkeypatch)
    assert registry.check_store().startswith("sqlite:")  # scoring only reads: a read-only store is fine there
    with pytest.raises(StorageError) as info:
        registry.check_writable()
    message = str(info.value)
    assert message.startswith(f"cannot write to the MLflow store sqlite:///{store}: attempt to write a readonly database")
    assert "point SPENDPRED_MLFLOW_TRACKING_URI at a writable store" in message and "\n" not in message
