"""Benchmark: accuracy on the real CDNOW purchase log, rolling set-up, through the product's CLI.

One command, in a throwaway ``SPENDPRED_HOME`` (SQLite warehouse, MLflow store, staging):

1. ``spendpred import-cdnow`` the CDNOW master file (optionally a stable hash-chosen sample
   of customers, ``--sample``; 0.1 is the size of Fader & Hardie's published 1/10 sample);
2. for each loss: ``spendpred train --as-of D --horizon-days H --loss L ...`` (features as of
   D-H, labels = spend in (D-H, D]; registers a model version, ``--promote never``);
3. ``spendpred extract --as-of D --with-labels``: the actual spend in (D, D+H] per user
   (never seen by any model) and the past-spend baseline;
4. for each trained version: ``spendpred score --as-of D --model <version>`` (features as of
   D), publishing into the throwaway warehouse and reading ``user_spend_scores`` back
   (``--no-publish``: read the staged ``tiers.parquet`` instead); steps 2 and 4 run once per
   text template of ``--template`` (``SPENDPRED_TEXT_TEMPLATE``; ``v1,v2`` trains and scores
   both on the same users and adds the paired bootstrap v2 − v1);
5. baselines on the same users: past spend (spend in (D-H, D]), gradient-boosted trees on the
   numeric features (``spendpred.baselines``; fitted on the training snapshot, once on the
   regressor's own training users and once on every user), and BG/NBD × Gamma-Gamma
   (``spendpred.btyd``, fitted on each customer's purchases up to D);
6. every DESIGN.md metric (``spendpred.metrics.evaluate`` + tier confusion) for every model,
   on all users and on the users the regressor never trained on, with bootstrap intervals
   for normalised Gini and top-10% capture; a Markdown table on stdout and a JSON file.

The CDNOW log runs 1997-01-01 .. 1998-06-30; the default run date 1997-12-31 with H=180
trains on features as of 1997-07-04 and evaluates on spend in (1997-12-31, 1998-06-29].

    .venv/bin/python bench/accuracy_cdnow.py                       # CPU-sized defaults
    .venv/bin/python bench/accuracy_cdnow.py --sample 1 --freeze none --epochs 3   # production setting (GPU)
    .venv/bin/python bench/accuracy_cdnow.py --template v1,v2      # both text templates, paired v2 - v1
    .venv/bin/python bench/accuracy_cdnow.py --anchor-off-too      # each version also scored without the trend anchor
    .venv/bin/python bench/accuracy_cdnow.py --train-windows 1,3   # 1 vs 3 stacked training windows, paired w3 - w1

CPU-sized defaults: 10% of the customers, the encoder frozen (``--freeze all-but-head``) and
up to 40 epochs (early stopping ends sooner). With a frozen encoder the texts are encoded
once and an epoch of the head costs well under a second, so the head trains to convergence
for the price of one encoder pass; one epoch of ``bottom-k:4`` costs about as much and leaves
the head under-trained (measured: it loses to the baselines, see bench/README.md).

Plain public tools only: the ``spendpred`` CLI and spendpred's public Python API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "CDNOW_master.txt"
LOSSES = ("mse", "huber", "ziln")
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("spearman", "Spearman"),
    ("gini", "Gini"),
    ("normalised_gini", "norm. Gini"),
    ("top10_capture", "top-10% capture"),
    ("decile_mape", "decile MAPE"),
    ("total_ratio", "pred/true total"),
    ("tier_accuracy", "tier acc."),
    ("high_tier_recall", "high-tier recall"),
)
_KEEP_ENV = {"SPENDPRED_ENCODER_DIR", "SPENDPRED_SEED"}
_STARTED = time.perf_counter()


# --------------------------------------------------------------------------- helpers shared with accuracy_synthetic.py


def say(message: str) -> None:
    """Print one progress line with the elapsed time (stdout, flushed)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", flush=True)


