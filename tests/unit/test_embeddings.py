"""The embedding cache: hits for unchanged texts, misses for new or changed ones, and never a wrong score.

A stand-in model encodes a text into numbers derived from the text and counts what it
encodes, so every test can tell which users were encoded and whether the output is right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendpred import embeddings, shards

USERS = [f"u{i:04d}" for i in range(300)]
KEY = "v1-test"


class _Model:
    """Encodes a text as [length, checksum of its bytes, 1.0]; predicts ``sum(embedding) + feature``."""

    feature_columns = ["tenure_days"]
    hidden_size = 3

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def head_features(self, frame: pd.DataFrame, what: str) -> np.ndarray:
        return frame[self.feature_columns].to_numpy(np.float32)

    def encode(self, texts: list[str], batch_size: int | None = None, precision: str = "auto",
               num_threads: int | None = None) -> np.ndarray:  # fmt: skip
        self.encoded += texts
        return np.array([[len(t), sum(t.encode()) % 997, 1.0] for t in texts], dtype=np.float32)

    def population_forecast(self, frame: pd.DataFrame) -> None:
        return None  # no trend anchor

    def predict_pooled(self, pooled: np.ndarray, features: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        return pooled.astype(np.float64).sum(axis=1) + features[:, 0]


def _snapshot(path: Path, texts: dict[str, str] | None = None, tenure: float = 1.0, users: list[str] = USERS) -> Path:
    texts = texts or {}
    table = pa.table({
        "user_id": users,
        "text": [texts.get(u, f"bought books {u[1:]}") for u in users],
        "tenure_days": [tenure] * len(users),
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=64)
    return path


def _score(model: _Model, snapshot: Path, out: Path, staging: Path, *, cache: bool = True, key: str = KEY,
           shard: int = 0, shards_: int = 1, max_mb: float = 100.0) -> tuple[embeddings.CacheStats, dict[str, float]]:  # fmt: skip
    shard_cache = embeddings.shard_cache(staging, key, shard, shards_, model.hidden_size, max_mb) if cache else None
    stats = shards.score_shard_file(model, snapshot, out, shard, shards_, cache=shard_cache)
    table = pq.read_table(out)
    return stats, dict(zip(table.column("user_id").to_pylist(), table.column("predicted_spend").to_pylist(), strict=True))


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "READ_BATCH_ROWS", 50)  # several batches per shard
    monkeypatch.setattr(embeddings, "_READ_BATCH", 37)  # cache batches out of step with the snapshot's


def test_second_night_encodes_only_changed_users_and_scores_the_same(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    first = _snapshot(tmp_path / "night1.parquet")
    model = _Model()
    cold, scores_cold = _score(model, first, tmp_path / "s1.parquet", staging)
    assert (cold.users, cold.hits, cold.misses, cold.cache_state, cold.written) == (300, 0, 300, "cold", 300)

    changed = {"u0007": "bought shoes", "u0150": "bought a phone"}
    second = _snapshot(tmp_path / "night2.parquet", texts=changed, tenure=2.0)
    model.encoded.clear()
    warm, scores_warm = _score(model, second, tmp_path / "s2.parquet", staging)
    assert (warm.users, warm.hits, warm.misses, warm.cache_state) == (300, 298, 2, "warm")
    assert sorted(model.encoded) == sorted(changed.values())
    assert warm.hit_rate == pytest.approx(298 / 300)

    fresh, scores_fresh = _score(_Model(), second, tmp_path / "s3.parquet", tmp_path / "other", cache=False)
    assert fresh.cache_state == "off"
    assert scores_warm == scores_fresh  # the features are today's, the cached text embeddings exact
    assert scores_warm["u0001"] == scores_cold["u0001"] + 1.0  # tenure moved, text did not


def test_new_and_departed_users(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    model = _Model()
    _score(model, _snapshot(tmp_path / "a.parquet", users=USERS[::2]), tmp_path / "s1.parquet", staging)
    model.encoded.clear()
    stats, scores = _score(model, _snapshot(tmp_path / "b.parquet", users=USERS[100:]), tmp_path / "s2.parquet", staging)
    assert stats.hits == 100 and stats.misses == 100  # even users from 100 on were cached
    _, expected = _score(_Model(), _snapshot(tmp_path / "c.parquet", users=USERS[100:]), tmp_path / "s3.parquet", staging, cache=False)
    assert scores == expected
    assert pq.read_metadata(embeddings.shard_cache(staging, KEY, 0, 1, 3, 100).path).num_rows == 200


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other-model", "other-width"])
def test_a_corrupt_or_foreign_cache_only_costs_time(tmp_path: Path, damage: str) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _score(_Model(), snapshot, tmp_path / "s1.parquet", staging)
    path = embeddings.shard_cache(staging, KEY, 0, 1, 3, 100).path
    if damage == "garbage":
        path.write_bytes(b"not parquet at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other-model":
        path.rename(path.with_name("keep"))
        _score(_Model(), snapshot, tmp_path / "s0.parquet", staging, key="v2-other")
        embeddings.shard_cache(staging, "v2-other", 0, 1, 3, 100).path.replace(path)
    else:
        pq.write_table(pa.table({"user_id": ["u0001"], "text_sha256": pa.array([b"x" * 32], pa.binary(32)),
                                 "embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))}), path)  # fmt: skip
    model = _Model()
    stats, scores = _score(model, snapshot, tmp_path / "s2.parquet", staging)
    assert stats.cache_state == "unusable" and stats.misses == 300 and stats.hits == 0
    _, expected = _score(_Model(), snapshot, tmp_path / "s3.parquet", tmp_path / "x", cache=False)
    assert scores == expected
    again, _ = _score(_Model(), snapshot, tmp_path / "s4.parquet", staging)  # rewritten: warm again
    assert again.hits == 300


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    row_bytes = 3 * 4 + 32 + 24
    max_mb = 120 * row_bytes / 1_000_000  # room for 120 users
    first, _ = _score(_Model(), snapshot, tmp_path / "s1.parquet", staging, max_mb=max_mb)
    assert first.written == 120
    second, _ = _score(_Model(), snapshot, tmp_path / "s2.parquet", staging, max_mb=max_mb)
    assert second.hits == 120 and second.misses == 180


def test_a_failed_shard_keeps_the_previous_cache(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _score(_Model(), snapshot, tmp_path / "s1.parquet", staging)
    path = embeddings.shard_cache(staging, KEY, 0, 1, 3, 100).path
    before = path.read_bytes()

    class Failing(_Model):
        def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
            raise RuntimeError("CUDA out of memory")

    changed = _snapshot(tmp_path / "changed.parquet", texts={"u0290": "new text"})
    with pytest.raises(RuntimeError, match="out of memory"):
        _score(Failing(), changed, tmp_path / "s2.parquet", staging)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    assert not (tmp_path / "s2.parquet").exists()


def test_users_out_of_order_turn_the_cache_off_not_wrong(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    _score(_Model(), _snapshot(tmp_path / "a.parquet"), tmp_path / "s1.parquet", staging)
    shuffled = list(reversed(USERS))
    stats, scores = _score(_Model(), _snapshot(tmp_path / "b.parquet", users=shuffled), tmp_path / "s2.parquet", staging)
    _, expected = _score(_Model(), _snapshot(tmp_path / "c.parquet", users=shuffled), tmp_path / "s3.parquet", staging, cache=False)
    assert scores == expected and stats.cache_state == "unusable"


def test_shards_keep_their_own_files_and_prune_drops_the_rest(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    for shard in range(2):
        _score(_Model(), snapshot, tmp_path / f"s{shard}.parquet", staging, shard=shard, shards_=2)
    warm = [_score(_Model(), snapshot, tmp_path / f"w{s}.parquet", staging, shard=s, shards_=2)[0] for s in range(2)]
    assert sum(w.hits for w in warm) == 300 and sum(w.misses for w in warm) == 0
    _score(_Model(), snapshot, tmp_path / "old.parquet", staging, key="v0-old")
    removed = embeddings.prune(staging, KEY, 2)
    root = embeddings.cache_root(staging)
    assert [p.name for p in removed] == ["v0-old"]
    assert sorted(p.name for p in (root / KEY).iterdir()) == ["shard-0-of-2.parquet", "shard-1-of-2.parquet"]
    assert [p.name for p in embeddings.prune(staging, KEY, 3)] == ["shard-0-of-2.parquet", "shard-1-of-2.parquet"]


def test_stats_add_up_and_keys_name_model_and_settings() -> None:
    parts = [embeddings.CacheStats(100, 90, 10, 1.5, "warm", 100, "k").as_dict(),
             embeddings.CacheStats(50, 0, 50, 3.0, "cold", 50, "k").as_dict()]  # fmt: skip
    total = embeddings.CacheStats.total(parts)
    assert total == {"users": 150, "hits": 90, "misses": 60, "hit_rate": 0.6, "encode_seconds": 4.5,
                     "cache": "cold,warm", "written": 150, "key": "k"}  # fmt: skip
    meta = {"files": {"head.safetensors": "ab"}, "max_length": 128}
    key = embeddings.cache_key("3", meta, "fp32", None, "cpu")
    assert key.startswith("v3-") and key == embeddings.cache_key("3", meta, "fp32", None, "cpu")
    assert key != embeddings.cache_key("4", meta, "fp32", None, "cpu")
    assert key != embeddings.cache_key("3", {**meta, "files": {"head.safetensors": "cd"}}, "fp32", None, "cpu")
    assert key != embeddings.cache_key("3", meta, "bf16", None, "cuda")
