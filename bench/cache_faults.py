"""Benchmark: what a damaged embedding cache costs a night, against a cold and a warm night, side by side.

One run, one machine, one synthetic SQLite warehouse in a temporary ``SPENDPRED_HOME``:
seed ``--users`` users, train a champion (head only, 1 epoch, ``--max-users`` users), then
score the same date as the nightly does (``spendpred.pipeline``: extract, validate, plan the
shards, score each shard, tiers, publish) once to warm the process up (not reported), then
five times (``--repeats`` times each, medians reported):

1. **cold**: no cache (the cache folder removed first): every user is encoded;
2. **warm**: the cache the cold night wrote: every user a hit (the same date, so no text changed);
3. **damaged**: 4 KiB of random bytes written into the middle of every cache file (or over
   half of a smaller file), the issue's fault: the rows they hit fail their checksum, or the
   file cannot be read, and those users are encoded;
4. **destroyed**: every cache file overwritten with random bytes of the same size: no file
   can be read, every user is encoded;
5. **next night**: the cache the destroyed night rewrote: warm again.

It prints each night's seconds (the whole night and its scoring step), the users encoded, the
cache hits, the cache's state and the warnings it logged, each night's time over the warm and
the cold night's, and whether every night published the cold night's rows bit for bit.

    .venv/bin/python bench/cache_faults.py                      # 2,000 users, the default encoder (MiniLM)
    .venv/bin/python bench/cache_faults.py --encoder tiny --users 20000 --shards 2
    .venv/bin/python bench/cache_faults.py --repeats 3 --json bench/results/cache_faults.json

``--encoder tiny`` builds a tiny random BERT (``spendpred.model.tiny``: 2 layers, hidden 32);
the encoder is then a small share of a night and the ratios show the rest of the night.
Plain public tools only: ``time.perf_counter``, Python's ``logging`` and ``random`` bytes
from NumPy; scores compared with SQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _env import OFFLINE_ENV  # noqa: E402
NIGHTS = ("cold", "warm", "damaged", "destroyed", "next night")


class _WarningCounter(logging.Handler):
    """Counts the embedding cache's warnings (and keeps the last one)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record.getMessage()


def _configure_env(home: Path) -> str:
    """Point every spendpred default into ``home``; return the warehouse URL."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    for key in [k for k in os.environ if k.startswith("SPENDPRED_") and k != "SPENDPRED_ENCODER_DIR"]:
        os.environ.pop(key)
    os.environ["SPENDPRED_HOME"] = str(home)
    url = f"sqlite:///{home / 'warehouse.db'}"
    os.environ["SPENDPRED_WAREHOUSE_URL"] = url
    return url


def _setup(args: argparse.Namespace, home: Path, url: str) -> dict[str, Any]:
    """Seed the warehouse and register a champion; return what was set up and how long it took."""
    from spendpred import pipeline
    from spendpred.config import get_settings

    began = time.perf_counter()
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        os.environ["SPENDPRED_ENCODER_DIR"] = str(make_tiny_bert(home / "encoder-tiny"))
    elif args.encoder:
        os.environ["SPENDPRED_ENCODER_DIR"] = str(args.encoder)
    pipeline.init_warehouse(url)
    pipeline.seed(args.users, args.days, args.run_date, args.seed, url=url)
    trained = pipeline.train(args.run_date, epochs=1, max_users=args.max_users, freeze="all-but-head",
                             promote="force", url=url)  # fmt: skip
    if not trained["promotion"]["promoted"]:
        raise SystemExit(f"the model was not promoted: {trained['promotion']}")
    return {"setup_s": round(time.perf_counter() - began, 1), "encoder_dir": str(get_settings().resolved_encoder_dir)}


def _night(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Run the nightly's steps for the run date; return the seconds (night, scoring), the encoder figures and warnings."""
    from spendpred import pipeline

    counter = _WarningCounter()
    logger = logging.getLogger("spendpred.embeddings")
    logger.addHandler(counter)
    try:
        began = time.perf_counter()
        snapshot = pipeline.extract_scoring_snapshot(args.run_date, url, model="champion")
        pipeline.validate_snapshot(snapshot)
        plan = pipeline.plan_shards(snapshot, args.shards)
        scoring = time.perf_counter()
        scored = [pipeline.score_shard(p, p["shard"], p["shards"], "champion") for p in plan]
        scoring_s = time.perf_counter() - scoring
        tiered = pipeline.assign_tiers(snapshot, scored)
        pipeline.publish_scores(tiered, url=url)
        night_s = time.perf_counter() - began
    finally:
        logger.removeHandler(counter)
    return {"night_s": round(night_s, 2), "scoring_s": round(scoring_s, 2), "encoder": tiered["encoder"],
            "warnings": counter.count, "warning": counter.last}  # fmt: skip


