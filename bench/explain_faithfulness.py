"""Benchmark: are the reasons faithful, and do they find a planted signal? (issue 25, Evidence)

For each data set (synthetic from ``spendpred.synth``; CDNOW from ``/work/shared/data/CDNOW_master.txt``
through ``spendpred import-cdnow``), in a temporary ``SPENDPRED_HOME``: extract the labelled training
snapshot (features as of R-H, labels in (R-H, R]), train a small model on it (a random tiny BERT,
2 layers, hidden 32, 512 positions, ``make_tiny_bert``; ``--epochs`` fine-tuning passes after the
head-only stage), then for ``--explain`` held-out users:

* **completeness**: ``explain.attribute`` (on-demand path, through the encoder) and
  ``explain.attribute_head`` (the nightly's) gap = sum of contributions - (prediction - baseline);
* **faithfulness**: removing each user's top-3 items (the published reasons, ``explain.reason_items``, and for
  comparison the three largest by absolute size, the rule of reason templates v1-v2; items are head columns
  and text groups such as one search query, one category, the orders, the reviews) by setting them to their
  baseline (``explain.ablate``: a column to 0 in normalised space, a text item's tokens to ``[PAD]``)
  vs removing three items drawn at random from the same user's items (``--draws`` draws a user):
  the share of users whose |prediction change| is larger for the top 3 than for the random 3
  (per draw, and against the draws' mean), and the mean |change| of each. The nightly (head) path
  is checked the same way with its own items (head columns and the one text item).
* **planted signal** (synthetic only): before training, a random ``--planted-share`` of the users get
  ``--planted-repeats`` more searches, ``"golden ticket"`` (added as their first searches, the same
  day; the reasons group them as one item), and ``--planted-spend`` more
  spend in their label; no other input says who they are. Reported: the share of planted held-out
  users whose reasons (``explain.reason_items``) include ``text:search:golden ticket``, against chance (3 / the user's
  item count, averaged), and the same for the unplanted users' absence.

    .venv/bin/python bench/explain_faithfulness.py                      # both data sets, CPU-sized
    .venv/bin/python bench/explain_faithfulness.py --data synth --users 3000 --explain 300
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLANTED_QUERY = "golden ticket"
PLANTED_KEY = f"text:search:{PLANTED_QUERY}"
CDNOW = Path("/work/shared/data/CDNOW_master.txt")


def plant(frame, share: float, extra: float, seed: int, repeats: int = 1):  # noqa: ANN001, ANN201
    """Return ``(frame, planted mask)``: a random ``share`` of users get the search ``PLANTED_QUERY`` (``repeats`` times,
    the same day) as their first searches and ``extra`` spend in their label."""
    rng = np.random.default_rng(seed)
    planted = rng.random(len(frame)) < share
    queries = "; same day ".join([f'"{PLANTED_QUERY}"'] * repeats)
    texts = []
    for text, on in zip(frame["text"].tolist(), planted, strict=True):
        if not on:
            texts.append(text)
        elif "searches: " in text:  # the old first search gets the same-day prefix the later ones have
            texts.append(re.sub(r'searches: "', f'searches: {queries}; same day "', text, count=1))
        else:
            cut = text.find(" reviews: ")
            insert = f" searches: {queries}."
            texts.append(text[:cut] + insert + text[cut:] if cut >= 0 else text.rstrip() + insert)
    out = frame.copy()
    out["text"] = texts
    out["label"] = out["label"].to_numpy(dtype=float) + np.where(planted, extra, 0.0)
    return out, planted


def labelled(pipeline, run_date: dt.date, horizon: int, url: str):  # noqa: ANN001, ANN201
    """The validated labelled training snapshot of ``run_date`` as a frame, with its feature columns and template."""
    import pandas as pd

    from spendpred.snapshot import RunFolder

    ref = pipeline.extract_training_snapshot(run_date, horizon_days=horizon, url=url)
    pipeline.validate_snapshot(ref)
    run = RunFolder.from_ref(ref)
    manifest = run.require_validated()
    return pd.read_parquet(run.snapshot.parquet), list(manifest.feature_columns), manifest.text_template_version


def evaluate(model, test, draws: int, seed: int, planted=None) -> dict:  # noqa: ANN001
    """Completeness, top-3 vs random-3 removal and (with ``planted``) the planted signal's rank, on ``test``."""
    from spendpred import explain

    rng = np.random.default_rng(seed)
    out: dict = {"explained": len(test)}
    began = time.perf_counter()
    full = explain.attribute(model, test)
    out["full_seconds_per_user"] = round((time.perf_counter() - began) / max(len(test), 1), 4)
    began = time.perf_counter()
    head = explain.attribute_head(model, test)
    out["head_seconds_per_user"] = round((time.perf_counter() - began) / max(len(test), 1), 5)
    for name, attributions in (("full", full), ("head", head)):
        gaps = np.array([abs(a.delta) for a in attributions])
        spread = np.array([abs(a.prediction - a.baseline) for a in attributions])
        within = np.mean([abs(a.delta) <= explain.tolerance(a.prediction, a.baseline) for a in attributions])
        items = [[i.key for i in explain.all_items(a)] for a in attributions]
        random_sets = [[set(rng.choice(keys, size=3, replace=False).tolist()) for keys in items] for _ in range(draws)]
        predicted = np.array([a.prediction for a in attributions])
        random_moves = np.stack([np.abs(predicted - explain.ablate(model, test, sets)) for sets in random_sets])
        out[name] = {
            "completeness": {"mean_abs_gap": float(gaps.mean()), "max_abs_gap": float(gaps.max()),
                             "mean_gap_share_of_spread": float(np.mean(gaps / np.maximum(spread, 1e-9))),
                             "within_tolerance": float(within)},
            "items_per_user": float(np.mean([len(k) for k in items])),
            "mean_abs_change_random3": float(random_moves.mean()),
            "mean_abs_prediction": float(np.abs(predicted).mean()),
        }  # fmt: skip
        # the published reasons (reason_items: the largest that move the prediction its way) and, for comparison,
        # the rule of reason templates v1-v2 (the three largest by absolute size)
        rules = {"reasons": [explain.reason_items(a) for a in attributions], "largest_abs": [explain.all_items(a)[:3] for a in attributions]}
        for rule, chosen in rules.items():
            top_move = np.abs(predicted - explain.ablate(model, test, [{i.key for i in c} for c in chosen]))
            same = np.array([len({np.sign(i.contribution) for i in c}) == 1 for c in chosen])
            beats = top_move[None, :] > random_moves
            out[name][rule] = {
                "top3_beats_random3_per_draw": float(beats.mean()),
                "top3_beats_random3_mean": float(np.mean(top_move > random_moves.mean(axis=0))),
                "same_sign_top3_users": int(same.sum()),
                "top3_beats_random3_per_draw_same_sign": float(beats[:, same].mean()) if same.any() else None,
                "top3_beats_random3_per_draw_mixed_sign": float(beats[:, ~same].mean()) if (~same).any() else None,
                "mean_abs_change_top3": float(top_move.mean()),
            }  # fmt: skip
    if planted is not None:
        items = [[i.key for i in explain.all_items(a)] for a in full]
        shown = [[i.key for i in explain.reason_items(a)] for a in full]
        has = np.array([PLANTED_KEY in keys for keys in items])
        in_top = np.array([PLANTED_KEY in keys for keys in shown])
        in_abs = np.array([PLANTED_KEY in keys[:3] for keys in items])
        below = np.array([a.prediction < a.baseline for a in full])
        ranks = [keys.index(PLANTED_KEY) + 1 for keys in items if PLANTED_KEY in keys]
        chance = np.array([3 / len(keys) for keys in items])
        sign = [next(i.contribution for i in explain.all_items(a) if i.key == PLANTED_KEY) > 0 for a, h in zip(full, has, strict=True) if h]
        out["planted"] = {
            "planted_users": int(planted.sum()), "planted_users_with_item_in_text": int((planted & has).sum()),
            "top3_rate": float(in_top[planted & has].mean()) if (planted & has).any() else None,
            "top3_rate_largest_abs": float(in_abs[planted & has].mean()) if (planted & has).any() else None,
            "planted_below_baseline": int((planted & has & below).sum()),
            "planted_missed_below_baseline": int((planted & has & ~in_top & below).sum()),
            "chance_rate": float(chance[planted & has].mean()) if (planted & has).any() else None,
            "median_rank": float(np.median(ranks)) if ranks else None,
            "positive_share": float(np.mean(sign)) if sign else None,
            "unplanted_with_item": int((~planted & has).sum()),
        }  # fmt: skip
    return out