def child_env(home: Path, horizon_days: int) -> dict[str, str]:
    """Environment for the CLI: a throwaway home, offline Hugging Face, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDPRED_") or k in _KEEP_ENV}
    env.update(
        SPENDPRED_HOME=str(home),
        SPENDPRED_HORIZON_DAYS=str(horizon_days),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GX_ANALYTICS_ENABLED="False",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


class Cli:
    """Runs ``spendpred`` sub-commands in the throwaway home; logs each to ``<home>/logs``."""

    def __init__(self, home: Path, horizon_days: int) -> None:
        self.home = home
        self.env = child_env(home, horizon_days)
        self.exe = str(Path(sys.executable).with_name("spendpred"))
        if not Path(self.exe).exists():
            self.exe = shutil.which("spendpred") or self.exe
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        self._count = 0

    def __call__(self, name: str, *args: str) -> Any:
        """Run ``spendpred <args>``; return its JSON stdout. Exits with the log tail on failure."""
        self._count += 1
        log = self.logs / f"{self._count:02d}-{name}.log"
        command = [self.exe, *args]
        say(f"$ spendpred {' '.join(args)}")
        began = time.perf_counter()
        with log.open("w", encoding="utf-8") as err:
            done = subprocess.run(command, env=self.env, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
        seconds = time.perf_counter() - began
        self.timings[name] = round(seconds, 1)
        if done.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
            sys.exit(f"spendpred {' '.join(args)} failed (exit {done.returncode}); last lines of {log}:\n" + "\n".join(tail))
        say(f"  done in {seconds:.1f}s")
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            return done.stdout


def training_users(train_ids: pd.Series, max_users: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Masks (train, train-or-val) of the users ``spendpred train`` fits on, for a training snapshot.

    Mirrors ``spendpred.pipeline.train_model``: a stable hash-chosen subset of ``max_users``,
    then the hash split (``spendpred.splits.assign_splits``).
    """
    from spendpred import splits

    ids = train_ids.astype(str)
    chosen = np.ones(len(ids), dtype=bool)
    if max_users is not None and max_users < len(ids):
        order = np.argsort(splits.hash_buckets(ids, buckets=2**31 - 1, salt="subset:"), kind="stable")
        chosen = np.zeros(len(ids), dtype=bool)
        chosen[order[:max_users]] = True
    split = splits.assign_splits(ids)
    return chosen & (split == "train"), chosen & (split != "test")


def completed_orders(url: str, as_of: dt.date) -> pd.DataFrame:
    """Completed orders before ``as_of + 1 day`` from the warehouse (``user_id, ordered_at, amount``)."""
    import sqlalchemy as sa

    from spendpred import warehouse

    engine = warehouse.get_engine(url)
    cutoff = (as_of + dt.timedelta(days=1)).isoformat()
    try:
        with engine.connect() as conn:
            return pd.read_sql(
                sa.text("SELECT user_id, ordered_at, amount FROM orders WHERE status = 'completed' AND ordered_at < :cutoff"),
                conn,
                params={"cutoff": cutoff if engine.dialect.name == "sqlite" else dt.datetime.fromisoformat(cutoff)},
            )
    finally:
        engine.dispose()


def read_scores(cli: Cli, url: str, as_of: dt.date, version: str, published: bool) -> pd.Series:
    """The predictions ``spendpred score`` produced for ``as_of``, indexed by user id."""
    if published:
        import sqlalchemy as sa

        from spendpred import warehouse

        engine = warehouse.get_engine(url)
        try:
            with engine.connect() as conn:
                frame = pd.read_sql(
                    sa.text("SELECT user_id, predicted_spend, model_version FROM user_spend_scores WHERE as_of = :d"),
                    conn,
                    params={"d": as_of.isoformat() if engine.dialect.name == "sqlite" else as_of},
                )
        finally:
            engine.dispose()
        versions = set(frame["model_version"].astype(str))
        if versions != {str(version)}:
            sys.exit(f"user_spend_scores for {as_of} holds model versions {versions}, expected {version}")
    else:
        frame = pd.read_parquet(cli.home / "staging" / "score" / as_of.isoformat() / "tiers.parquet")
    return frame.set_index(frame["user_id"].astype(str))["predicted_spend"].astype(float)


def evaluate_all(y_true: np.ndarray, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], dict[str, list[list[int]]]]:
    """Every scalar metric and the tier confusion matrix for every model."""
    from spendpred import metrics

    scores = {name: metrics.evaluate(y_true, pred) for name, pred in predictions.items()}
    confusion = {name: metrics.tier_confusion(y_true, pred).tolist() for name, pred in predictions.items()}
    return scores, confusion


