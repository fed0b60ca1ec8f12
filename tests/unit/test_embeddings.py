"""The embedding cache: hits for unchanged texts, misses for new or changed ones, and never a wrong score.

A stand-in model encodes a text into numbers derived from the text and counts what it
encodes, so every test can tell which users were encoded and whether the output is right.
Faults are real damage to real files (bit flips, random bytes, truncation, foreign files, a
file where the folder belongs); only a read-only folder and a full disk are injected, as
``OSError`` from the cache's writer (tests run as root, which no permission stops).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendpred import embeddings, shards
from spendpred.splits import SHARD_BUCKETS, shard_bucket, shard_buckets, shard_of

USERS = [f"u{i:04d}" for i in range(300)]
KEY = "v1-test"


class _Model:
    """Encodes a text as [length, checksum of its bytes, 1.0, 0, ...]; predicts ``sum(embedding) + feature``."""

    feature_columns = ["tenure_days"]

    def __init__(self, hidden: int = 3) -> None:
        self.hidden_size = hidden
        self.encoded: list[str] = []

    def head_features(self, frame: pd.DataFrame, what: str) -> np.ndarray:
        return frame[self.feature_columns].to_numpy(np.float32)

    def encode(self, texts: list[str], batch_size: int | None = None, precision: str = "auto",
               num_threads: int | None = None) -> np.ndarray:  # fmt: skip
        self.encoded += texts
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        out[:, :3] = [[len(t), sum(t.encode()) % 997, 1.0] for t in texts]
        return out

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


def _files(staging: Path, key: str = KEY) -> list[Path]:
    folder = embeddings.cache_root(staging) / key
    return sorted(p for p in folder.iterdir() if p.name.startswith("bucket-")) if folder.is_dir() else []


def _rows(staging: Path, key: str = KEY) -> int:
    return sum(pq.read_metadata(p).num_rows for p in _files(staging, key))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "READ_BATCH_ROWS", 50)  # several batches per shard
    monkeypatch.setattr(embeddings, "_READ_BATCH", 3)  # cache batches out of step with the snapshot's


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


def test_the_layout_is_one_file_per_bucket_with_a_checksum_per_row(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    _score(_Model(), _snapshot(tmp_path / "a.parquet"), tmp_path / "s.parquet", staging)
    files = _files(staging)
    assert [p.name for p in files] == [embeddings.bucket_name(b) for b in range(SHARD_BUCKETS)]
    table = pa.concat_tables(pq.read_table(p) for p in files)
    assert table.column_names == ["user_id", "text_sha256", "embedding", "checksum"]
    ids = table.column("user_id").to_pylist()
    expected = embeddings.row_checksums(ids, table.column("text_sha256").to_pylist(),
                                        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)))  # fmt: skip
    assert table.column("checksum").to_pylist() == expected
    for path in files:  # each file holds its bucket's users, in user_id order
        users = pq.read_table(path).column("user_id").to_pylist()
        assert users == sorted(users) and set(shard_bucket(users).tolist()) <= {int(path.name[7:9])}


def test_a_single_bit_flip_changes_the_checksum() -> None:
    emb = np.arange(12, dtype=np.float32).reshape(2, 6)
    digests = embeddings.text_digests(["a", "b"])
    base = embeddings.row_checksums(["u1", "u2"], digests, emb)
    flipped = emb.copy()
    flipped.view(np.uint32)[1, 4] ^= 1 << 7
    assert embeddings.row_checksums(["u1", "u2"], digests, flipped) == [base[0], embeddings.row_checksums(["u2"], digests[1:], flipped[1:])[0]]
    assert embeddings.row_checksums(["u1", "u2"], digests, flipped)[1] != base[1]
    assert embeddings.row_checksums(["u1", "u3"], digests, emb)[1] != base[1]  # the user id counts too
    assert embeddings.row_checksums(["u1", "u2"], digests[::-1], emb) != base  # and the text digest


def test_new_and_departed_users(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    model = _Model()
    _score(model, _snapshot(tmp_path / "a.parquet", users=USERS[::2]), tmp_path / "s1.parquet", staging)
    model.encoded.clear()
    stats, scores = _score(model, _snapshot(tmp_path / "b.parquet", users=USERS[100:]), tmp_path / "s2.parquet", staging)
    assert stats.hits == 100 and stats.misses == 100  # even users from 100 on were cached
    _, expected = _score(_Model(), _snapshot(tmp_path / "c.parquet", users=USERS[100:]), tmp_path / "s3.parquet", staging, cache=False)
    assert scores == expected
    assert _rows(staging) == 200


# -- damage: correct scores, one warning, and the next night is warm again ----------------------

def _flip_embedding_bits(files: list[Path], flips: int, rng: np.random.Generator) -> None:
    """Flip ``flips`` single bits inside the embedding column's values; the Parquet structure stays intact."""
    regions = []
    for path in files:
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            chunk = meta.row_group(g).column(2)
            assert chunk.compression == "UNCOMPRESSED"
            end = chunk.data_page_offset + chunk.total_compressed_size
            values = meta.row_group(g).num_rows * pq.read_schema(path).field("embedding").type.list_size * 4
            regions.append((path, end - values, end))  # PLAIN float32 values end the page
    for i in rng.choice(len(regions), size=flips, replace=False):
        path, start, end = regions[i]
        data = bytearray(path.read_bytes())
        data[int(rng.integers(start, end))] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))


