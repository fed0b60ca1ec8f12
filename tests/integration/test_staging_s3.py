"""A whole nightly with staging on object storage: an S3-compatible server (moto) on localhost.

Each step runs as the Airflow task would on its own host: it gets the previous step's
reference through a JSON round trip (XCom), works in a fresh working copy and leaves nothing
on the local disk. The partition it publishes is the one the same nightly publishes with a
local staging folder, and a shard that fails while it uploads leaves nothing a reader trusts.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spendpred import pipeline, staging, warehouse
from spendpred.errors import DataError, StorageError
from tests.s3_server import create_bucket, keys, s3_env, s3_server

RUN_DATE = dt.date(2024, 6, 30)
BUCKET = "spendpred-staging"



@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        create_bucket(url, BUCKET)
        yield url


@pytest.fixture
def env(tiny_encoder: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, tmp_path: Path) -> Path:
    """Tiny encoder, H = 60, the AWS variables of the local server, and a private temporary folder (to find leftovers)."""
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    for key, value in s3_env(endpoint).items():
        monkeypatch.setenv(key, value)
    staging._STORES.clear()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return isolated_settings


def _xcom(value: Any) -> Any:
    """What a task receives from the previous one: the value through JSON."""
    return json.loads(json.dumps(value))


def _train(url: str) -> dict[str, Any]:
    pipeline.seed(users=240, days=400, end_date=RUN_DATE, seed=7, url=url)
    return pipeline.train(RUN_DATE, epochs=1, promote="force", url=url)


def _nightly(url: str, shards: int = 2) -> dict[str, Any]:
    """The nightly DAG's tasks in order, each on a reference that went through XCom."""
    snap = _xcom(pipeline.extract_scoring_snapshot(RUN_DATE, url=url, model="champion"))
    _xcom(pipeline.validate_snapshot(snap))
    plan = _xcom(pipeline.plan_shards(snap, shards))
    scored = [_xcom(pipeline.score_shard(spec, spec["shard"], spec["shards"], "champion")) for spec in plan]
    tiered = _xcom(pipeline.assign_tiers(snap, scored))
    return {"snapshot": snap, "tiers": tiered, "published": pipeline.publish_scores(tiered, url=url)}


def _partition(url: str) -> list[tuple]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT user_id, predicted_spend, tier, model_version FROM user_spend_scores WHERE as_of = :d ORDER BY user_id"
            ), {"d": RUN_DATE.isoformat()})]  # fmt: skip
    finally:
        engine.dispose()


def test_a_nightly_staged_on_s3_publishes_what_a_local_folder_publishes(
    env: Path, endpoint: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = f"s3://{BUCKET}/nightly/staging"
    monkeypatch.setenv("SPENDPRED_STAGING_DIR", root + "/")
    trained = _train(sqlite_url)  # the retrain stages on S3 too: snapshot, model bundle, registration
    assert trained["root"] == root and trained["train_dir"] == f"{root}/train/2024-05-01/model"
    assert trained["promotion"]["champion_version"] == "1"

    night = _nightly(sqlite_url)
    assert night["snapshot"]["root"] == root and night["tiers"]["root"] == root  # XCom carries the URL
    assert night["published"] == {"as_of": "2024-06-30", "rows": 240, "published": True}
    on_s3 = _partition(sqlite_url)
    assert len(on_s3) == 240 and {row[3] for row in on_s3} == {"1"}
    assert night["tiers"]["encoder"]["misses"] == 240  # a cold embedding cache
    again = _nightly(sqlite_url)  # the next run finds the embedding cache the first one staged on S3
    assert again["tiers"]["encoder"]["hits"] == 240 and again["tiers"]["encoder"]["misses"] == 0
    assert _partition(sqlite_url) == on_s3

    # nothing of staging on the local disk: no staging folder, no working copy left behind
    assert not (env / "staging").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    staged = keys(endpoint, BUCKET, "nightly/staging/")
    run = "nightly/staging/score/2024-06-30/"
    for key in ("snapshot/snapshot.parquet", "snapshot/snapshot.staged.json", "snapshot/validation.staged.json",
                "shards/shard-000-of-002.parquet", "shards/shard-000-of-002.staged.json",
                "shards/shard-001-of-002.staged.json", "tiers.parquet", "tiers.staged.json"):  # fmt: skip
        assert run + key in staged
    for key in ("model/model.staged.json", "model/bundle/bundle.json", "model/registered.staged.json"):
        assert "nightly/staging/train/2024-05-01/" + key in staged
    cache = [k for k in staged if k.startswith("nightly/staging/embedding-cache/")]
    assert cache and all(k.endswith((".parquet", ".staged.json")) for k in cache)  # each bucket file with its manifest
    assert not [k for k in staged if ".tmp-" in k]  # no temporary object survives

    # the same night with a local staging folder publishes the same partition
    monkeypatch.delenv("SPENDPRED_STAGING_DIR")
    local = _nightly(sqlite_url)
    assert local["snapshot"]["root"] == str(env / "staging")
    assert (env / "staging" / "score" / "2024-06-30" / "tiers.parquet").is_file()
    assert _partition(sqlite_url) == on_s3


def test_a_shard_that_fails_while_uploading_leaves_nothing_a_reader_trusts(
    env: Path, endpoint: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"s3://{BUCKET}/faults"
    monkeypatch.setenv("SPENDPRED_STAGING_DIR", root)
    _train(sqlite_url)
    snap = _xcom(pipeline.extract_scoring_snapshot(RUN_DATE, url=sqlite_url, model="champion"))
    pipeline.validate_snapshot(snap)
    plan = _xcom(pipeline.plan_shards(snap, 2))
    scored = [_xcom(pipeline.score_shard(spec, spec["shard"], 2)) for spec in plan]

    real = staging.shutil.copyfileobj

    def broken_upload(source: Any, target: Any, length: int = 0) -> None:  # the injected fault
        if str(getattr(source, "name", "")).endswith("shard-001-of-002.parquet"):
            target.write(source.read(100))
            raise OSError("connection reset by peer")
        real(source, target, length)

    monkeypatch.setattr(staging.shutil, "copyfileobj", broken_upload)
    with pytest.raises(StorageError, match="connection reset by peer"):
        pipeline.score_shard(plan[1], 1, 2)  # a retry of shard 1 dies while it uploads
    monkeypatch.setattr(staging.shutil, "copyfileobj", real)
    assert f"faults/score/2024-06-30/shards/shard-001-of-002.staged.json" not in keys(endpoint, BUCKET, "faults/")
    with pytest.raises(DataError, match=rf"shard 1/2 has no complete file at {root}/score/2024-06-30/shards: rerun score_shard"):
        pipeline.assign_tiers(snap, scored)  # the earlier, complete upload is not trusted either
    assert _partition(sqlite_url) == []

    scored[1] = _xcom(pipeline.score_shard(plan[1], 1, 2))  # the retry that succeeds
    tiered = pipeline.assign_tiers(snap, scored)
    assert pipeline.publish_scores(tiered, url=sqlite_url)["rows"] == 240
    assert len(_partition(sqlite_url)) == 240