def bootstrap(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    draws: int,
    seed: int,
    models: Sequence[str] = (),
    baselines: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] = (),
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, dict[str, float]]]]:
    """Bootstrap (users resampled) of normalised Gini and top-10% capture: ``spendpred.metrics.paired_bootstrap``,
    the promotion gate's, so a draw without spend counts as one where no model is ahead.

    Returns ``(intervals, paired)``: the 90% interval of each metric per model, and for each
    model × baseline pair, then each ``(a, b)`` of ``pairs`` (e.g. the same model on text
    templates v2 and v1), the 90% interval of the paired difference (model − baseline, same
    resampled users) with the share of draws where the model is ahead. Undefined values (a
    draw without spend) are left out of the intervals.
    """
    from spendpred import metrics

    if draws <= 0:
        return {}, {}
    values = metrics.paired_bootstrap(y_true, predictions, draws, seed)
    keys = tuple(metrics.BOOTSTRAP_METRICS)
    intervals = {
        name: {k: [float(np.nanpercentile(v, 5)), float(np.nanpercentile(v, 95))] for k, v in per.items()}
        for name, per in values.items()
    }
    paired: dict[str, dict[str, dict[str, float]]] = {}
    for model, baseline in [*((m, b) for m in models for b in baselines), *pairs]:
        entry: dict[str, dict[str, float]] = {}
        for k in keys:
            diff = values[model][k] - values[baseline][k]
            entry[k] = {"low": float(np.nanpercentile(diff, 5)), "high": float(np.nanpercentile(diff, 95)),
                        "share_ahead": metrics.share_ahead(values[model][k], values[baseline][k])}
        paired[f"{model} - {baseline}"] = entry
    return intervals, paired