def _damage(staging: Path, tmp_path: Path, snapshot: Path, damage: str) -> None:
    rng = np.random.default_rng(7)
    files = _files(staging)
    if damage == "bit-flips":
        before = pa.concat_tables(pq.read_table(p) for p in files)
        _flip_embedding_bits(files, 20, rng)
        after = pa.concat_tables(pq.read_table(p) for p in files)  # still reads: nothing but the checksums can tell
        assert after.column("user_id") == before.column("user_id") and after.column("embedding") != before.column("embedding")
    elif damage == "random-bytes":
        for path in files:
            data = bytearray(path.read_bytes())
            size = min(4096, len(data) // 2)
            data[len(data) // 4 : len(data) // 4 + size] = rng.bytes(size)
            path.write_bytes(bytes(data))
    elif damage == "truncated":
        for path in files:
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "garbage":
        files[3].write_bytes(b"not parquet at all")
    elif damage == "empty":
        files[5].write_bytes(b"")
    elif damage == "other-model":
        _score(_Model(), snapshot, tmp_path / "s0.parquet", staging, key="v2-other")
        for path in _files(staging, "v2-other"):
            path.replace(embeddings.cache_root(staging) / KEY / path.name)
    elif damage == "other-bucket":
        files[0].write_bytes(files[1].read_bytes())
    elif damage == "other-width":
        pq.write_table(pa.table({"user_id": ["u0001"], "text_sha256": pa.array([b"x" * 32], pa.binary(32)),
                                 "embedding": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))}), files[0])  # fmt: skip
    elif damage == "not-a-folder":
        root = embeddings.cache_root(staging)
        for path in files:
            path.unlink()
        (root / KEY).rmdir()
        root.rmdir()
        root.write_text("someone's notes")
    elif damage == "key-not-a-folder":
        for path in files:
            path.unlink()
        (embeddings.cache_root(staging) / KEY).rmdir()
        (embeddings.cache_root(staging) / KEY).write_bytes(b"\0" * 10)
    else:
        raise AssertionError(damage)


