"""Benchmark: what reason codes cost (issue 25): explanation time per user, and the nightly overhead of the
default scope as a ratio to the scoring time in the same run.

In a temporary ``SPENDPRED_HOME`` (SQLite warehouse, MLflow store, staging): seed ``--users`` users,
train a champion (1 epoch, promoted by force), then two nights: D (cold embedding cache) and D+1
(``synth.append_day`` first, so the cache is warm and some tiers change). Each night runs the nightly
steps one by one, timed: extract, validate, plan, score_shard, assign_tiers, explain_scores,
publish_scores. Prints per night the seconds of scoring (``score_shard``) and of ``explain_scores``,
the users explained, the seconds per explained user, and ``explain / score``. ``--scope-all`` adds
a third run of night D+1 explaining everyone; ``--split-text`` has the nightly split the text's
contribution by segment (``explain_scores(split_text=True)``; off by default).

    .venv/bin/python bench/explain_cost.py                       # tiny encoder, 1,000 users
    .venv/bin/python bench/explain_cost.py --encoder minilm --users 500 --max-users 500
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _night(pipeline, day: dt.date, url: str, split_text: bool | None = None) -> dict:  # noqa: ANN001
    times: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        began = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name] = times.get(name, 0.0) + time.perf_counter() - began
        return out

    snap = timed("extract", pipeline.extract_scoring_snapshot, day, url, model="champion")
    timed("validate", pipeline.validate_snapshot, snap)
    plan = timed("plan", pipeline.plan_shards, snap, 1)
    scored = [timed("score", pipeline.score_shard, spec, spec["shard"], spec["shards"], "champion") for spec in plan]
    tiers = timed("tiers", pipeline.assign_tiers, snap, scored)
    explained = timed("explain", pipeline.explain_scores, tiers, split_text)
    timed("publish", pipeline.publish_scores, explained, url=url)
    info = explained["reasons"]
    return {"as_of": day.isoformat(), "seconds": {k: round(v, 3) for k, v in times.items()}, "explained": info["users"],
            "per_user_s": round(times["explain"] / max(info["users"], 1), 4),
            "explain_over_score": round(times["explain"] / times["score"], 3),
            "max_gap": info["max_gap"], "encoded": scored[0]["encoder"]["misses"], "counts": tiers["counts"],
            "explain_cache_hits": info.get("cache_hits"), "explain_encoded": info.get("encoded"),
            "text_split": info.get("text_split")}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--max-users", type=int, default=None, help="training sample (default: all)")
    parser.add_argument("--encoder", default="tiny", help="'tiny' (random 2-layer BERT) or 'minilm' (the product default)")
    parser.add_argument("--scope-all", action="store_true", help="also rerun the second night with SPENDPRED_REASONS_SCOPE=all")
    parser.add_argument("--split-text", action="store_true",
                        help="split the text's contribution by segment in the nightly (one encoder pass per explained user)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="spendpred-explain-bench-"))
    os.environ["SPENDPRED_HOME"] = str(home)
    os.environ["SPENDPRED_HORIZON_DAYS"] = "60"
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        os.environ["SPENDPRED_ENCODER_DIR"] = str(make_tiny_bert(home / "tiny-bert"))
    import torch

    from spendpred import pipeline

    url = f"sqlite:///{home / 'warehouse.db'}"
    day = dt.date(2024, 6, 30)
    began = time.perf_counter()
    pipeline.seed(users=args.users, days=400, end_date=day, seed=7, url=url)
    pipeline.train(day, epochs=1, max_users=args.max_users, promote="force", url=url)
    setup = time.perf_counter() - began
    split = True if args.split_text else None
    nights = [_night(pipeline, day, url, split)]
    pipeline.append_day(day + dt.timedelta(days=1), 7, url, daily_active=0.05)
    nights.append(_night(pipeline, day + dt.timedelta(days=1), url, split))
    if args.scope_all:
        os.environ["SPENDPRED_REASONS_SCOPE"] = "all"
        nights.append({**_night(pipeline, day + dt.timedelta(days=1), url, split), "scope": "all"})
    result = {"users": args.users, "encoder": args.encoder, "setup_s": round(setup, 1), "nights": nights,
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "platform": platform.platform()}}  # fmt: skip
    print(f"{args.users} users, encoder {args.encoder}, setup {setup:.1f}s, text split {'on' if args.split_text else 'off'}")
    print(f"{'night':<12}{'scope':<9}{'score s':>9}{'explain s':>11}{'explained':>11}{'s/user':>9}{'explain/score':>15}{'max gap':>10}")
    for night in nights:
        s = night["seconds"]
        print(f"{night['as_of']:<12}{night.get('scope', 'default'):<9}{s['score']:>9.2f}{s['explain']:>11.2f}{night['explained']:>11}"
              f"{night['per_user_s']:>9.4f}{night['explain_over_score']:>15.3f}{night['max_gap']:>10.4f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