def paired_lines(paired: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The paired bootstrap differences as a Markdown table."""
    lines = ["| model − baseline | Δ norm. Gini, 90% | ahead in | Δ top-10% capture, 90% | ahead in |", "|---|---:|---:|---:|---:|"]
    for pair, entry in paired.items():
        g, t = entry["normalised_gini"], entry["top10_capture"]
        lines.append(f"| {pair} | [{g['low']:+.3f}, {g['high']:+.3f}] | {100 * g['share_ahead']:.0f}% | "
                     f"[{t['low']:+.3f}, {t['high']:+.3f}] | {100 * t['share_ahead']:.0f}% |")
    return "\n".join(lines)


def _fmt(value: float | None, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key in {"rmse", "mae"}:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(
    scores: Mapping[str, Mapping[str, float]],
    intervals: Mapping[str, Mapping[str, list[float]]] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """A Markdown table: one row per model, one column per metric (bootstrap intervals if given)."""
    header = "| model | " + " | ".join(label for _, label in METRIC_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(METRIC_COLUMNS)
    rows = [header, rule]
    for name, values in scores.items():
        cells = []
        for key, _ in METRIC_COLUMNS:
            cell = _fmt(values.get(key), key)
            if intervals and name in intervals and key in intervals[name]:
                low, high = intervals[name][key]
                cell += f" [{low:.3f}, {high:.3f}]"
            cells.append(cell)
        rows.append(f"| {(labels or {}).get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def confusion_lines(confusion: Mapping[str, list[list[int]]]) -> str:
    """Tier confusion matrices, one Markdown row each (rows: true high/medium/low; columns: predicted)."""
    lines = ["| model | true high → (H, M, L) | true medium → (H, M, L) | true low → (H, M, L) |", "|---|---|---|---|"]
    for name, matrix in confusion.items():
        lines.append(f"| {name} | " + " | ".join(", ".join(str(v) for v in row) for row in matrix) + " |")
    return "\n".join(lines)


def verdict(scores: Mapping[str, Mapping[str, float]], models: Sequence[str], baselines: Sequence[str]) -> list[str]:
    """One line per model: does it beat every baseline on normalised Gini and top-10% capture?"""
    lines = []
    for model in models:
        for key, label in (("normalised_gini", "norm. Gini"), ("top10_capture", "top-10% capture")):
            best_name = max(baselines, key=lambda b: scores[b][key])
            best = scores[best_name][key]
            mine = scores[model][key]
            word = "beats" if mine > best else "does NOT beat"
            lines.append(f"{model} {word} every baseline on {label}: {mine:.3f} vs best baseline {best_name} {best:.3f}")
    return lines


def machine() -> dict[str, Any]:
    """Where the benchmark ran."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "loadavg_at_end": load}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(dict(data)), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def model_name(loss: str, tag: str, tags: Sequence[str], suffix: str = "") -> str:
    """The result name of a regressor: ``bert_<loss><suffix>``, with ``_<tag>`` when several variants run.

    A variant's tag is its text template (``v1``, ``v2``) and/or its stacked training windows
    (``w1``, ``w3``): see :func:`variant_tags`.
    """
    name = f"bert_{loss}{suffix}"
    return name if len(tags) <= 1 else f"{name}_{tag}"


def variant_tags(templates: Sequence[str], windows: Sequence[int] = (1,)) -> list[tuple[str, str, int]]:
    """``(tag, template, train windows)`` of every variant trained: templates × windows, the first is the reference.

    The tag names only what varies: ``v1``/``v2`` for several templates, ``w1``/``w3`` for
    several window counts, ``v1_w3`` for both; with one of each the tag is the template.
    """
    out = []
    for template in templates:
        for count in windows:
            parts = [template] if len(templates) > 1 or len(windows) == 1 else []
            if len(windows) > 1:
                parts.append(f"w{count}")
            out.append(("_".join(parts), template, count))
    return out


def template_pairs(names: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """``(name in a later variant, same model in the first variant)`` for the paired bootstrap (e.g. v2 − v1)."""
    if len(tags) <= 1:
        return []
    first = f"_{tags[0]}"
    pairs = []
    for later in tags[1:]:
        for name in names:
            if name.endswith(f"_{later}") and name.removesuffix(f"_{later}") + first in names:
                pairs.append((name, name.removesuffix(f"_{later}") + first))
    return pairs


def train_and_score_templates(
    cli: Cli,
    url: str,
    run_date: dt.date,
    horizon: int,
    losses: Sequence[str],
    templates: Sequence[str],
    epochs: int,
    max_users: int | None,
    freeze: str,
    publish: bool,
    anchor_off_too: bool = False,
    windows: Sequence[int] = (1,),
) -> tuple[dict[str, pd.Series], dict[str, Any]]:
    """:func:`train_and_score` once per variant: text template (``SPENDPRED_TEXT_TEMPLATE``) × stacked
    training windows (``SPENDPRED_TRAIN_WINDOWS``).

    Results are named by :func:`model_name` with the tags of :func:`variant_tags`. The CLI
    keeps the last template afterwards, so the snapshots ``baselines_and_report`` extracts use it.
    """
    scores: dict[str, pd.Series] = {}
    trained: dict[str, Any] = {}
    variants = variant_tags(templates, windows)
    tags = [tag for tag, _, _ in variants]
    for tag, template, count in variants:
        cli.env["SPENDPRED_TEXT_TEMPLATE"] = template
        cli.env["SPENDPRED_TRAIN_WINDOWS"] = str(count)
        say(f"text template {template}, {count} stacked training window(s)")
        got, info = train_and_score(cli, url, run_date, horizon, losses, epochs, max_users, freeze, publish, anchor_off_too,
                                    log_tag=tag)
        for loss in losses:
            scores[model_name(loss, tag, tags)] = got[f"bert_{loss}"]
            if f"bert_{loss}_no_anchor" in got:
                scores[model_name(loss, tag, tags, "_no_anchor")] = got[f"bert_{loss}_no_anchor"]
            trained[model_name(loss, tag, tags).removeprefix("bert_")] = {
                **info[loss], "text_template": template, "train_windows": count,
            }
    cli.env.pop("SPENDPRED_TRAIN_WINDOWS", None)
    return scores, trained


def train_and_score(
    cli: Cli,
    url: str,
    run_date: dt.date,
    horizon: int,
    losses: Sequence[str],
    epochs: int,
    max_users: int | None,
    freeze: str,
    publish: bool,
    anchor_off_too: bool = False,
    log_tag: str = "",
) -> tuple[dict[str, pd.Series], dict[str, Any]]:
    """Train one version per loss through the CLI, score each as of ``run_date``; return scores and training info.

    Training and scoring extract their snapshots with the CLI's text template (``cli.env``).
    With ``anchor_off_too`` each version is scored a second time with the trend anchor off
    (``SPENDPRED_TREND_ANCHOR=false``), named ``bert_<loss>_no_anchor``.
    """
    trained: dict[str, Any] = {}
    for loss in losses:
        args = ["train", "--as-of", run_date.isoformat(), "--horizon-days", str(horizon), "--loss", loss,
                "--epochs", str(epochs), "--freeze", freeze, "--promote", "never"]
        if max_users:
            args += ["--max-users", str(max_users)]
        tag = log_tag or cli.env.get("SPENDPRED_TEXT_TEMPLATE", "")
        out = cli(f"train-{loss}{'-' + tag if tag else ''}", *args)
        result = json.loads((Path(out["train_dir"]) / "result.json").read_text(encoding="utf-8"))
        trained[loss] = {
            "version": str(out["version"]),
            "best_epoch": result.get("best_epoch"),
            "history": result.get("history"),
            "params": result.get("params"),
            "train_snapshot_test_split": {"bert_finetuned": result.get("metrics"), **(result.get("baselines") or {})},
        }
        say(f"  loss={loss}: version {out['version']}, test-split norm. Gini {result['metrics'].get('normalised_gini'):.3f}")
    scores: dict[str, pd.Series] = {}
    tag = log_tag or cli.env.get("SPENDPRED_TEXT_TEMPLATE", "")
    for loss in losses:
        version = trained[loss]["version"]
        args = ["score", "--as-of", run_date.isoformat(), "--model", version]
        if not publish:
            args.append("--no-publish")
        cli(f"score-{loss}{'-' + tag if tag else ''}", *args)
        scores[f"bert_{loss}"] = read_scores(cli, url, run_date, version, publish)
        if anchor_off_too:
            cli.env["SPENDPRED_TREND_ANCHOR"] = "false"
            try:
                cli(f"score-{loss}{'-' + tag if tag else ''}-no-anchor", *args)
                scores[f"bert_{loss}_no_anchor"] = read_scores(cli, url, run_date, version, publish)
            finally:
                cli.env.pop("SPENDPRED_TREND_ANCHOR", None)
    return scores, trained


def baselines_and_report(
    *,
    name: str,
    cli: Cli,
    url: str,
    run_date: dt.date,
    horizon: int,
    max_users: int | None,
    model_scores: Mapping[str, pd.Series],
    extra_models: Callable[[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, list[str]], dict[str, np.ndarray]] | None,
    settings: Mapping[str, Any],
    trained: Mapping[str, Any],
    out_path: Path,
    bootstrap_draws: int,
    seed: int,
    labels: Mapping[str, str] | None = None,
    templates: Sequence[str] = (),
) -> dict[str, Any]:
    """Extract labels and the training snapshot, fit the baselines, evaluate everything, print and save.

    With several variant tags in ``templates`` (:func:`variant_tags`: text templates and/or
    stacked training windows) the models named ``<model>_<tag>`` (:func:`model_name`) are also
    compared pairwise, each later variant against the first (paired bootstrap).
    """
    from spendpred import baselines, btyd

    train_as_of = run_date - dt.timedelta(days=horizon)
    cli("extract-eval", "extract", "--as-of", run_date.isoformat(), "--with-labels", "--horizon-days", str(horizon),
        "--out", str(cli.home / "bench" / "eval"))
    cli("extract-train", "extract", "--as-of", train_as_of.isoformat(), "--with-labels", "--horizon-days", str(horizon),
        "--out", str(cli.home / "bench" / "train"))
    evaluation = pd.read_parquet(cli.home / "bench" / "eval" / "snapshot.parquet")
    train_frame = pd.read_parquet(cli.home / "bench" / "train" / "snapshot.parquet")
    features = json.loads((cli.home / "bench" / "train" / "manifest.json").read_text(encoding="utf-8"))["feature_columns"]
    evaluation["user_id"] = evaluation["user_id"].astype(str)
    y_true = evaluation["label"].to_numpy(dtype=np.float64)
    train_mask, fit_mask = training_users(train_frame["user_id"], max_users)

    predictions: dict[str, np.ndarray] = {}
    for model, series in model_scores.items():
        missing = ~evaluation["user_id"].isin(series.index)
        if missing.any() or len(series) != len(evaluation):
            sys.exit(f"{model}: scored {len(series)} users but the labelled snapshot has {len(evaluation)}")
        predictions[model] = series.reindex(evaluation["user_id"]).to_numpy(dtype=np.float64)

    began = time.perf_counter()
    if extra_models is not None:
        predictions.update(extra_models(train_frame, evaluation, train_mask, fit_mask, features))
    timings = {"extra_models_s": round(time.perf_counter() - began, 1)}

    began = time.perf_counter()
    predictions["past_spend"] = baselines.past_spend_baseline(evaluation)
    predictions["gbt_numeric"] = baselines.gbt_baseline(train_frame[train_mask], evaluation, features, seed=seed)
    predictions["gbt_numeric_all_users"] = baselines.gbt_baseline(train_frame, evaluation, features, seed=seed)
    orders = completed_orders(url, run_date)
    predictions["bgnbd_gamma_gamma"], btyd_model = btyd.btyd_baseline(orders, run_date, horizon, evaluation["user_id"])
    timings["baselines_s"] = round(time.perf_counter() - began, 1)

    model_names = [m for m in predictions if m.startswith("bert")]
    baseline_names = ["past_spend", "gbt_numeric", "gbt_numeric_all_users", "bgnbd_gamma_gamma"]
    order = [*model_names, *[m for m in predictions if m not in model_names and m not in baseline_names], *baseline_names]
    predictions = {m: predictions[m] for m in order}

    scores, confusion = evaluate_all(y_true, predictions)
    pairs = template_pairs(model_names, templates)
    intervals, paired = bootstrap(y_true, predictions, bootstrap_draws, seed, model_names, baseline_names, pairs)
    seen_ids = set(train_frame.loc[fit_mask, "user_id"].astype(str))
    unseen = ~evaluation["user_id"].isin(seen_ids).to_numpy()
    unseen_scores = (
        evaluate_all(y_true[unseen], {m: p[unseen] for m, p in predictions.items()})[0] if unseen.sum() > 10 else {}
    )

    buyers = float(np.mean(y_true > 0))
    predictions_path = out_path.with_suffix(".predictions.parquet")
    predictions_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": evaluation["user_id"], "label": y_true, "seen_in_training": ~unseen, **predictions}).to_parquet(
        predictions_path, index=False
    )
    lines = [
        f"## {name}: rolling evaluation, run date {run_date}, H = {horizon} days",
        "",
        f"Train: features as of {train_as_of}, labels in ({train_as_of}, {run_date}]. "
        f"Evaluate: features as of {run_date}, actual spend in ({run_date}, {run_date + dt.timedelta(days=horizon)}].",
        f"Users evaluated: {len(evaluation)} ({100 * buyers:.1f}% buy in the horizon, total spend {y_true.sum():,.2f}); "
        f"regressor fitted on {int(train_mask.sum())} train + {int(fit_mask.sum() - train_mask.sum())} validation users.",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        "### All users (90% bootstrap intervals for norm. Gini and top-10% capture)",
        "",
        markdown_table(scores, intervals, labels),
        "",
    ]
    if unseen_scores:
        lines += [f"### Users the regressor never fitted on ({int(unseen.sum())})", "", markdown_table(unseen_scores, None, labels), ""]
    if paired:
        title = "model minus baseline" + (f", and each model on variant {templates[-1]} minus the same on {templates[0]}," if pairs else "")
        lines += [f"### Paired bootstrap: {title} on the same resampled users", "", paired_lines(paired), ""]
    lines += ["### Tier confusion (top 10% high, next 30% medium)", "", confusion_lines(confusion), ""]
    lines += ["### Verdict", "", *[f"- {line}" for line in verdict(scores, model_names, baseline_names)], ""]
    lines += [f"BG/NBD × Gamma-Gamma parameters (days): {json.dumps(btyd_model.describe())}", ""]
    lines += ["Wall time per step (s): " + json.dumps({**cli.timings, **timings})]
    report = "\n".join(lines)
    print("\n" + report, flush=True)

    result = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "settings": dict(settings),
        "run_date": run_date.isoformat(),
        "horizon_days": horizon,
        "users": len(evaluation),
        "buyer_share": buyers,
        "metrics": scores,
        "bootstrap_90": intervals,
        "bootstrap_paired_90": paired,
        "predictions_file": str(predictions_path),
        "metrics_unseen_users": unseen_scores,
        "unseen_users": int(unseen.sum()),
        "tier_confusion": confusion,
        "verdict": verdict(scores, model_names, baseline_names),
        "trained": trained,
        "btyd": btyd_model.describe(),
        "timings_s": {**cli.timings, **timings, "total": round(time.perf_counter() - _STARTED, 1)},
        "report_markdown": report,
    }
    write_json(out_path, result)
    say(f"results written to {out_path}")
    return result