DAMAGE = ["bit-flips", "random-bytes", "truncated", "garbage", "empty", "other-model", "other-bucket", "other-width",
          "not-a-folder", "key-not-a-folder"]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_costs_time_never_a_score(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    staging = tmp_path / "staging"
    _score(_Model(), _snapshot(tmp_path / "night1.parquet"), tmp_path / "s1.parquet", staging)
    snapshot = _snapshot(tmp_path / "night2.parquet", texts={"u0042": "bought a bike"}, tenure=2.0)
    _damage(staging, tmp_path, snapshot, damage)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        stats, scores = _score(_Model(), snapshot, tmp_path / "s2.parquet", staging)
    _, expected = _score(_Model(), snapshot, tmp_path / "s3.parquet", tmp_path / "no-cache", cache=False)
    assert scores == expected  # bit-identical to a night without the cache
    assert stats.users == 300 and stats.misses >= 2 and stats.cache_state == "repaired"
    [warning] = _warnings(caplog)  # one line, naming the problem and what to do
    assert warning.startswith("embedding cache ") and "Scores are unaffected" in warning and "Fix: " in warning
    assert "\n" not in warning
    problem = {"bit-flips": "failed their checksum", "not-a-folder": "was a file, not a folder: it was removed",
               "key-not-a-folder": "was a file, not a folder", "other-model": "64 files foreign: written for another model",
               "other-bucket": "bucket-00-of-64.parquet: foreign", "other-width": "(found no spendpred metadata)",
               "random-bytes": "unreadable", "truncated": "64 files unreadable", "garbage": "bucket-03-of-64.parquet: unreadable"}  # fmt: skip
    assert problem.get(damage, "") in warning
    if damage == "bit-flips":
        assert 2 < stats.misses <= 2 + 20  # only the rows whose checksum failed (and the changed user) were encoded

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again, scores_again = _score(_Model(), snapshot, tmp_path / "s4.parquet", staging)  # the next night
    assert (again.hits, again.misses, again.cache_state) == (300, 0, "warm") and scores_again == expected
    assert _warnings(caplog) == []


@pytest.mark.parametrize("damage", ["bit-flips", "random-bytes"])
def test_damage_inside_the_embedding_values_is_caught_at_minilm_width(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """The issue's faults at MiniLM's width, file structure intact: 20 single-bit flips, or 4 KiB of random bytes."""
    monkeypatch.setattr(shards, "READ_BATCH_ROWS", 100_000)  # one row group per file, as in a large night
    users = [f"u{i:05d}" for i in range(3000)]
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet", users=users)
    _score(_Model(384), snapshot, tmp_path / "s1.parquet", staging)
    before = pa.concat_tables(pq.read_table(p) for p in _files(staging))
    rng = np.random.default_rng(3)
    if damage == "bit-flips":  # in the first value of 20 rows (the others are zero, where a flip may not move a score)
        expected_misses = 20
        for path in rng.choice(_files(staging), size=20, replace=False):
            meta = pq.read_metadata(path)
            chunk = meta.row_group(0).column(2)
            start = chunk.data_page_offset + chunk.total_compressed_size - meta.row_group(0).num_rows * 384 * 4
            data = bytearray(path.read_bytes())
            data[start + 1] ^= 1 << int(rng.integers(0, 8))
            path.write_bytes(bytes(data))
    else:  # 4 KiB in the middle of one file's embedding values: the rows it covers (at most 4)
        path = _files(staging)[10]
        meta = pq.read_metadata(path)
        chunk = meta.row_group(0).column(2)
        end = chunk.data_page_offset + chunk.total_compressed_size
        start = end - meta.row_group(0).num_rows * 384 * 4
        middle = (start + end) // 2 - 2048
        data = bytearray(path.read_bytes())
        data[middle : middle + 4096] = rng.bytes(4096)
        path.write_bytes(bytes(data))
        first, last = (middle - start) // 1536, (middle + 4095 - start) // 1536
        expected_misses = last - first + 1
    after = pa.concat_tables(pq.read_table(p) for p in _files(staging))  # still reads: nothing but the checksums can tell
    assert after.column("user_id") == before.column("user_id") and after.column("embedding") != before.column("embedding")
    with caplog.at_level(logging.WARNING):
        stats, scores = _score(_Model(384), snapshot, tmp_path / "s2.parquet", staging)
    _, expected = _score(_Model(384), snapshot, tmp_path / "s3.parquet", tmp_path / "x", cache=False)
    assert scores == expected and stats.misses == expected_misses and stats.hits == 3000 - expected_misses
    [warning] = _warnings(caplog)
    assert f"{expected_misses} cached row(s) in" in warning and "failed their checksum" in warning
    again, _ = _score(_Model(384), snapshot, tmp_path / "s4.parquet", staging)
    assert again.hits == 3000


def test_non_finite_cached_values_are_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A row whose checksum holds but whose values are NaN (written that way) is never used."""
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _score(_Model(), snapshot, tmp_path / "s1.parquet", staging)
    path = _files(staging)[0]
    table = pq.read_table(path)
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    emb[0, 1] = np.nan
    sums = embeddings.row_checksums(table.column("user_id").to_pylist(), table.column("text_sha256").to_pylist(), emb)
    rewritten = table.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 3))
    pq.write_table(rewritten.set_column(3, "checksum", pa.array(sums, pa.binary(16))), path)
    with caplog.at_level(logging.WARNING):
        stats, scores = _score(_Model(), snapshot, tmp_path / "s2.parquet", staging)
    _, expected = _score(_Model(), snapshot, tmp_path / "s3.parquet", tmp_path / "x", cache=False)
    assert scores == expected and stats.misses == 1 and "non-finite" in _warnings(caplog)[0]


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_non_finite_embeddings_are_not_cached(tmp_path: Path) -> None:
    class Broken(_Model):
        def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
            out = super().encode(texts)
            out[[i for i, t in enumerate(texts) if t.endswith("0007")], 0] = np.inf
            return out

    staging = tmp_path / "staging"
    stats, _ = _score(Broken(), _snapshot(tmp_path / "night.parquet"), tmp_path / "s.parquet", staging)
    assert stats.written == 299 and _rows(staging) == 299


# -- a folder that cannot be written: scored anyway, the old cache kept, one warning ----------------

class _FailingWriter:
    """A real cache writer that fails with ``OSError(code)`` at the ``fail_at``-th write (or at close)."""

    def __init__(self, path: Path, schema: Any, code: int, fail_at: int | None) -> None:
        self.inner = pq.ParquetWriter(path, schema, compression="none", use_dictionary=False)
        self.code, self.fail_at, self.calls = code, fail_at, 0

    def write_table(self, table: Any) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise OSError(self.code, os.strerror(self.code))
        self.inner.write_table(table)

    def close(self) -> None:
        self.inner.close()
        if self.fail_at is None:
            raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize(
    ("fault", "fix"),
    [("read-only", "writable for the scoring worker"), ("disk-full", "free space on the disk"),
     ("disk-full-at-close", "free space on the disk")],  # fmt: skip
)
def test_an_unwritable_cache_folder_costs_time_never_a_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str, fix: str
) -> None:
    staging = tmp_path / "staging"
    _score(_Model(), _snapshot(tmp_path / "night1.parquet"), tmp_path / "s1.parquet", staging)
    before = {p.name: p.read_bytes() for p in _files(staging)}
    snapshot = _snapshot(tmp_path / "night2.parquet", texts={"u0042": "bought a bike"}, tenure=2.0)

    real = embeddings._new_writer

    def failing(path: Path, schema: Any) -> Any:
        if fault == "read-only":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return _FailingWriter(path, schema, errno.ENOSPC, 3 if fault == "disk-full" else None)

    monkeypatch.setattr(embeddings, "_new_writer", failing)
    with caplog.at_level(logging.WARNING):
        stats, scores = _score(_Model(), snapshot, tmp_path / "s2.parquet", staging)
    _, expected = _score(_Model(), snapshot, tmp_path / "s3.parquet", tmp_path / "x", cache=False)
    assert scores == expected and stats.hits == 299 and stats.cache_state == "unwritable" and stats.written == 0
    [warning] = _warnings(caplog)
    assert "could not be written" in warning and fix in warning
    assert {p.name: p.read_bytes() for p in _files(staging)} == before  # the old cache stays as it was
    assert not [p for p in (embeddings.cache_root(staging) / KEY).iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(embeddings, "_new_writer", real)  # the disk has room again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again, _ = _score(_Model(), snapshot, tmp_path / "s4.parquet", staging)
    assert (again.hits, again.misses, again.cache_state) == (299, 1, "warm") and _warnings(caplog) == []
    third, _ = _score(_Model(), snapshot, tmp_path / "s5.parquet", staging)
    assert third.hits == 300


def test_a_cold_night_on_an_unwritable_folder_scores_everyone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def read_only(path: Path, schema: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(embeddings, "_new_writer", read_only)
    snapshot = _snapshot(tmp_path / "night.parquet")
    with caplog.at_level(logging.WARNING):
        stats, scores = _score(_Model(), snapshot, tmp_path / "s1.parquet", tmp_path / "staging")
    _, expected = _score(_Model(), snapshot, tmp_path / "s2.parquet", tmp_path / "x", cache=False)
    assert scores == expected and stats.misses == 300 and stats.cache_state == "unwritable"
    assert len(_warnings(caplog)) == 1 and "Read-only file system" in _warnings(caplog)[0]


def test_a_damaged_cache_that_cannot_be_rewritten_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Damage and a full disk together: still one warning; the damaged file goes, so the next night is clean."""
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _score(_Model(), snapshot, tmp_path / "s1.parquet", staging)
    _files(staging)[3].write_bytes(b"junk")

    def full(path: Path, schema: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(embeddings, "_new_writer", full)
    with caplog.at_level(logging.WARNING):
        stats, _ = _score(_Model(), snapshot, tmp_path / "s2.parquet", staging)
    [warning] = _warnings(caplog)
    assert "bucket-03-of-64.parquet: unreadable" in warning and "No space left on device" in warning
    assert len(_files(staging)) == SHARD_BUCKETS - 1 and stats.cache_state == "unwritable"


# -- shards: a fixed bucket layout, whatever their number -------------------------------------------

def test_a_shard_count_change_keeps_the_cache(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _, expected = _score(_Model(), snapshot, tmp_path / "ref.parquet", tmp_path / "x", cache=False)
    for count, state in [(2, "cold"), (1, "warm"), (3, "warm"), (2, "warm")]:
        results = [_score(_Model(), snapshot, tmp_path / f"s{count}-{s}.parquet", staging, shard=s, shards_=count) for s in range(count)]
        scores = {u: v for _, part in results for u, v in part.items()}
        assert scores == expected
        hits = sum(stats.hits for stats, _ in results)
        assert hits == (0 if state == "cold" else 300), (count, hits)
        assert {stats.cache_state for stats, _ in results} == {state}
    assert [p.name for p in _files(staging)] == [embeddings.bucket_name(b) for b in range(SHARD_BUCKETS)]


def test_each_shard_writes_only_its_own_files(tmp_path: Path) -> None:
    for count in range(1, SHARD_BUCKETS + 1):
        owned = [embeddings.shard_files(tmp_path, KEY, s, count) for s in range(count)]
        flat = [p for files in owned for p in files]
        assert len(flat) == len(set(flat)) == SHARD_BUCKETS and all(owned)  # disjoint, complete, none empty
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    for shard in range(3):
        own = set(embeddings.shard_files(staging, KEY, shard, 3))
        others = {p: p.stat().st_mtime_ns for p in _files(staging) if p not in own}
        stats, scores = _score(_Model(), snapshot, tmp_path / f"s{shard}.parquet", staging, shard=shard, shards_=3)
        assert set(_files(staging)) >= own and {p: p.stat().st_mtime_ns for p in others} == others
        assert set(shard_of(list(scores), 3).tolist()) == {shard} and stats.written == len(scores)


def test_users_of_another_shard_are_never_written(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    cache = embeddings.shard_cache(staging, KEY, 0, 2, 3, 100)
    ids = np.array(USERS[:40], dtype=object)
    digests = embeddings.text_digests(list(ids))
    hits, _ = cache.lookup(ids, digests)
    cache.add(ids, digests, np.ones((40, 3), dtype=np.float32))
    cache.commit()
    assert not hits.any()
    assert cache.written == int((shard_of(list(ids), 2) == 0).sum()) == _rows(staging)
    assert {p.name for p in _files(staging)} <= {embeddings.bucket_name(b) for b in shard_buckets(0, 2)}


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    row_bytes = 3 * 4 + 32 + 16 + 24
    max_mb = 2 * SHARD_BUCKETS * row_bytes / 1_000_000  # room for 2 users per bucket
    per_bucket = np.bincount(shard_bucket(USERS), minlength=SHARD_BUCKETS)
    first, _ = _score(_Model(), snapshot, tmp_path / "s1.parquet", staging, max_mb=max_mb)
    assert first.written == int(np.minimum(per_bucket, 2).sum()) == _rows(staging)
    second, _ = _score(_Model(), snapshot, tmp_path / "s2.parquet", staging, max_mb=max_mb)
    assert second.hits == first.written and second.misses == 300 - first.written


def test_a_failed_shard_keeps_the_previous_cache(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _score(_Model(), snapshot, tmp_path / "s1.parquet", staging)
    before = {p.name: p.read_bytes() for p in _files(staging)}

    class Failing(_Model):
        def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
            raise RuntimeError("CUDA out of memory")

    changed = _snapshot(tmp_path / "changed.parquet", texts={"u0290": "new text"})
    with pytest.raises(RuntimeError, match="out of memory"):
        _score(Failing(), changed, tmp_path / "s2.parquet", staging)
    assert {p.name: p.read_bytes() for p in _files(staging)} == before
    assert sorted(p.name for p in (embeddings.cache_root(staging) / KEY).iterdir()) == sorted(before)  # no temporary file
    assert not (tmp_path / "s2.parquet").exists()


def test_users_out_of_order_turn_the_cache_off_not_wrong(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    staging = tmp_path / "staging"
    _score(_Model(), _snapshot(tmp_path / "a.parquet"), tmp_path / "s1.parquet", staging)
    shuffled = list(reversed(USERS))
    with caplog.at_level(logging.WARNING):
        stats, scores = _score(_Model(), _snapshot(tmp_path / "b.parquet", users=shuffled), tmp_path / "s2.parquet", staging)
    _, expected = _score(_Model(), _snapshot(tmp_path / "c.parquet", users=shuffled), tmp_path / "s3.parquet", staging, cache=False)
    assert scores == expected and stats.cache_state == "repaired"
    [warning] = _warnings(caplog)
    assert "not in ascending user_id order" in warning and "spendpred extract" in warning


def test_prune_drops_other_keys_and_stray_files(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    snapshot = _snapshot(tmp_path / "night.parquet")
    _score(_Model(), snapshot, tmp_path / "s.parquet", staging)
    _score(_Model(), snapshot, tmp_path / "old.parquet", staging, key="v0-old")
    folder = embeddings.cache_root(staging) / KEY
    (folder / "shard-0-of-2.parquet").write_bytes(b"old layout")
    young, old = folder / ".bucket-00-of-64.parquet.abc.tmp", folder / ".bucket-01-of-64.parquet.def.tmp"
    young.write_bytes(b"being written")
    old.write_bytes(b"left by a killed task")
    os.utime(old, (1, 1))
    (embeddings.cache_root(staging) / "stray.txt").write_text("x")
    removed = embeddings.prune(staging, KEY)
    assert sorted(p.name for p in removed) == sorted([".bucket-01-of-64.parquet.def.tmp", "shard-0-of-2.parquet", "stray.txt", "v0-old"])
    assert young.exists() and len(_files(staging)) == SHARD_BUCKETS
    assert embeddings.prune(staging, KEY) == []
    root = embeddings.cache_root(staging)
    for path in _files(staging):
        path.unlink()
    young.unlink()
    folder.rmdir()
    root.rmdir()
    root.write_text("a file where the folder belongs")
    assert embeddings.prune(staging, KEY) == []  # nothing to prune; the next shard repairs it


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
