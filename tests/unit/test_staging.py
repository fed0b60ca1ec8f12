"""Staging on object storage (``spendpred.staging``, ``RunFolder`` on a URL) against a local S3 server (moto)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendpred import staging
from spendpred.errors import ConfigError, DataError, StorageError, TransientError, ValidationFailed
from spendpred.snapshot import RunFolder, working_copy
from tests.s3_server import create_bucket, keys, s3_env, s3_server
from tests.s3_server import client as s3_client

D = dt.date(2024, 6, 30)


# -- the root: parsing and refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root"),
    [
        ("s3://bucket/a/b/", "s3://bucket/a/b"),
        ("S3://bucket", "s3://bucket"),
        ("gcs://bucket/x", "gs://bucket/x"),
        ("abfss://c@acct.dfs.core.windows.net/p", "abfs://c@acct.dfs.core.windows.net/p"),
        ("/srv/staging", Path("/srv/staging")),
        ("file:///srv/staging%20x", Path("/srv/staging x")),
        ("C:/staging", Path("C:/staging")),
    ],
)
def test_parse_root(text: str, root: object) -> None:
    assert staging.parse_root(text) == root
    assert staging.is_remote(text) is isinstance(root, str)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hdfs://nn/staging", r"SPENDPRED_STAGING_DIR='hdfs://nn/staging': staging on hdfs:// is not supported: use a folder"),
        ("ftp://host/x", r"staging on ftp:// is not supported"),
        ("s3://", r"names no bucket: use s3://bucket/prefix"),
        ("file://elsewhere/x", r"names the host 'elsewhere'"),
    ],
)
def test_unknown_schemes_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        staging.parse_root(text)
    assert "\n" not in str(info.value)


def test_a_run_folder_on_a_url_keeps_the_url_and_needs_a_working_copy() -> None:
    run = RunFolder("score", D, "s3://bucket/staging/")
    assert run.is_remote and run.root == "s3://bucket/staging"
    assert run.ref() == {"kind": "score", "as_of": "2024-06-30", "root": "s3://bucket/staging"}
    assert RunFolder.from_ref(run.ref()) == run
    assert run.location("snapshot") == "s3://bucket/staging/score/2024-06-30/snapshot"
    with pytest.raises(ConfigError, match=r"run folder s3://bucket/staging/score/2024-06-30 is on object storage: open a working copy"):
        _ = run.snapshot_dir


def test_a_local_run_folder_is_its_own_working_copy(tmp_path: Path) -> None:
    run = RunFolder("score", D, tmp_path)
    with working_copy(run.ref()) as work:
        assert work == run and work.path == tmp_path / "score" / "2024-06-30"
        assert work.pull("snapshot") == ["snapshot"]  # nothing to move
        work.push("snapshot")
    assert list(tmp_path.iterdir()) == []


# -- against a local S3 server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        create_bucket(url, "stage")
        yield url


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh prefix in the bucket, with the AWS variables set; returns its URL."""
    for key, value in s3_env(endpoint).items():
        monkeypatch.setenv(key, value)
    staging._STORES.clear()  # built from the variables of this test
    return f"s3://stage/{request.node.name.replace('[', '-').replace(']', '')}"


def _prefix(url: str) -> str:
    return url.removeprefix("s3://stage/")


def _files(folder: Path, **content: bytes) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (folder / name).write_bytes(data)
    return sorted(content)