def run_data(name: str, args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"spendpred-faithful-{name}-"))
    os.environ["SPENDPRED_HOME"] = str(home)
    from spendpred.model.tiny import make_tiny_bert

    bert = make_tiny_bert(home / "tiny-bert", max_position_embeddings=512)
    os.environ["SPENDPRED_ENCODER_DIR"] = str(bert)
    from spendpred import pipeline, splits
    from spendpred.model import TrainConfig, train_regressor

    url = f"sqlite:///{home / 'warehouse.db'}"
    began = time.perf_counter()
    if name == "synth":
        run_date, horizon = dt.date(2024, 6, 30), 90
        pipeline.seed(users=args.users, days=400, end_date=run_date, seed=args.seed, url=url)
    else:
        run_date, horizon = dt.date(1997, 12, 31), 180
        pipeline.import_cdnow(CDNOW, url=url)
    frame, features, template = labelled(pipeline, run_date, horizon, url)
    planted_mask = None
    if name == "synth":
        frame, planted_mask = plant(frame, args.planted_share, args.planted_spend, args.seed, args.planted_repeats)
    frame = frame.reset_index(drop=True)
    frame["_planted"] = planted_mask if planted_mask is not None else False
    parts = splits.split_frame(frame, args.users if name == "cdnow" else None)
    config = TrainConfig(epochs=args.epochs, batch_size=32, loss="ziln", max_length=512, device="cpu", progress=False,
                         horizon_days=horizon, seed=args.seed, lr=1e-3)  # fmt: skip
    result = train_regressor(parts["train"].drop(columns="_planted"), parts["val"].drop(columns="_planted"), features, config,
                             bert, template)  # fmt: skip
    model = result.bundle
    prepared = time.perf_counter() - began
    test = parts["test"].head(args.explain).reset_index(drop=True)
    planted = test.pop("_planted").to_numpy(dtype=bool) if name == "synth" else None
    if planted is None:
        test = test.drop(columns="_planted")
    report = evaluate(model, test, args.draws, args.seed, planted)
    return {"data": name, "users": len(frame), "train_users": len(parts["train"]), "prepare_s": round(prepared, 1),
            "stages": result.stages, **report}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("synth", "cdnow", "both"), default="both")
    parser.add_argument("--users", type=int, default=2000, help="synthetic users seeded; CDNOW: users sampled for training")
    parser.add_argument("--explain", type=int, default=200, help="held-out users explained")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--draws", type=int, default=5, help="random 3-item draws per user")
    parser.add_argument("--planted-share", type=float, default=0.3)
    parser.add_argument("--planted-spend", type=float, default=300.0)
    parser.add_argument("--planted-repeats", type=int, default=3, help="times the planted query is searched (same day)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.manual_seed(args.seed)
    names = ("synth", "cdnow") if args.data == "both" else (args.data,)
    results = [run_data(name, args) for name in names]
    for r in results:
        print(f"{r['data']}: {r['users']} users in the snapshot, {r['train_users']} trained on, {r['explained']} held-out users "
              f"explained (prepared in {r['prepare_s']} s; on-demand {r['full_seconds_per_user']} s/user, nightly head "
              f"{r['head_seconds_per_user']} s/user)")  # fmt: skip
        for path in ("full", "head"):
            m = r[path]
            c = m["completeness"]
            print(f"  {path:<4} completeness gap mean {c['mean_abs_gap']:.5f} max {c['max_abs_gap']:.5f}, within tolerance "
                  f"{c['within_tolerance']:.1%}; mean prediction {m['mean_abs_prediction']:.2f}, {m['items_per_user']:.1f} items "
                  f"a user; mean |change| random3 {m['mean_abs_change_random3']:.2f}")  # fmt: skip
            for rule in ("reasons", "largest_abs"):
                t = m[rule]
                print(f"    {rule:<11} top3 > random3: {t['top3_beats_random3_per_draw']:.1%} of (user, draw) pairs, "
                      f"{t['top3_beats_random3_mean']:.1%} of users vs the draws' mean; mean |change| top3 "
                      f"{t['mean_abs_change_top3']:.2f}; {t['same_sign_top3_users']} users whose top 3 share a sign: "
                      f"{t['top3_beats_random3_per_draw_same_sign']}, the others: {t['top3_beats_random3_per_draw_mixed_sign']}")  # fmt: skip
        if r.get("planted"):
            p = r["planted"]
            print(f"  planted '{PLANTED_QUERY}': {p['planted_users_with_item_in_text']} held-out planted users with it in "
                  f"the (truncated) text; in their reasons: {p['top3_rate']:.1%} (three largest by absolute size: "
                  f"{p['top3_rate_largest_abs']:.1%}) vs chance {p['chance_rate']:.1%}; median rank {p['median_rank']}; "
                  f"positive for {p['positive_share']:.1%}; {p['planted_below_baseline']} predicted below the baseline, of whom "
                  f"{p['planted_missed_below_baseline']} without it in their reasons")  # fmt: skip
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
