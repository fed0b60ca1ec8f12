"""The snapshot contract and the run folder, on real files in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendpred.config import Settings
from spendpred.errors import ConfigError, DataError, ValidationFailed
from spendpred.failures import describe
from spendpred.files import sha256_file
from spendpred.snapshot import (
    FEATURE_COLUMNS,
    MANIFEST_FILE,
    SNAPSHOT_FILE,
    VALIDATION_JSON,
    VALIDATION_MD,
    Manifest,
    RunFolder,
    SnapshotDir,
    local_path,
    snapshot_columns,
    staged_snapshot,
    staging_root,
)

D = dt.date(2024, 6, 30)


def _write_snapshot(directory: Path, as_of: dt.date, rows: int = 3) -> Manifest:
    """A tiny but well-formed snapshot: Parquet file and manifest (what behaviour.extract_snapshot writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    columns = snapshot_columns(with_labels=False)
    table = pa.table(
        {name: (pa.array([f"u{i}" for i in range(rows)]) if name in ("user_id", "text") else pa.array([0.0] * rows)) for name in columns}
    )
    pq.write_table(table, directory / "snapshot.parquet")
    manifest = Manifest(
        as_of=as_of, horizon_days=90, with_labels=False, row_count=rows, text_template_version="v1",
        feature_columns=list(FEATURE_COLUMNS), source_row_counts={"users": rows}, max_source_timestamp=None,
        checksum=sha256_file(directory / "snapshot.parquet"), created_at="2024-07-01T00:00:00+00:00",
    )  # fmt: skip
    manifest.write(directory)
    return manifest


def _validate(snapshot: SnapshotDir, success: bool = True) -> None:
    """What spendpred.validation records: the verdict and the checksum of the file it checked."""
    report = {"success": success, "checksum": sha256_file(snapshot.parquet)}
    snapshot.validation_json.write_text(json.dumps(report), encoding="utf-8")


@pytest.fixture
def run(tmp_path: Path) -> RunFolder:
    folder = RunFolder("score", D, tmp_path / "staging")
    _write_snapshot(folder.snapshot_dir, D)
    return folder


# -- layout ---------------------------------------------------------------------------------


def test_the_run_folder_knows_where_everything_is(tmp_path: Path) -> None:
    root = tmp_path / "staging"
    score = RunFolder("score", D, root)
    assert score.path == root / "score" / "2024-06-30"
    assert score.snapshot_dir == score.path / "snapshot"
    assert score.snapshot.parquet == score.path / "snapshot" / "snapshot.parquet"
    assert score.validation_json == score.path / "snapshot" / "validation.json"
    assert score.shards_dir == score.path / "shards"
    assert score.shard_path(2, 16) == score.path / "shards" / "shard-002-of-016.parquet"
    assert (score.tiers_parquet, score.tiers_json) == (score.path / "tiers.parquet", score.path / "tiers.json")
    train = RunFolder("train", dt.date(2024, 4, 1), root)
    assert train.model_dir == root / "train" / "2024-04-01" / "model"
    assert train.bundle_dir == train.model_dir / "bundle" and train.evaluation_dir == train.model_dir / "evaluation"
    assert train.result_json.name == "result.json" and train.registered_json.name == "registered.json"
    assert train.test_predictions == train.model_dir / "test_predictions.parquet"
    assert not root.exists()  # naming a place creates nothing


def test_the_date_travels_typed_and_the_reference_round_trips(tmp_path: Path) -> None:
    run = RunFolder("score", D, str(tmp_path))  # type: ignore[arg-type] - text roots become paths
    assert isinstance(run.root, Path) and run.as_of == D
    ref = run.ref()
    assert ref == {"kind": "score", "as_of": "2024-06-30", "root": str(tmp_path)}
    assert json.loads(json.dumps(ref)) == ref  # what XCom carries
    back = RunFolder.from_ref({**ref, "rows": 3, "shard": 1})  # other keys are the steps' metadata
    assert back == run and type(back.as_of) is dt.date
    assert RunFolder.coerce(run) is run and RunFolder.coerce(ref) == run


@pytest.mark.parametrize(
    ("kind", "as_of", "message"),
    [
        ("nightly", D, "run kind 'nightly' is not one of train, score, train-window"),
        ("score", "2024-06-30", "must be a datetime.date"),  # text is parsed at the front ends, not here
        ("score", dt.datetime(2024, 6, 30, 2, 0), "must be a datetime.date"),
    ],
)
def test_bad_run_folders_are_refused(tmp_path: Path, kind: str, as_of: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunFolder(kind, as_of, tmp_path)  # type: ignore[arg-type]


def test_bad_references_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="root missing"):
        RunFolder.from_ref({"kind": "score", "as_of": "2024-06-30"})
    with pytest.raises(ConfigError, match=r"as_of='2024-13-01' is not a date"):
        RunFolder.from_ref({"kind": "score", "as_of": "2024-13-01", "root": str(tmp_path)})


def test_a_training_run_carries_its_stacked_windows(tmp_path: Path) -> None:
    """Issue 23: the windows travel in the run folder and its reference, as dates; each one's folder is the run folder's answer."""
    run = RunFolder("train", D, tmp_path).stacked(3, 28)
    assert run.windows == (D - dt.timedelta(days=28), D - dt.timedelta(days=56))  # newest first
    assert [w.snapshot_dir for w in run.window_folders()] == [
        tmp_path / "train-window" / "2024-06-02" / "snapshot", tmp_path / "train-window" / "2024-05-05" / "snapshot"]
    assert all(not w.windows for w in run.window_folders())
    ref = run.ref()
    assert ref["windows"] == ["2024-06-02", "2024-05-05"] and json.loads(json.dumps(ref)) == ref
    back = RunFolder.from_ref({**ref, "rows": 3})
    assert back == run and all(type(day) is dt.date for day in back.windows)
    assert RunFolder("train", D, tmp_path).stacked(1, 28).ref() == RunFolder("train", D, tmp_path).ref()  # one window: none carried
    assert "windows" not in RunFolder("train", D, tmp_path).ref()
    assert run.on(D - dt.timedelta(days=7)).windows == ()  # another run's folder: not these windows
    assert run.window(D - dt.timedelta(days=28)).previous() is None  # nothing staged


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"kind": "train", "windows": "2024-06-02"}, "windows must be a list of dates"),
        ({"kind": "train", "windows": ["2024-06-31"]}, r"windows='2024-06-31' is not a date"),
        ({"kind": "train", "windows": ["2024-06-30"]}, "stacked window .* must be an earlier datetime.date"),
        ({"kind": "score", "windows": ["2024-06-02"]}, "a score run folder has no stacked training windows"),
    ],
)
def test_bad_windows_are_refused(tmp_path: Path, ref: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunFolder.from_ref({"as_of": "2024-06-30", "root": str(tmp_path), **ref})


def test_the_embedding_cache_lies_beside_the_runs(tmp_path: Path) -> None:
    """One place names the cache's folder: locally under the root (or the working copy), on a store relative to the root."""
    from spendpred import embeddings
    from spendpred.snapshot import embedding_cache_dir

    run = RunFolder("score", D, tmp_path)
    assert run.embedding_cache() == tmp_path / "embedding-cache" == embeddings.cache_root(tmp_path)
    assert run.embedding_cache("k1") == tmp_path / "embedding-cache" / "k1" == embedding_cache_dir(tmp_path, "k1")
    assert RunFolder("train", D, tmp_path).embedding_cache("k1") == run.embedding_cache("k1")  # shared by every kind
    assert (run.embedding_cache_rel(), run.embedding_cache_rel("k1")) == ("embedding-cache", "embedding-cache/k1")
    remote = RunFolder("score", D, "s3://bucket/prefix", work=tmp_path / "work")
    assert remote.embedding_cache("k1") == tmp_path / "work" / "embedding-cache" / "k1"
    assert not (tmp_path / "embedding-cache").exists()  # naming a place creates nothing


def test_for_date_and_containing_use_the_staging_root(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "var")
    run = RunFolder.for_date("train", D, settings)
    assert run.root == tmp_path / "var" / "staging"
    assert RunFolder.containing(run.snapshot_dir, settings) == run
    assert RunFolder.containing(tmp_path / "elsewhere" / "snapshot", settings) is None
    assert RunFolder.containing(run.root / "train" / "latest" / "snapshot", settings) is None
    assert RunFolder.containing(run.path, settings) is None  # the run folder, not its snapshot


# -- the manifest ---------------------------------------------------------------------------


def test_manifest_round_trips_with_a_typed_date(run: RunFolder) -> None:
    manifest = Manifest.read(run.snapshot_dir)
    assert manifest.as_of == D
    assert json.loads((run.snapshot_dir / MANIFEST_FILE).read_text())["as_of"] == "2024-06-30"
    assert manifest.to_dict()["as_of"] == "2024-06-30"


def test_manifest_read_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no manifest.json"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"as_of": "2024-06-30"}))
    with pytest.raises(DataError, match="lacks the key"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        Manifest.read(tmp_path)
    good = _write_snapshot(tmp_path / "snap", D)
    (tmp_path / "snap" / MANIFEST_FILE).write_text(json.dumps({**good.to_dict(), "as_of": "30/06/2024"}))
    with pytest.raises(DataError, match="is not a date"):
        Manifest.read(tmp_path / "snap")


def test_the_manifest_is_read_once_per_run_folder(run: RunFolder) -> None:
    first = run.manifest
    (run.snapshot_dir / MANIFEST_FILE).unlink()
    assert run.manifest is first
    with pytest.raises(DataError, match="no manifest.json"):
        RunFolder.from_ref(run.ref()).manifest  # a new object reads again


# -- require_validated ---------------------------------------------------------------------


def test_a_validated_unchanged_snapshot_is_accepted(run: RunFolder) -> None:
    _validate(run.snapshot)
    assert run.require_validated().row_count == 3


def test_a_snapshot_never_validated_is_refused(run: RunFolder) -> None:
    with pytest.raises(ValidationFailed, match="has not been validated: run `spendpred validate"):
        run.require_validated()


def test_a_snapshot_that_failed_validation_is_refused(run: RunFolder) -> None:
    _validate(run.snapshot, success=False)
    with pytest.raises(ValidationFailed, match=r"failed validation \(see .*validation.md\)"):
        run.require_validated()


def test_a_snapshot_changed_after_validation_is_refused(run: RunFolder) -> None:
    _validate(run.snapshot)
    table = pq.read_table(run.snapshot.parquet)
    pq.write_table(table.slice(0, 2), run.snapshot.parquet)  # same name, other rows
    with pytest.raises(ValidationFailed, match="changed after it was validated"):
        RunFolder.from_ref(run.ref()).require_validated()


def test_a_report_without_checksum_or_without_file_is_refused(run: RunFolder) -> None:
    run.validation_json.write_text(json.dumps({"success": True}))
    with pytest.raises(ValidationFailed, match="records no checksum"):
        run.require_validated()
    _validate(run.snapshot)
    run.snapshot.parquet.unlink()
    with pytest.raises(ValidationFailed, match="is missing"):
        RunFolder.from_ref(run.ref()).require_validated()


# -- previous -------------------------------------------------------------------------------


def test_previous_is_the_newest_earlier_validated_run_of_the_same_kind(tmp_path: Path) -> None:
    root = tmp_path / "staging"

    def make(kind: str, day: dt.date, success: bool | None) -> RunFolder:
        folder = RunFolder(kind, day, root)
        _write_snapshot(folder.snapshot_dir, day)
        if success is not None:
            _validate(folder.snapshot, success)
        return folder

    current = make("score", D, None)
    assert current.previous() is None  # nothing earlier
    oldest = make("score", dt.date(2024, 6, 27), True)
    make("score", dt.date(2024, 6, 28), False)  # failed: skipped
    make("score", dt.date(2024, 6, 29), None)  # never validated: skipped
    make("score", dt.date(2024, 7, 1), True)  # later: not previous
    make("train", dt.date(2024, 6, 29), True)  # other kind
    (root / "score" / "notes").mkdir()  # not a run folder
    assert current.previous() == oldest
    assert oldest.previous() is None


def test_empty_model_dir_removes_an_earlier_training(tmp_path: Path) -> None:
    run = RunFolder("train", D, tmp_path)
    (run.bundle_dir).mkdir(parents=True)
    (run.bundle_dir / "stale.bin").write_bytes(b"x")
    assert run.empty_model_dir() == run.model_dir
    assert run.model_dir.is_dir() and not any(run.model_dir.iterdir())


# -- the staging root -------------------------------------------------------------------------


def test_staging_root_accepts_paths_and_file_urls(tmp_path: Path) -> None:
    assert staging_root(Settings(home=tmp_path)) == tmp_path / "staging"
    assert staging_root(Settings(home=tmp_path, staging_dir=str(tmp_path / "s"))) == tmp_path / "s"
    assert staging_root(Settings(home=tmp_path, staging_dir=(tmp_path / "s a").as_uri())) == tmp_path / "s a"
    assert local_path("file://localhost/srv/staging") == Path("/srv/staging")
    assert Settings(home=tmp_path, staging_dir=f"file://{tmp_path}/x").resolved_staging_dir == tmp_path / "x"
    # object storage stays a URL (normalised: no trailing slash), which run folder references carry
    assert staging_root(Settings(home=tmp_path, staging_dir="s3://bucket/spend/staging/")) == "s3://bucket/spend/staging"
    assert staging_root(Settings(home=tmp_path, staging_dir="gcs://bucket")) == "gs://bucket"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hdfs://namenode/staging", r"staging on hdfs:// is not supported: use a folder, a file:// URL or object storage \(s3://"),
        ("s3:///staging", r"names no bucket: use s3://bucket/prefix"),
        ("file://otherhost/srv/staging", "names the host 'otherhost'"),
    ],
)
def test_staging_root_refuses_other_schemes_clearly(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        staging_root(Settings(home=tmp_path, staging_dir=url))


# -- staged_snapshot: a snapshot appears only when its extract succeeded ------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_stub(folder: Path, text: str) -> None:
    (folder / SNAPSHOT_FILE).write_text(f"parquet {text}")
    (folder / MANIFEST_FILE).write_text(f"manifest {text}")


def test_a_successful_extract_replaces_the_snapshot_and_its_stale_reports(tmp_path: Path) -> None:
    out = tmp_path / "score" / "2024-06-30" / "snapshot"
    out.mkdir(parents=True)
    _write_stub(out, "old")
    (out / VALIDATION_JSON).write_text("{}")
    (out / VALIDATION_MD).write_text("passed")
    (out / "notes.txt").write_text("kept")
    with staged_snapshot(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".snapshot.tmp-") and list(tmp.iterdir()) == []
        _write_stub(tmp, "new")
    assert _files(out) == {SNAPSHOT_FILE: b"parquet new", MANIFEST_FILE: b"manifest new", "notes.txt": b"kept"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["snapshot"]


def test_a_failed_extract_creates_no_folder(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    with pytest.raises(RuntimeError), staged_snapshot(staging / "score" / "2024-06-30" / "snapshot") as tmp:
        _write_stub(tmp, "half")
        raise RuntimeError("the warehouse went away")
    assert list(tmp_path.iterdir()) == []  # not even the staging root


def test_a_failed_extract_keeps_the_validated_snapshot_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "train" / "2024-04-01" / "snapshot"
    out.mkdir(parents=True)
    _write_stub(out, "validated")
    (out / VALIDATION_JSON).write_text('{"success": true}')
    (tmp_path / "train" / "2024-04-01" / "model").mkdir()
    before = _files(tmp_path)
    with pytest.raises(OSError), staged_snapshot(out) as tmp:
        (tmp / SNAPSHOT_FILE).write_text("partial")
        raise OSError(28, "No space left on device", str(tmp / SNAPSHOT_FILE))
    assert _files(tmp_path) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["model", "snapshot"]


def test_a_file_in_the_way_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="a-file: it is a file, not a folder"), staged_snapshot(tmp_path / "a-file"):
        pass
    with pytest.raises(NotADirectoryError) as info, staged_snapshot(tmp_path / "a-file" / "staging" / "snapshot"):
        pass
    assert "Not a directory" in (describe(info.value) or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
