"""Benchmark: what reason codes cost (issue 25): explanation time per user, and the nightly overhead of the
default scope as a ratio to the scoring time in the same run.

In a temporary ``SPENDPRED_HOME`` (SQLite warehouse, MLflow store, staging): seed ``--users`` users,
train a champion (1 epoch, promoted by force), then ``--nights`` nights (default 3): D (cold embedding
cache), then D+1, D+2 (``synth.append_day`` first, so the cache is warm and some tiers change; from D+1
on, a user whose inputs are unchanged keeps the previous night's reasons, and baseline embeddings are
carried in the reasons file). Each night runs the nightly steps one by one, timed: extract, validate,
plan, score_shard, assign_tiers, explain_scores, publish_scores. Prints per night the seconds of scoring
(``score_shard``) and of ``explain_scores``, the users explained, those whose reasons were carried, the
baselines encoded, the seconds per explained user, and ``explain / score``. ``--scope-all`` adds a rerun
of the last night explaining everyone; ``--split-text`` has the nightly split the text's contribution by
segment (``explain_scores(split_text=True)``; off by default). ``--repeat N`` then times the last
night's ``score_shard`` and ``explain_scores`` alternately N times (medians; each explain without the
night's own reasons file, as a night after the previous one, then once more as a rerun that carries
every user's reasons); ``--profile FILE`` writes cProfile stats of one more such ``explain_scores``;
``--steps-check N`` compares the head path's 4, 8, 16 and 32 integrated-gradients steps with 128 on N users of the
last night (the champion; contribution differences, completeness gaps, same reasons); ``--model-cache-ab N`` times the last night's two steps with the local model cache (``SPENDPRED_MODEL_CACHE``)
off and on, alternating, N times each (medians). ``--home DIR`` reuses an earlier run's bench home (pass its
``--encoder`` and ``--nights``): no set-up and no nights, only those re-timings of its last night; with ``--more-nights N``
it first runs N more real nights (``append_day``, then each step timed, as a next night: its changed texts encoded).

    .venv/bin/python bench/explain_cost.py                       # tiny encoder, 1,000 users
    .venv/bin/python bench/explain_cost.py --repeat 5 --profile /tmp/explain.prof
    .venv/bin/python bench/explain_cost.py --nights 3 --model-cache-ab 5
    .venv/bin/python bench/explain_cost.py --home /tmp/spendpred-explain-bench-XXXX --encoder minilm --nights 2 --model-cache-ab 3
    .venv/bin/python bench/explain_cost.py --encoder minilm --users 500 --max-users 500
    .venv/bin/python bench/explain_cost.py --home /tmp/spendpred-explain-bench-XXXX --encoder minilm --nights 2 --steps-check 600
    .venv/bin/python bench/explain_cost.py --home /tmp/spendpred-explain-bench-XXXX --encoder minilm --nights 2 --more-nights 1
    .venv/bin/python bench/explain_cost.py --encoder minilm --users 100000 --max-users 3000 --freeze all-but-head --nights 2
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
            "carried": info.get("carried"), "baselines_encoded": info.get("baselines_encoded"),
            "text_split": info.get("text_split")}  # fmt: skip


def _interleaved(pipeline, day: dt.date, url: str, repeat: int) -> dict:  # noqa: ANN001
    """Night ``day`` again, ``score_shard`` and ``explain_scores`` timed alternately ``repeat`` times (medians).

    Before each ``explain_scores`` the night's own reasons file is removed, so it attributes as a second
    night does (carrying only from the previous night's file), not as a rerun that carries everything.
    """
    import statistics

    from spendpred.snapshot import RunFolder

    snap = pipeline.extract_scoring_snapshot(day, url, model="champion")
    pipeline.validate_snapshot(snap)
    plan = pipeline.plan_shards(snap, 1)
    run = RunFolder.for_date("score", day)
    score_s, explain_s, rerun_s = [], [], []
    for _ in range(repeat):
        began = time.perf_counter()
        scored = [pipeline.score_shard(spec, spec["shard"], spec["shards"], "champion") for spec in plan]
        score_s.append(time.perf_counter() - began)
        tiers = pipeline.assign_tiers(snap, scored)
        run.reasons_parquet.unlink(missing_ok=True)
        began = time.perf_counter()
        pipeline.explain_scores(tiers)
        explain_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        rerun = pipeline.explain_scores(tiers)
        rerun_s.append(time.perf_counter() - began)
    med = statistics.median
    return {"repeat": repeat, "score_s": round(med(score_s), 3), "explain_s": round(med(explain_s), 3),
            "rerun_explain_s": round(med(rerun_s), 3), "explain_over_score": round(med(explain_s) / med(score_s), 3),
            "rerun_over_score": round(med(rerun_s) / med(score_s), 3), "rerun_carried": rerun["reasons"]["carried"]}  # fmt: skip


def _model_cache_ab(pipeline, day: dt.date, url: str, repeat: int) -> dict:  # noqa: ANN001
    """Night ``day`` again, ``score_shard`` then ``explain_scores`` (as a night after the previous one)
    with the local model cache off and on (``SPENDPRED_MODEL_CACHE``), alternating, ``repeat`` times each (medians)."""
    import statistics

    from spendpred.snapshot import RunFolder

    snap = pipeline.extract_scoring_snapshot(day, url, model="champion")
    pipeline.validate_snapshot(snap)
    plan = pipeline.plan_shards(snap, 1)
    run = RunFolder.for_date("score", day)
    times: dict[str, dict[str, list[float]]] = {mode: {"score": [], "explain": []} for mode in ("off", "on")}
    for _ in range(repeat):
        for mode in ("off", "on"):
            os.environ["SPENDPRED_MODEL_CACHE"] = "false" if mode == "off" else "true"
            began = time.perf_counter()
            scored = [pipeline.score_shard(spec, spec["shard"], spec["shards"], "champion") for spec in plan]
            times[mode]["score"].append(time.perf_counter() - began)
            tiers = pipeline.assign_tiers(snap, scored)
            run.reasons_parquet.unlink(missing_ok=True)
            began = time.perf_counter()
            pipeline.explain_scores(tiers)
            times[mode]["explain"].append(time.perf_counter() - began)
    os.environ.pop("SPENDPRED_MODEL_CACHE", None)
    med = statistics.median
    return {mode: {"score_s": round(med(t["score"]), 3), "explain_s": round(med(t["explain"]), 3),
                   "explain_over_score": round(med(t["explain"]) / med(t["score"]), 3)} for mode, t in times.items()}  # fmt: skip


def _steps_check(day: dt.date, users: int) -> list[dict]:
    """The head path's integrated-gradients steps against 128 steps, on ``users`` users of night ``day`` (champion):
    largest difference of a contribution, largest completeness gap, users retried, users with the same reasons."""
    import numpy as np
    import pandas as pd

    from spendpred import explain, registry
    from spendpred.snapshot import RunFolder

    model, _ = registry.load_model("champion")
    frame = pd.read_parquet(RunFolder.for_date("score", day).snapshot.parquet)
    frame = frame.sample(min(users, len(frame)), random_state=1).sort_values("user_id").reset_index(drop=True)
    pooled = model.encode(frame["text"].tolist())
    reference = explain.attribute_head(model, frame, pooled=pooled, n_steps=128)
    rows = []
    for steps in (4, 8, 16, 32):
        got = explain.attribute_head(model, frame, pooled=pooled, n_steps=steps)
        rows.append({"steps": steps, "users": len(frame),
                     "max_feature_diff": max(max(abs(g.features[c] - r.features[c]) for c in r.features) for g, r in zip(got, reference)),
                     "max_text_diff": max(abs(g.text_total - r.text_total) for g, r in zip(got, reference)),
                     "max_gap": max(abs(g.delta) for g in got), "retried": sum(g.steps != steps for g in got),
                     "same_reasons": float(np.mean([explain.reasons(g) == explain.reasons(r) for g, r in zip(got, reference)]))})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--max-users", type=int, default=None, help="training sample (default: all)")
    parser.add_argument("--encoder", default="tiny", help="'tiny' (random 2-layer BERT) or 'minilm' (the product default)")
    parser.add_argument("--freeze", default=None,
                        help="the champion's freezing strategy, e.g. all-but-head (head only, no fine-tuning; default: the product's)")
    parser.add_argument("--nights", type=int, default=3, help="nights in a row (the first cold, each next after append_day)")
    parser.add_argument("--scope-all", action="store_true", help="also rerun the second night with SPENDPRED_REASONS_SCOPE=all")
    parser.add_argument("--split-text", action="store_true",
                        help="split the text's contribution by segment in the nightly (one encoder pass per explained user)")
    parser.add_argument("--repeat", type=int, default=0,
                        help="then time the second night's score_shard and explain_scores interleaved this many times (medians)")
    parser.add_argument("--model-cache-ab", type=int, default=0, metavar="N",
                        help="then time the last night's score_shard and explain_scores with the local model cache off and on, "
                        "alternating, N times each (medians)")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of the second night's explain_scores here")
    parser.add_argument("--steps-check", type=int, default=0, metavar="N",
                        help="then compare the head path's 4/8/16/32 integrated-gradients steps with 128 on N users of the last night")
    parser.add_argument("--home", type=Path, default=None,
                        help="reuse the bench home of an earlier run (its seed, champion and --nights): no set-up, no nights, "
                        "only --repeat / --model-cache-ab / --profile / --scope-all on its last night")
    parser.add_argument("--more-nights", type=int, default=0, metavar="N",
                        help="with --home: first run N more nights after its last one (append_day, then the night's steps, timed)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    home = args.home.resolve() if args.home else Path(tempfile.mkdtemp(prefix="spendpred-explain-bench-"))
    os.environ["SPENDPRED_HOME"] = str(home)
    os.environ["SPENDPRED_HORIZON_DAYS"] = "60"
    if args.encoder == "tiny":
        from spendpred.model.tiny import make_tiny_bert

        tiny = home / "tiny-bert"
        os.environ["SPENDPRED_ENCODER_DIR"] = str(tiny if args.home else make_tiny_bert(tiny))
    import torch

    from spendpred import pipeline

    url = f"sqlite:///{home / 'warehouse.db'}"
    day = dt.date(2024, 6, 30)
    load_before = os.getloadavg()
    began = time.perf_counter()
    setup = 0.0
    split = True if args.split_text else None
    nights: list[dict] = []
    def next_night(k: int) -> None:
        pipeline.append_day(day + dt.timedelta(days=k), 7, url, daily_active=0.05)
        nights.append(_night(pipeline, day + dt.timedelta(days=k), url, split))
        print(f"night {day + dt.timedelta(days=k)}: {nights[-1]['seconds']}", file=sys.stderr, flush=True)

    more = args.more_nights if args.home else 0
    if args.home is None:
        pipeline.seed(users=args.users, days=400, end_date=day, seed=7, url=url)
        print(f"seeded {args.users} users in {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
        pipeline.train(day, epochs=1, max_users=args.max_users, freeze=args.freeze, promote="force", url=url)
        setup = time.perf_counter() - began
        print(f"set up (seed and train) in {setup:.1f}s", file=sys.stderr, flush=True)
        nights = [_night(pipeline, day, url, split)]
        print(f"night {day}: {nights[-1]['seconds']}", file=sys.stderr, flush=True)
        for k in range(1, max(args.nights, 2)):
            next_night(k)
    for k in range(max(args.nights, 2), max(args.nights, 2) + more):
        next_night(k)
    last = day + dt.timedelta(days=max(args.nights, 2) + more - 1)
    interleaved = _interleaved(pipeline, last, url, args.repeat) if args.repeat else None
    cache_ab = _model_cache_ab(pipeline, last, url, args.model_cache_ab) if args.model_cache_ab else None
    if args.profile:
        import cProfile

        from spendpred.snapshot import RunFolder

        snap = pipeline.extract_scoring_snapshot(last, url, model="champion")
        pipeline.validate_snapshot(snap)
        tiers = pipeline.assign_tiers(snap, [pipeline.score_shard(spec, 0, 1, "champion") for spec in pipeline.plan_shards(snap, 1)])
        RunFolder.for_date("score", last).reasons_parquet.unlink(missing_ok=True)
        cProfile.runctx("pipeline.explain_scores(tiers, split)", globals(), {"pipeline": pipeline, "tiers": tiers, "split": split},
                        str(args.profile))  # fmt: skip
    steps = _steps_check(last, args.steps_check) if args.steps_check else None
    if args.scope_all:
        os.environ["SPENDPRED_REASONS_SCOPE"] = "all"
        nights.append({**_night(pipeline, last, url, split), "scope": "all"})
    load_after = os.getloadavg()
    result = {"users": args.users, "encoder": args.encoder, "freeze": args.freeze, "setup_s": round(setup, 1), "nights": nights,
              "interleaved": interleaved, "model_cache_ab": cache_ab, "steps_check": steps, "load_before": load_before, "load_after": load_after,
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "platform": platform.platform()}}  # fmt: skip
    print(f"{f'bench home {home}' if args.home else f'{args.users} users'}, encoder {args.encoder}, "
          f"freeze {args.freeze or 'default'}, setup {setup:.1f}s, "
          f"text split {'on' if args.split_text else 'off'}, load average {'/'.join(f'{x:.1f}' for x in load_before)} before, "
          f"{'/'.join(f'{x:.1f}' for x in load_after)} after")  # fmt: skip
    print(f"{'night':<12}{'scope':<9}{'score s':>9}{'explain s':>11}{'explained':>11}{'carried':>9}{'baselines':>11}{'s/user':>9}"
          f"{'explain/score':>15}{'max gap':>10}")  # fmt: skip
    for night in nights:
        s = night["seconds"]
        print(f"{night['as_of']:<12}{night.get('scope', 'default'):<9}{s['score']:>9.2f}{s['explain']:>11.2f}{night['explained']:>11}"
              f"{night['carried']:>9}{night['baselines_encoded']:>11}{night['per_user_s']:>9.4f}{night['explain_over_score']:>15.3f}"
              f"{night['max_gap']:>10.4f}")  # fmt: skip
    if interleaved:
        i = interleaved
        print(f"second night interleaved x{i['repeat']} (medians): score {i['score_s']:.3f}s, explain {i['explain_s']:.3f}s "
              f"({i['explain_over_score']:.3f}x), explain rerun with every reason carried {i['rerun_explain_s']:.3f}s "
              f"({i['rerun_over_score']:.3f}x, {i['rerun_carried']} carried)")  # fmt: skip
    if cache_ab:
        for mode in ("off", "on"):
            c = cache_ab[mode]
            print(f"last night, local model cache {mode:<3} x{args.model_cache_ab} (medians): score {c['score_s']:.3f}s, "
                  f"explain {c['explain_s']:.3f}s ({c['explain_over_score']:.3f}x)")  # fmt: skip
    for row in steps or []:
        print(f"head path, {row['steps']} steps vs 128 ({row['users']} users): largest difference of a feature's contribution "
              f"{row['max_feature_diff']:.1e}, of the text's {row['max_text_diff']:.1e}; largest completeness gap "
              f"{row['max_gap']:.1e}; {row['retried']} retried; same reasons (to the cent) for {row['same_reasons']:.1%}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
