"""Benchmark: peak memory of reading the embedding cache in step with a night's snapshot, 100k vs 1M users.

What a warm night does with the cache, without the encoder: one shard's cache (its 64 bucket
files, MiniLM's width, 384 floats per user) is written with ``spendpred.embeddings.shard_cache``
in the scoring batches' size, then read back with ``ShardCache.lookup`` batch by batch in
``user_id`` order (every user a hit, every row's checksum verified), as
``spendpred.shards.score_shard_file`` does. Each
read runs in a fresh process (``multiprocessing`` spawn) whose resident set is sampled every
10 ms; it is run twice, side by side: with the product's reader
(``spendpred.files.open_parquet``: no pre-buffering) and with pyarrow's default
``ParquetFile`` (``pre_buffer=True``, the reader before the fix). It prints each size's peak
and the largest size's over the smallest's.

    .venv/bin/python bench/cache_memory.py                     # 100,000 and 1,000,000 users
    .venv/bin/python bench/cache_memory.py --users 10000,100000 --json /tmp/cache_memory.json

Plain public tools only: pyarrow, NumPy, Python's ``multiprocessing`` and ``/proc``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HIDDEN = 384  # all-MiniLM-L6-v2's width
BATCH = 50_000  # spendpred.shards.READ_BATCH_ROWS


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ids(start: int, stop: int) -> Any:
    import numpy as np

    return np.array([f"u{i:09d}" for i in range(start, stop)], dtype=object)


def _digests(ids: Any) -> list[bytes]:
    return [hashlib.sha256(str(uid).encode()).digest() for uid in ids]


def _write(path: str, users: int) -> float:
    """Write a cache of ``users`` rows under the staging folder ``path`` (random embeddings); return its MiB."""
    import numpy as np

    from spendpred.embeddings import shard_cache, shard_files

    rng = np.random.default_rng(0)
    cache = shard_cache(Path(path), "bench", 0, 1, HIDDEN, max_mb=1e7)
    for start in range(0, users, BATCH):
        ids = _ids(start, min(start + BATCH, users))
        cache.add(ids, _digests(ids), rng.random((len(ids), HIDDEN), dtype=np.float32))
    cache.commit()
    return sum(os.path.getsize(f) for f in shard_files(Path(path), "bench", 0, 1)) / 2**20


def _read(path: str, users: int, pre_buffer: bool) -> dict[str, Any]:
    """Look every user up in step, as a warm night does; return the peak RSS and the hits."""
    import pyarrow.parquet as pq

    from spendpred import embeddings

    if pre_buffer:  # the reader before the fix: pyarrow's default ParquetFile
        embeddings.open_parquet = lambda p: pq.ParquetFile(p)  # type: ignore[assignment]
    peak = [_rss_mib()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], _rss_mib())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    began = time.perf_counter()
    cache = embeddings.shard_cache(Path(path), "bench", 0, 1, HIDDEN, max_mb=1e7)
    hits = 0
    for start in range(0, users, BATCH):
        ids = _ids(start, min(start + BATCH, users))
        found, _ = cache.lookup(ids, _digests(ids))
        hits += int(found.sum())
    seconds = time.perf_counter() - began
    stop.set()
    thread.join()
    return {"peak_rss_mib": round(max(peak[0], _rss_mib()), 1), "hits": hits, "seconds": round(seconds, 2)}


def _in_child(func: Any, *args: Any) -> Any:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="100000,1000000", help="comma-separated sizes (default 100000,1000000)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    sizes = sorted(int(x.replace("_", "")) for x in args.users.split(",") if x.strip())
    if len(sizes) < 2 or sizes[0] < 1:
        parser.error("give at least two sizes >= 1, e.g. --users 100000,1000000")
    folder = Path(tempfile.mkdtemp(prefix="spendpred_bench_cache_"))
    rows = []
    try:
        for users in sizes:
            path = str(folder / f"staging-{users}")
            mib = _in_child(_write, path, users)
            row = {"users": users, "file_mib": round(mib, 1)}
            for label, pre_buffer in (("open_parquet", False), ("pyarrow_default", True)):
                result = _in_child(_read, path, users, pre_buffer)
                if result["hits"] != users:
                    raise SystemExit(f"{label}: {result['hits']} hits of {users}: the cache did not read back")
                row[label] = result
            rows.append(row)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    small, large = rows[0], rows[-1]
    lines = [f"{'users':>12}{'cache file':>12}{'product reader':>16}{'pre_buffer=True':>17}"]
    for r in rows:
        lines.append(f"{r['users']:>12,}{r['file_mib']:>9,.0f} MiB{r['open_parquet']['peak_rss_mib']:>12,.0f} MiB"
                     f"{r['pyarrow_default']['peak_rss_mib']:>13,.0f} MiB")  # fmt: skip
    ratios = {label: round(large[label]["peak_rss_mib"] / small[label]["peak_rss_mib"], 3)
              for label in ("open_parquet", "pyarrow_default")}  # fmt: skip
    lines.append(f"peak RSS {large['users']:,} / {small['users']:,} users: product reader {ratios['open_parquet']:.2f}x, "
                 f"pyarrow default (pre_buffer=True) {ratios['pyarrow_default']:.2f}x; measured side by side in this run "
                 f"({platform.platform()}, Python {platform.python_version()})")  # fmt: skip
    print("\n".join(lines), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"rows": rows, "ratios": ratios, "hidden": HIDDEN, "batch": BATCH},
                                                   indent=2) + "\n", encoding="utf-8")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