def common_arguments(parser: argparse.ArgumentParser, *, run_date: str, horizon: int, losses: str, epochs: int,
                     max_users: int, freeze: str, out: str) -> None:
    """The flags both accuracy benchmarks share."""
    parser.add_argument("--run-date", default=run_date, help=f"Run date D, YYYY-MM-DD (default {run_date or 'the end date minus H'}).")
    parser.add_argument("--horizon-days", type=int, default=horizon, help=f"Horizon H in days (default {horizon}).")
    parser.add_argument("--losses", default=losses, help=f"Comma-separated losses to train (default {losses}).")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"spendpred train --epochs (default {epochs}).")
    parser.add_argument("--max-users", type=int, default=max_users,
                        help=f"spendpred train --max-users; 0 = every user (default {max_users}).")
    parser.add_argument("--freeze", default=freeze, help=f"spendpred train --freeze (default {freeze}).")
    parser.add_argument(
        "--template", default="v2", metavar="v1|v2|v1,v2",
        help="Text template of the snapshots (SPENDPRED_TEXT_TEMPLATE): v1 (relative times), v2 (changes only when the "
        "user acts; the product default) or v1,v2: one model per template and loss on the same users, with the paired "
        "bootstrap v2 - v1 (default v2).",
    )
    parser.add_argument("--no-publish", action="store_true", help="Score with --no-publish and read the staged tiers.")
    parser.add_argument("--anchor-off-too", action="store_true",
                        help="Also score every version with the trend anchor off (SPENDPRED_TREND_ANCHOR=false): rows bert_<loss>_no_anchor.")
    parser.add_argument("--bootstrap", type=int, default=200, help="Bootstrap draws for the intervals (0 = none).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the GBT baseline and the bootstrap.")
    parser.add_argument("--home", type=Path, default=None, help="SPENDPRED_HOME to use (default: a temp folder, removed).")
    parser.add_argument("--keep", action="store_true", help="Keep the temp home (warehouse, MLflow, logs).")
    parser.add_argument("--out", type=Path, default=Path(out), help=f"JSON results file (default {out}).")


