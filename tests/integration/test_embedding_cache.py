"""A damaged embedding cache costs a night time, never a score (issue 22, item 1): full nightly runs.

A tiny model is trained and a date scored with the cache off (the reference rows). Then the
cache is damaged as the issue measured it: 20 single-bit flips inside the embedding column
(file structure intact), 4 KiB of random bytes in the middle of a cache file, a plain file
where the cache's folder belongs. Each damaged night publishes exactly the reference rows and
logs one warning; the next night reads a good cache again. The shard count moves
2 -> 1 -> 3 -> 2 -> 1 -> 2 along the way, and every warm night is a full hit.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from spendpred import pipeline
from spendpred.snapshot import RunFolder
from tests.integration.test_shard_independence import RUN_DATE, _published



def _cache_files(run_date: dt.date) -> list[Path]:
    root = RunFolder.for_date("score", run_date).embedding_cache()
    [folder] = [p for p in root.iterdir() if p.is_dir()]
    return sorted(folder.glob("bucket-*.parquet"))


def _values_region(path: Path) -> tuple[int, int, int]:
    """Byte range of the first row group's embedding values (PLAIN float32 end the page) and the width."""
    meta = pq.read_metadata(path)
    width = pq.read_schema(path).field("embedding").type.list_size
    chunk = meta.row_group(0).column(2)
    end = chunk.data_page_offset + chunk.total_compressed_size
    return end - meta.row_group(0).num_rows * width * 4, end, width


def test_a_damaged_cache_never_changes_a_published_score(
    tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=13, url=sqlite_url)
    assert pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)["promotion"]["promoted"] is True

    def night(shards: int, **env: str) -> tuple[dict, list, list[str]]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spendpred.embeddings"):
            result = pipeline.score(RUN_DATE, shards=shards, url=sqlite_url)
        for key in env:
            monkeypatch.delenv(key)
        assert result["published"] is True and result["rows"] == 300
        warnings = [r.getMessage() for r in caplog.records if r.name == "spendpred.embeddings" and r.levelno >= logging.WARNING]
        return result["encoder"], _published(sqlite_url, RUN_DATE), warnings

    _, reference, _ = night(2, SPENDPRED_EMBEDDING_CACHE="false")
    assert len(reference) == 300 and len({s for _, s, _ in reference}) > 1

    cold, rows, warnings = night(2)
    assert (cold["hits"], cold["cache"], rows, warnings) == (0, "cold", reference, [])

    # 20 single-bit flips in 20 users' embedding values: every file still reads, nothing else can tell
    rng = np.random.default_rng(5)
    for path in rng.choice(_cache_files(RUN_DATE), size=20, replace=False):
        start, _, width = _values_region(path)
        data = bytearray(path.read_bytes())
        data[start + 4 * int(rng.integers(0, width)) + 2] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        pq.read_table(path)
    damaged, rows, warnings = night(1)
    assert rows == reference and (damaged["hits"], damaged["misses"], damaged["cache"]) == (280, 20, "repaired")
    assert len(warnings) == 1 and "20 cached row(s) in 20 files failed their checksum" in warnings[0]

    warm, rows, warnings = night(3)  # back to normal, on another shard count
    assert (warm["hits"], warm["cache"], rows, warnings) == (300, "warm", reference, [])

    # random bytes in the middle of the largest cache file (4 KiB, or half of a smaller file)
    path = max(_cache_files(RUN_DATE), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    size = min(4096, len(data) // 2)
    data[len(data) // 4 : len(data) // 4 + size] = rng.bytes(size)
    path.write_bytes(bytes(data))
    damaged, rows, warnings = night(2)
    assert rows == reference and damaged["misses"] >= 1 and damaged["cache"] == "repaired,warm"
    assert len(warnings) == 1 and (path.name in warnings[0] or "failed their checksum" in warnings[0])

    # a plain file where the cache's folder belongs
    root = RunFolder.for_date("score", RUN_DATE).embedding_cache()
    shutil.rmtree(root)
    root.write_text("not a folder")
    damaged, rows, warnings = night(1)
    assert rows == reference and (damaged["misses"], damaged["cache"]) == (300, "repaired")
    assert len(warnings) == 1 and "was a file, not a folder: it was removed" in warnings[0]

    warm, rows, warnings = night(2)
    assert (warm["hits"], warm["cache"], rows, warnings) == (300, "warm", reference, [])