def test_push_then_pull_round_trip_with_the_manifest_last(s3: str, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = staging.store(s3)
    order: list[str] = []
    upload, write_bytes = staging.Store.upload, staging.Store.write_bytes
    monkeypatch.setattr(staging.Store, "upload", lambda self, local, rel: (order.append(rel), upload(self, local, rel))[1])
    monkeypatch.setattr(staging.Store, "write_bytes", lambda self, rel, data: (order.append(rel), write_bytes(self, rel, data))[1])
    names = _files(tmp_path / "out", a=b"alpha", b=b"beta" * 1000)
    manifest = store.push(tmp_path / "out", "run/set", "things", names)
    assert order == ["run/set/a", "run/set/b", "run/set/things.staged.json"]  # the manifest last
    assert manifest["files"]["b"]["size"] == 4000
    assert keys(endpoint, "stage", _prefix(s3)) == [f"{_prefix(s3)}/run/set/{n}" for n in ("a", "b", "things.staged.json")]
    assert store.pull(tmp_path / "in", "run/set", "things") is True
    assert (tmp_path / "in" / "b").read_bytes() == b"beta" * 1000
    moved = staging.TRAFFIC.downloaded_files
    assert store.pull(tmp_path / "in", "run/set", "things") is True  # unchanged local files are kept
    assert staging.TRAFFIC.downloaded_files == moved + 1  # only the manifest was read again
    assert store.pull(tmp_path / "none", "run/other", "things") is False  # never written: nothing trusted
    assert not (tmp_path / "none").exists()


def test_a_push_that_fails_midway_leaves_no_manifest_a_reader_trusts(s3: str, endpoint: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = staging.store(s3)
    names = _files(tmp_path / "v1", a=b"old-a", b=b"old-b")
    store.push(tmp_path / "v1", "set", "pair", names)
    names = _files(tmp_path / "v2", a=b"new-a", b=b"new-b" * 100_000)
    real = shutil.copyfileobj

    def fail_on_b(source, target, length=0):  # the injected fault: the upload of b breaks after half of it
        if getattr(source, "name", "").endswith("/b"):
            target.write(source.read(250_000))
            raise OSError("connection reset during upload")
        return real(source, target, length)

    monkeypatch.setattr(staging.shutil, "copyfileobj", fail_on_b)
    with pytest.raises(StorageError, match=r"staging s3://stage/.*/set/b cannot be used \(connection reset during upload\)"):
        store.push(tmp_path / "v2", "set", "pair", names)
    monkeypatch.setattr(staging.shutil, "copyfileobj", real)
    remaining = [k.rsplit("/", 1)[1] for k in keys(endpoint, "stage", _prefix(s3) + "/set/")]
    assert remaining == ["a", "b"]  # no manifest, no temporary object, b still the old complete object
    assert store.pull(tmp_path / "reader", "set", "pair") is False
    assert s3_client(endpoint).get_object(Bucket="stage", Key=f"{_prefix(s3)}/set/b")["Body"].read() == b"old-b"


def test_a_file_replaced_after_its_manifest_is_refused(s3: str, endpoint: str, tmp_path: Path) -> None:
    store = staging.store(s3)
    store.push(tmp_path / "out", "set", "one", _files(tmp_path / "out", data=b"written"))
    s3_client(endpoint).put_object(Bucket="stage", Key=f"{_prefix(s3)}/set/data", Body=b"tampered")
    with pytest.raises(DataError, match=r"set/data does not match its staging manifest .*rerun the step that writes it"):
        store.pull(tmp_path / "in", "set", "one")
    assert not (tmp_path / "in" / "data").exists()
    s3_client(endpoint).delete_object(Bucket="stage", Key=f"{_prefix(s3)}/set/data")
    with pytest.raises(DataError, match=r"set/data is missing but its staging manifest lists it"):
        store.pull(tmp_path / "in", "set", "one")


def test_run_folder_sets_previous_and_the_working_copy(s3: str, tmp_path: Path) -> None:
    def stage(day: dt.date, success: bool | None) -> None:
        with working_copy(RunFolder("score", day, s3)) as run:
            _files(run.snapshot_dir, **{"snapshot.parquet": b"rows", "manifest.json": b"{}"})
            run.push("snapshot")
            if success is not None:
                (run.snapshot_dir / "validation.json").write_text(json.dumps({"success": success}))
                (run.snapshot_dir / "validation.md").write_text("report")
                run.push("validation")

    stage(dt.date(2024, 6, 27), True)
    stage(dt.date(2024, 6, 28), False)  # failed: skipped
    stage(dt.date(2024, 6, 29), None)  # never validated: skipped
    stage(dt.date(2024, 7, 1), True)  # later: not previous
    with working_copy(RunFolder("score", D, s3)) as run:
        work = run.local_root
        assert work.name.startswith("spendpred-staging-") and run.ref()["root"] == s3
        with pytest.raises(DataError, match=rf"no complete snapshot at {s3}/score/2024-06-30/snapshot: run the extract step first"):
            run.pull("snapshot")
        assert run.previous() == RunFolder("score", dt.date(2024, 6, 27), s3)
        earlier = run.on(dt.date(2024, 6, 27))
        assert earlier.snapshot.validation_json.is_file() and not earlier.snapshot.parquet.exists()  # only what previous() needs
        with pytest.raises(ValidationFailed, match=r"snapshot .*/score/2024-06-29/snapshot has not been validated"):
            run.on(dt.date(2024, 6, 29)).pull("snapshot", "validation")
        stage(dt.date(2024, 6, 27), None)  # extracted again: its old validation is withdrawn
        assert run.previous() is None
    assert not work.exists()  # the working copy goes with the block


def test_an_unreachable_endpoint_is_a_transient_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in s3_env(f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(key, value)
    staging._STORES.clear()
    with pytest.raises(staging.StagingUnavailable, match=r"staging s3://stage/x/score/.spendpred-probe-\w+ cannot be reached \(.*Could not connect.*\): check AWS_ENDPOINT_URL") as info:
        staging.store("s3://stage/x").probe("score")
    assert isinstance(info.value, TransientError) and "\n" not in str(info.value)