def open_home(home: Path | None) -> tuple[Path, bool]:
    """The home folder to use and whether it is a temp folder this run created."""
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        return home.resolve(), False
    return Path(tempfile.mkdtemp(prefix="spendpred-bench-")), True


def parse_templates(text: str) -> list[str]:
    """The ``--template`` list (``v1``, ``v2`` or ``v1,v2``), checked against ``spendpred.textify.TEMPLATE_VERSIONS``."""
    from spendpred.textify import TEMPLATE_VERSIONS

    templates = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in templates if t not in TEMPLATE_VERSIONS]
    if not templates or bad or len(set(templates)) != len(templates):
        sys.exit(f"--template must list some of {', '.join(TEMPLATE_VERSIONS)} once each; got {text!r}")
    return templates


def parse_windows(text: str) -> list[int]:
    """The ``--train-windows`` list (``1`` or ``1,3``): distinct counts in 1..12 (``Settings.train_windows``)."""
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= c <= 12 for c in counts) or len(set(counts)) != len(counts):
        sys.exit(f"--train-windows must list distinct counts from 1 to 12, e.g. 1 or 1,3; got {text!r}")
    return counts


def parse_losses(text: str) -> list[str]:
    """The ``--losses`` list, checked."""
    losses = [loss.strip() for loss in text.split(",") if loss.strip()]
    bad = [loss for loss in losses if loss not in LOSSES]
    if not losses or bad:
        sys.exit(f"--losses must list some of {', '.join(LOSSES)}; got {text!r}")
    return losses