def _published(url: str, as_of: dt.date) -> list[tuple[str, float, str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT user_id, predicted_spend, tier FROM user_spend_scores "
                                        "WHERE CAST(as_of AS TEXT) = :d ORDER BY user_id"), {"d": as_of.isoformat()})  # fmt: skip
            return [(str(u), float(s), str(t)) for u, s, t in rows]
    finally:
        engine.dispose()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else round((ordered[middle - 1] + ordered[middle]) / 2, 2)


def _cache_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/bucket-*.parquet"))


def _damage(root: Path, how: str, seed: int) -> int:
    """Write random bytes into every cache file under ``root``; return the number of files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    files = _cache_files(root)
    for path in files:
        data = bytearray(path.read_bytes())
        if how == "destroyed":
            data[:] = rng.bytes(len(data))
        else:
            size = min(4096, len(data) // 2)
            start = (len(data) - size) // 2
            data[start : start + size] = rng.bytes(size)
        path.write_bytes(bytes(data))
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="synthetic users (default 2,000)")
    parser.add_argument("--days", type=int, default=180, help="days of synthetic history (default 180)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=dt.date(2024, 6, 30),
                        help="the date scored every night (default 2024-06-30)")  # fmt: skip
    parser.add_argument("--shards", type=int, default=1, help="scoring shards, run one after the other (default 1)")
    parser.add_argument("--encoder", default=None,
                        help="'tiny' for a tiny random BERT, a checkpoint folder, or the product default (MiniLM)")  # fmt: skip
    parser.add_argument("--max-users", type=int, default=500, help="users the champion is trained on (default 500)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the data and the damage (default 42)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the five nights this many times and report each night's median seconds (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    home = Path(tempfile.mkdtemp(prefix="spendpred_bench_cache_faults_"))
    try:
        url = _configure_env(home)
        setup = _setup(args, home, url)
        from spendpred.snapshot import RunFolder

        root = RunFolder.for_date("score", args.run_date).embedding_cache()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in NIGHTS}
        published: dict[str, list[tuple[str, float, str]]] = {}
        _night(args, url)  # warm-up, not reported: the first night in a process also loads the model and libraries
        for repeat in range(max(args.repeats, 1)):
            for name in NIGHTS:
                if name == "cold":
                    shutil.rmtree(root, ignore_errors=True)
                elif name in ("damaged", "destroyed"):
                    if not _damage(root, name, args.seed + repeat):
                        raise SystemExit(f"no cache files under {root} before the {name} night")
                runs[name].append(_night(args, url))
                published[f"{name} {repeat}"] = _published(url, args.run_date)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    reference = published["cold 0"]
    identical = all(rows == reference for rows in published.values()) and len(reference) == args.users
    results = {name: {**parts[-1], "night_s": _median([r["night_s"] for r in parts]),
                      "scoring_s": _median([r["scoring_s"] for r in parts]), "runs": parts}
               for name, parts in runs.items()}  # fmt: skip
    warm, cold = results["warm"], results["cold"]
    lines = [
        f"{args.users:,} users, {args.shards} shard(s), encoder {setup['encoder_dir']}; setup {setup['setup_s']} s; "
        f"seconds are the median of {max(args.repeats, 1)} run(s) of each night",
        f"{'night':<12}{'night s':>9}{'scoring s':>11}{'encoded':>9}{'hits':>8}  {'cache':<18}{'warnings':>9}"
        f"{'vs warm':>9}{'vs cold':>9}",
    ]  # fmt: skip
    for name, r in results.items():
        enc = r["encoder"]
        lines.append(
            f"{name:<12}{r['night_s']:>9.2f}{r['scoring_s']:>11.2f}{enc['misses']:>9,}{enc['hits']:>8,}  {enc['cache']:<18}"
            f"{r['warnings']:>9}{r['night_s'] / warm['night_s']:>8.2f}x{r['night_s'] / cold['night_s']:>8.2f}x"
        )  # fmt: skip
    lines.append(f"every night published the first cold night's {len(reference):,} rows bit for bit: {'yes' if identical else 'NO'}")
    for name in ("damaged", "destroyed"):
        if results[name]["warning"]:
            lines.append(f"{name} night's warning: {results[name]['warning']}")
    lines.append(f"measured side by side in this run ({platform.platform()}, Python {platform.python_version()}, "
                 f"{os.cpu_count()} CPUs)")  # fmt: skip
    print("\n".join(lines), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "setup": setup,
                                                    "nights": results, "identical": identical}, indent=2) + "\n",
                                        encoding="utf-8")  # fmt: skip
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