# --------------------------------------------------------------------------- CDNOW


def sample_cdnow(source: Path, dest: Path, fraction: float) -> int:
    """Write the header and the lines of a stable hash-chosen share of customers; return customers kept."""
    from spendpred import splits

    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    header, body = lines[0], [line for line in lines[1:] if line.strip()]
    customers = sorted({str(int(line.split()[0])) for line in body})
    keep = {c for c, b in zip(customers, splits.hash_buckets(customers, buckets=1_000_000, salt="bench-sample:"), strict=True)
            if b < fraction * 1_000_000}
    dest.write_text(header + "".join(line for line in body if str(int(line.split()[0])) in keep), encoding="utf-8")
    return len(keep)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CDNOW accuracy benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CDNOW master file (default ../shared/data/CDNOW_master.txt).")
    parser.add_argument("--sample", type=float, default=0.1,
                        help="Share of customers kept (stable hash; 1 = the whole file; default 0.1 ≈ 2,357 customers).")
    common_arguments(parser, run_date="1997-12-31", horizon=180, losses="mse,huber,ziln", epochs=40, max_users=0,
                     freeze="all-but-head", out="bench/results/accuracy_cdnow.json")
    parser.add_argument(
        "--train-windows", default="1", metavar="N|N,M",
        help="Stacked training windows of the retrain (SPENDPRED_TRAIN_WINDOWS): one count, or several (1,3): one model "
        "per count on the same users, with the paired bootstrap of each count against the first (default 1).",
    )
    parser.add_argument("--window-step-days", type=int, default=None,
                        help="Days between two stacked windows (SPENDPRED_WINDOW_STEP_DAYS; default: the product's).")
    args = parser.parse_args(argv)
    if not 0 < args.sample <= 1:
        parser.error("--sample must be in (0, 1]")
    run_date = dt.date.fromisoformat(args.run_date)
    losses = parse_losses(args.losses)
    templates = parse_templates(args.template)
    windows = parse_windows(args.train_windows)
    tags = [tag for tag, _, _ in variant_tags(templates, windows)]
    max_users = args.max_users or None
    home, temporary = open_home(args.home)
    cli = Cli(home, args.horizon_days)
    if args.window_step_days is not None:
        cli.env["SPENDPRED_WINDOW_STEP_DAYS"] = str(args.window_step_days)
    url = f"sqlite:///{home / 'warehouse.db'}"
    from spendpred.config import get_settings

    settings = {
        "data": str(args.data), "sample": args.sample, "run_date": run_date.isoformat(), "horizon_days": args.horizon_days,
        "losses": ",".join(losses), "text_template": ",".join(templates), "epochs": args.epochs,
        "max_users": max_users or "all", "freeze": args.freeze, "train_windows": ",".join(map(str, windows)),
        "window_step_days": args.window_step_days or get_settings().window_step_days,
        "encoder": str(get_settings().resolved_encoder_dir), "publish": not args.no_publish, "seed": args.seed,
        "home": str(home),
    }
    say("settings: " + json.dumps(settings))
    try:
        data = args.data
        if args.sample < 1:
            data = home / "CDNOW_sample.txt"
            kept = sample_cdnow(args.data, data, args.sample)
            say(f"sampled {kept} customers ({args.sample:g} of the file) into {data}")
        cli("import", "import-cdnow", str(data))
        scores, trained = train_and_score_templates(cli, url, run_date, args.horizon_days, losses, templates, args.epochs,
                                                    max_users, args.freeze, not args.no_publish, args.anchor_off_too,
                                                    windows)
        baselines_and_report(
            name="CDNOW accuracy", cli=cli, url=url, run_date=run_date, horizon=args.horizon_days, max_users=max_users,
            model_scores=scores, extra_models=None, settings=settings, trained=trained, out_path=args.out,
            bootstrap_draws=args.bootstrap, seed=args.seed, templates=tags,
        )
    finally:
        if temporary and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"kept {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
