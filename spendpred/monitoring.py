"""Watching published scores after they ship: realized performance once labels mature, and drift before.

**Realized performance.** A published partition as of D is *mature* at run date R when
``D + H <= R``: its label window (D, D + H] (the extract's, ``sql/extract/features.sql``) has
ended. :func:`realized_metrics` compares each scored user's actual completed-order spend in
that window with the published ``predicted_spend`` and ``tier`` (scorer ``model``) and with the
past-spend baseline as of D for the same users (scorer ``past_spend``): normalised Gini, top-10%
capture, Spearman, predicted/actual total, decile MAPE (``spendpred.metrics``), and precision
and recall of the high tier against the actual high tier (the published tier rule applied to
actual spend: the actual top 10% by default). Intervals are 95% percentile intervals over the
one paired bootstrap (``metrics.paired_bootstrap``: every scorer on the same draws; a draw
without spend leaves its undefined values out, as the benchmarks' intervals do). Tiers are
fixed on the whole partition and the users resampled, so the high-tier intervals are those of
the shipped classifier.

The BG/NBD x Gamma-Gamma baseline (scorer ``bgnbd_gamma_gamma``) is fitted as of D on every
buyer's completed purchases up to the end of D (``sql/monitor/completed_orders.sql``) and
predicts the same users' spend over (D, D + H], as the benchmarks do; a fit that fails (too few
repeat buyers) leaves that scorer out with one warning. RMSE and MAE are stored too: they are
what the estimated performance (below) is checked against.

**Drift.** At retrain time :func:`build_reference` summarises the training snapshot's numeric
features and the held-out predictions (``reference.json`` beside ``bundle.json``): per column,
decile bin edges, the reference share of each bin and a small seeded sample. Each night
:func:`drift_table` gives, per column, the population stability index over those bins and the
two-sample Kolmogorov-Smirnov statistic against the sample (``scipy.stats.ks_2samp``), with
status ``ok``, ``warn`` or ``alert`` by the PSI thresholds (``SPENDPRED_DRIFT_PSI_WARN``,
``SPENDPRED_DRIFT_PSI_ALERT``). Three population rows join them (:func:`population_table`): the
share of users whose text changed since the previous night, the share of tonight's users absent
from the training snapshot (the reference's sorted 64-bit id hashes, :data:`USERS_FILE` beside
``reference.json``) and the share of orders in categories never seen in training (the
reference's ``categories``, read from the texts).

**Estimated performance before labels** (NannyML's direct loss estimation): at retrain time
:func:`fit_error_model` learns, on the champion's held-out users, each user's expected absolute
and squared error from their features and their prediction (two small regression trees of
scikit-learn, exported to JSON and kept in ``reference.json`` under ``error_model``; predicted
with numpy, no pickle). Each night :func:`estimate_errors` averages tonight's expected errors:
estimated MAE, and RMSE as the root of the mean expected squared error. Stored per partition
(``estimated_metrics``); once the partition matures its realized RMSE and MAE stand beside the
estimate (view ``user_spend_estimated_performance``).

Pure functions take arrays and frames; the warehouse functions at the end take an engine and
run the SQL of ``sql/monitor/`` with bound parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from spendpred import metrics, warehouse
from spendpred.errors import DataError, ModelError
from spendpred.tiers import TierRule, assign_tiers

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

logger = logging.getLogger(__name__)

MODEL_SCORER = "model"
"""The scorer name of a partition's published scores."""
PAST_SPEND_SCORER = "past_spend"
"""The scorer name of the past-spend baseline (spend in the H days up to the end of as_of)."""
BTYD_SCORER = "bgnbd_gamma_gamma"
"""The scorer name of the BG/NBD x Gamma-Gamma baseline fitted on every buyer's purchases up to as_of (``spendpred.btyd``)."""
SCORERS: tuple[str, ...] = (MODEL_SCORER, PAST_SPEND_SCORER, BTYD_SCORER)
"""Every scorer of a realized evaluation, in report order (the baselines are the simple rules a team would use)."""

REALIZED_METRICS: tuple[str, ...] = (
    "normalised_gini", "top10_capture", "spearman", "total_ratio", "decile_mape", "rmse", "mae",
    "high_tier_precision", "high_tier_recall",
)  # fmt: skip
"""The realized metrics with a bootstrap interval, in report order."""
TOTALS: tuple[str, ...] = ("total_predicted", "total_actual", "users")
"""Figures stored beside them without an interval."""
BOOTSTRAP_DRAWS = 200
"""Paired bootstrap draws of the realized intervals (the promotion gate's count)."""
CI_LEVEL = 0.95

REFERENCE_FILE = "reference.json"
"""The drift reference's file name in a model bundle folder (beside ``bundle.json``)."""
REFERENCE_FORMAT = 1
REFERENCE_BINS = 10
REFERENCE_SAMPLE = 200
PREDICTION_COLUMN = "predicted_spend"
"""The drift table's name for the model's predictions (the reference's held-out predictions)."""
DRIFT_STATUSES: tuple[str, ...] = ("ok", "warn", "alert")
_PSI_FLOOR = 1e-4  # an empty bin's share, so that PSI stays finite


# --------------------------------------------------------------------------- realized performance


def _finite_1d(values: npt.ArrayLike, what: str) -> np.ndarray:
    """``values`` as a non-empty 1-D float array of finite values; raises ``DataError`` naming ``what``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{what} must be a non-empty one-dimensional array, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise DataError(f"{what} has {int(bad.sum())} null or non-finite value(s) (first at position {int(np.flatnonzero(bad)[0])})")
    return array


def _total_ratio(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    true, pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    total = float(true.sum())
    return float(pred.sum()) / total if total > 0 else float("nan")


def _precision(true_high: npt.ArrayLike, pred_high: npt.ArrayLike) -> float:
    t, p = np.asarray(true_high, dtype=bool), np.asarray(pred_high, dtype=bool)
    chosen = int(p.sum())
    return int((t & p).sum()) / chosen if chosen else float("nan")


def _recall(true_high: npt.ArrayLike, pred_high: npt.ArrayLike) -> float:
    t, p = np.asarray(true_high, dtype=bool), np.asarray(pred_high, dtype=bool)
    actual = int(t.sum())
    return int((t & p).sum()) / actual if actual else float("nan")


_VALUE_SCORES: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike], float]] = {
    "normalised_gini": metrics.normalised_gini,
    "top10_capture": metrics.top_k_capture,
    "spearman": metrics.spearman,
    "total_ratio": _total_ratio,
    "decile_mape": metrics.decile_mape,
    "rmse": metrics.rmse,
    "mae": metrics.mae,
}
_TIER_SCORES: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike], float]] = {
    "high_tier_precision": _precision,
    "high_tier_recall": _recall,
}


def high_flags(values: npt.ArrayLike, rule: TierRule | None = None) -> np.ndarray:
    """Return whether each value is in the high tier under ``rule`` (default: the settings' rule, the published one)."""
    labels, _ = assign_tiers(np.asarray(values, dtype=np.float64), metrics.tier_rule(rule), quiet=True)
    return labels == "high"


def interval(values: npt.ArrayLike, level: float = CI_LEVEL) -> tuple[float, float]:
    """Return the percentile interval of bootstrap ``values``, undefined (``nan``) draws left out; ``(nan, nan)`` without any."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def realized_metrics(
    actual: npt.ArrayLike,
    predictions: Mapping[str, npt.ArrayLike],
    predicted_high: Mapping[str, npt.ArrayLike] | None = None,
    rule: TierRule | None = None,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Return ``{scorer: {metric: (value, ci_low, ci_high)}}`` for :data:`REALIZED_METRICS` and :data:`TOTALS`.

    ``actual`` is each user's realized spend, ``predictions`` each scorer's predicted spend for
    the same users. A scorer's high tier is ``predicted_high[scorer]`` when given (the published
    tiers), else ``rule`` applied to its predictions; the actual high tier is ``rule`` applied to
    ``actual`` (default rule: the settings'). Intervals come from ``draws`` paired bootstrap
    draws seeded with ``seed`` (the same draws for every scorer and metric); the totals have
    none (``nan``). Raises ``DataError`` on empty, mis-shaped, negative or non-finite input.
    """
    true = _finite_1d(actual, "actual spend")
    if (true < 0).any():
        raise DataError("actual spend has negative values: completed-order spend must be >= 0")
    rule = metrics.tier_rule(rule)
    preds = {name: _finite_1d(values, f"{name} predictions") for name, values in predictions.items()}
    for name, pred in preds.items():
        if pred.shape != true.shape:
            raise DataError(f"{name} has {pred.size} predictions for {true.size} users: pass one prediction per user")
    if not preds:
        raise DataError("no predictions to evaluate: pass at least one {scorer: predicted spend}")
    true_high = high_flags(true, rule)
    flags: dict[str, np.ndarray] = {}
    for name, pred in preds.items():
        given = (predicted_high or {}).get(name)
        flag = high_flags(pred, rule) if given is None else np.asarray(given, dtype=bool)
        if flag.shape != true.shape:
            raise DataError(f"{name}: {flag.size} high-tier flags for {true.size} users: pass one flag per user")
        flags[name] = flag
    boot_values = metrics.paired_bootstrap(true, preds, draws, seed, scores=_VALUE_SCORES)
    # the same seed and size give the same draws: the tier metrics are paired with the ranking ones
    boot_tiers = metrics.paired_bootstrap(true_high.astype(np.float64), {n: f.astype(np.float64) for n, f in flags.items()},
                                          draws, seed, scores=_TIER_SCORES)  # fmt: skip
    result: dict[str, dict[str, tuple[float, float, float]]] = {}
    nan = float("nan")
    for name, pred in preds.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            row = {key: (float(score(true, pred)), *interval(boot_values[name][key])) for key, score in _VALUE_SCORES.items()}
            row.update({key: (float(score(true_high, flags[name])), *interval(boot_tiers[name][key]))
                        for key, score in _TIER_SCORES.items()})  # fmt: skip
        row["total_predicted"] = (float(pred.sum()), nan, nan)
        row["total_actual"] = (float(true.sum()), nan, nan)
        row["users"] = (float(true.size), nan, nan)
        result[name] = {key: row[key] for key in (*REALIZED_METRICS, *TOTALS)}
    return result


def metric_rows(
    as_of: dt.date, model_version: str, horizon_days: int, table: Mapping[str, Mapping[str, tuple[float, float, float]]]
) -> list[dict[str, Any]]:
    """Return :func:`realized_metrics`' table as ``partition_metrics`` rows (``nan`` becomes ``None``)."""

    def number(value: float) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    return [
        {"as_of": as_of, "model_version": str(model_version), "scorer": scorer, "metric": metric,
         "value": number(v), "ci_low": number(lo), "ci_high": number(hi), "horizon_days": int(horizon_days)}
        for scorer, values in table.items() for metric, (v, lo, hi) in values.items()
    ]  # fmt: skip


def mature_until(run_date: dt.date, horizon_days: int) -> dt.date:
    """Return the latest ``as_of`` whose label window (as_of, as_of + H] has ended by the end of ``run_date``."""
    return run_date - dt.timedelta(days=int(horizon_days))


LEVEL_CLIP: tuple[float, float] = (0.25, 4.0)
"""Range the level correction's factor is clipped to (a partition whose realized total is far off
is more likely broken than a level to follow)."""


def level_factor(
    partition_rows: Sequence[Mapping[str, Any]],
    corrections: Sequence[Mapping[str, Any]],
    as_of: dt.date,
    model_version: str,
    horizon_days: int,
    partitions: int = 1,
    clip: tuple[float, float] = LEVEL_CLIP,
) -> dict[str, Any]:
    """Return tonight's level correction: ``{"factor", "unclipped_factor", "clipped", "based_on_as_of", "ratios"}``.

    ``partition_rows`` are stored realized metrics (:func:`read_partition_metrics`), ``corrections``
    the stored level corrections (:func:`read_level_corrections`). Only the model scorer's
    ``total_ratio`` of ``model_version`` for ``horizon_days`` counts, of partitions whose horizon
    ended before the night ``as_of`` (as_of + H < the night: the set a rerun sees too). Each
    partition's published ratio is divided by the factor it was itself corrected by, so the
    corrections do not compound; the factor is 1 / the geometric mean of the latest ``partitions``
    such ratios, clipped to ``clip``. Without one the factor is 1.0 (``based_on_as_of`` ``None``).
    """
    bound = mature_until(as_of, horizon_days)
    applied = {_date(r["as_of"]): float(r["factor"]) for r in corrections
               if str(r["model_version"]) == str(model_version) and r.get("factor")}  # fmt: skip
    ratios: dict[dt.date, float] = {}
    for row in partition_rows:
        value = row.get("value")
        day = _date(row["as_of"])
        if (row.get("scorer") == MODEL_SCORER and row.get("metric") == "total_ratio" and day < bound
                and str(row.get("model_version")) == str(model_version) and int(row["horizon_days"]) == int(horizon_days)
                and value is not None and math.isfinite(float(value)) and float(value) > 0):  # fmt: skip
            ratios[day] = float(value) / applied.get(day, 1.0)
    latest = sorted(ratios)[-max(int(partitions), 1):]
    if not latest:
        return {"factor": 1.0, "unclipped_factor": None, "clipped": False, "based_on_as_of": None, "ratios": {}}
    raw = float(math.exp(-np.mean([math.log(ratios[d]) for d in latest])))
    factor = float(min(max(raw, clip[0]), clip[1]))
    return {"factor": factor, "unclipped_factor": raw, "clipped": factor != raw, "based_on_as_of": latest[-1].isoformat(),
            "ratios": {d.isoformat(): ratios[d] for d in latest}}  # fmt: skip


def label_window(as_of: dt.date, horizon_days: int) -> dict[str, dt.datetime]:
    """Return the bound timestamps of ``sql/monitor/realized_spend.sql``: ``past_start``, ``cutoff``, ``label_end``.

    ``cutoff`` is as_of + 1 day at 00:00 and ``label_end`` as_of + H + 1 day at 00:00, the
    extract's (``behaviour.query_params``), so no row after as_of + H is read.
    """
    cutoff = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
    span = dt.timedelta(days=int(horizon_days))
    return {"past_start": cutoff - span, "cutoff": cutoff, "label_end": cutoff + span}


# --------------------------------------------------------------------------- drift


def column_reference(values: npt.ArrayLike, bins: int = REFERENCE_BINS, sample: int = REFERENCE_SAMPLE, seed: int = 0) -> dict[str, Any]:
    """Return one column's reference: interior bin ``edges`` (distinct deciles), each bin's ``proportions``,
    a seeded ``sample`` of at most ``sample`` values (rounded to 4 decimals) and ``count``.

    Bin ``i`` holds values in ``(edges[i-1], edges[i]]`` (open ends at both sides), so a mass of
    zeros fills the first bin alone. Raises ``DataError`` on empty or non-finite values.
    """
    array = _finite_1d(values, "reference values")
    edges = np.unique(np.quantile(array, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    proportions = bin_shares(array, edges)
    chosen = array
    if array.size > sample:
        chosen = np.random.default_rng(seed).choice(array, sample, replace=False)
    return {
        "edges": [float(e) for e in edges],
        "proportions": [float(p) for p in proportions],
        "sample": [float(v) for v in np.round(np.sort(chosen), 4)],
        "count": int(array.size),
    }


def bin_shares(values: npt.ArrayLike, edges: Sequence[float]) -> np.ndarray:
    """Return the share of ``values`` in each bin ``(edges[i-1], edges[i]]`` (``len(edges) + 1`` bins, open ends)."""
    array = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), array, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(array.size, 1)


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, floor: float = _PSI_FLOOR) -> float:
    """Return the population stability index ``sum((a - e) * ln(a / e))`` of two bin-share vectors.

    Shares below ``floor`` are raised to it (an empty bin would make PSI infinite). 0 for equal
    shares; about 0.1 is a moderate shift and 0.25 a large one (the usual reading).
    """
    e = np.clip(np.asarray(expected, dtype=np.float64), floor, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), floor, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_status(value: float, warn: float, alert: float) -> str:
    """Return ``alert`` when ``value >= alert``, ``warn`` when ``value >= warn``, else ``ok`` (a ``nan`` is ``ok``)."""
    if value is None or not math.isfinite(value):
        return "ok"
    return "alert" if value >= alert else "warn" if value >= warn else "ok"


def column_drift(reference: Mapping[str, Any], values: npt.ArrayLike, warn: float, alert: float) -> dict[str, Any]:
    """Return ``{"psi", "statistic", "status"}`` of tonight's ``values`` against one column's reference.

    ``statistic`` is the two-sample Kolmogorov-Smirnov statistic against the reference sample
    (``scipy.stats.ks_2samp``; ``None`` without a sample). Raises ``DataError`` on empty or
    non-finite values.
    """
    from scipy.stats import ks_2samp

    array = _finite_1d(values, "tonight's values")
    value = psi(reference["proportions"], bin_shares(array, reference["edges"]))
    sample = np.asarray(reference.get("sample") or [], dtype=np.float64)
    statistic = float(ks_2samp(sample, array).statistic) if sample.size else None
    return {"psi": value, "statistic": statistic, "status": drift_status(value, warn, alert)}


def build_reference(
    frame: pd.DataFrame, feature_columns: Sequence[str], predictions: npt.ArrayLike, seed: int = 0,
    held_out: pd.DataFrame | None = None, labels: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Return the drift reference of a model: each numeric feature of its training snapshot ``frame``
    and its held-out ``predictions`` (:func:`column_reference`), under ``columns``; with the
    held-out users' ``held_out`` frame and ``labels``, also their error model (:func:`fit_error_model`)
    under ``error_model``; with ``frame``'s ``user_id`` and ``text``, the training users' hashes and
    categories (:func:`population_reference`).

    Columns absent from ``frame`` are left out. Raises ``DataError`` on empty or non-finite values.
    """
    columns: dict[str, Any] = {}
    for offset, name in enumerate(feature_columns):
        if name in frame.columns:
            columns[name] = column_reference(frame[name].to_numpy(dtype=np.float64), seed=seed + offset)
    columns[PREDICTION_COLUMN] = column_reference(predictions, seed=seed + len(feature_columns))
    reference: dict[str, Any] = {"format": REFERENCE_FORMAT, "bins": REFERENCE_BINS, "columns": columns,
                                 **population_reference(frame)}  # fmt: skip
    if held_out is not None and labels is not None:
        usable = [name for name in feature_columns if name in held_out.columns]
        reference["error_model"] = fit_error_model(held_out, usable, predictions, labels, seed=seed)
    return reference


ERROR_MODEL_FORMAT = 1
ERROR_TREE_DEPTH = 4
"""Depth of each error tree: at most 16 leaves, each the mean error of at least ``error_leaf_size`` held-out users."""
ESTIMATED_METRICS: tuple[str, ...] = ("rmse", "mae")
"""What the nightly estimates before labels exist (a realized metric of the same name is stored at maturity)."""


def _signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def error_inputs(frame: pd.DataFrame, columns: Sequence[str], predictions: npt.ArrayLike) -> np.ndarray:
    """Return the error model's input matrix: ``predictions`` then each of ``columns`` of ``frame``, on a signed log1p scale.

    Raises ``DataError`` for a missing column or a null or non-finite value.
    """
    pred = _finite_1d(predictions, "predictions")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"the snapshot lacks the error model's column(s) {missing}: retrain the model on this snapshot layout")
    blocks = [pred] + [_finite_1d(frame[c].to_numpy(dtype=np.float64), f"feature {c}") for c in columns]
    if any(b.size != pred.size for b in blocks):
        raise DataError(f"{pred.size} predictions for {len(frame)} users: pass one prediction per user")
    return _signed_log(np.column_stack(blocks))


def _tree_json(tree: Any) -> dict[str, list[Any]]:
    t = tree.tree_
    return {
        "feature": [int(f) for f in t.feature], "threshold": [float(x) for x in t.threshold],
        "left": [int(c) for c in t.children_left], "right": [int(c) for c in t.children_right],
        "value": [float(v) for v in t.value.reshape(-1)],
    }  # fmt: skip


def tree_predict(tree: Mapping[str, Sequence[Any]], inputs: np.ndarray) -> np.ndarray:
    """Return a JSON-exported regression tree's predictions for ``inputs`` (scikit-learn's rule:
    go left when the float32 value is <= the threshold), without scikit-learn."""
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"], dtype=np.float64)
    left, right, value = np.asarray(tree["left"]), np.asarray(tree["right"]), np.asarray(tree["value"], dtype=np.float64)
    x = np.asarray(inputs, dtype=np.float32).astype(np.float64)
    node = np.zeros(x.shape[0], dtype=np.int64)
    rows = np.arange(x.shape[0])
    for _ in range(len(feature)):
        inner = left[node] >= 0
        if not inner.any():
            break
        go_left = x[rows, np.where(inner, feature[node], 0)] <= threshold[node]
        node = np.where(inner, np.where(go_left, left[node], right[node]), node)
    return value[node]


def fit_error_model(
    held_out: pd.DataFrame, columns: Sequence[str], predictions: npt.ArrayLike, labels: npt.ArrayLike, seed: int = 0
) -> dict[str, Any]:
    """Return the direct-loss-estimation model of a champion, fitted on its held-out users.

    Two ``DecisionTreeRegressor`` (depth :data:`ERROR_TREE_DEPTH`, at least ``max(5, n/20)`` users
    per leaf) learn the absolute and the squared error of ``predictions`` against ``labels`` from
    :func:`error_inputs`; a leaf's value is the mean error of its users, so the estimate is
    unbiased where tonight's users look like the held-out ones. Returned as JSON-able trees
    (:func:`tree_predict`) with the columns they read and the held-out MAE and RMSE.
    Raises ``DataError`` on empty, mis-shaped or non-finite input.
    """
    from sklearn.tree import DecisionTreeRegressor

    inputs = error_inputs(held_out, columns, predictions)
    truth = _finite_1d(labels, "held-out labels")
    if truth.size != inputs.shape[0]:
        raise DataError(f"{truth.size} labels for {inputs.shape[0]} held-out users: pass one label per user")
    error = truth - np.asarray(predictions, dtype=np.float64)
    leaf = max(5, inputs.shape[0] // 20)
    trees = {}
    for name, target in (("absolute", np.abs(error)), ("squared", error**2)):
        tree = DecisionTreeRegressor(max_depth=ERROR_TREE_DEPTH, min_samples_leaf=leaf, random_state=seed).fit(inputs, target)
        trees[name] = _tree_json(tree)
    return {
        "format": ERROR_MODEL_FORMAT, "method": "direct loss estimation (regression trees on held-out errors)",
        "columns": list(columns), "held_out_users": int(truth.size), "min_leaf_users": leaf,
        "held_out_mae": float(np.mean(np.abs(error))), "held_out_rmse": float(np.sqrt(np.mean(error**2))), **trees,
    }  # fmt: skip


def estimate_errors(error_model: Mapping[str, Any], frame: pd.DataFrame, predictions: npt.ArrayLike) -> dict[str, float]:
    """Return tonight's estimated ``{"mae", "rmse", "users"}`` from a champion's :func:`fit_error_model`.

    MAE is the mean expected absolute error, RMSE the root of the mean expected squared error.
    Raises ``DataError`` for a missing column or bad values, ``ModelError`` for a foreign error model.
    """
    if error_model.get("format") != ERROR_MODEL_FORMAT or "absolute" not in error_model or "squared" not in error_model:
        raise ModelError(f"the error model is not of format {ERROR_MODEL_FORMAT}: retrain the model to write a new one")
    inputs = error_inputs(frame, error_model["columns"], predictions)
    absolute = np.clip(tree_predict(error_model["absolute"], inputs), 0.0, None)
    squared = np.clip(tree_predict(error_model["squared"], inputs), 0.0, None)
    return {"mae": float(absolute.mean()), "rmse": float(np.sqrt(squared.mean())), "users": int(inputs.shape[0])}


def write_reference(path: str | Path, reference: Mapping[str, Any]) -> Path:
    """Write a drift reference as compact JSON; return the path.

    Its ``user_hashes`` (an array) go to :data:`USERS_FILE` beside it, named under ``users`` in the JSON,
    so ``reference.json`` stays a few kB however many users the model was trained on.
    """
    target = Path(path)
    content = dict(reference)
    hashes = content.pop("user_hashes", None)
    if hashes is not None:
        array = np.asarray(hashes, dtype=np.uint64)
        with open(target.with_name(USERS_FILE), "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        content["users"] = {"file": USERS_FILE, "count": int(array.size), "hash": "blake2b-64, sorted uint64"}
    target.write_text(json.dumps(content, separators=(",", ":")) + "\n", encoding="utf-8")
    return target


def read_reference(path: str | Path) -> dict[str, Any] | None:
    """Return the drift reference at ``path``, ``None`` when there is none (a bundle saved before references);
    the training users' hashes of :data:`USERS_FILE` beside it, when there, under ``user_hashes``.

    Raises ``ModelError`` for an unreadable or foreign file.
    """
    target = Path(path)
    if not target.is_file():
        return None
    try:
        reference = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{target} is corrupt ({exc}): retrain the model to write a new drift reference") from exc
    if not isinstance(reference, dict) or reference.get("format") != REFERENCE_FORMAT or "columns" not in reference:
        raise ModelError(f"{target} is not a drift reference of format {REFERENCE_FORMAT}: retrain the model to write a new one")
    users = reference.get("users")
    if isinstance(users, dict):
        hashes = target.with_name(str(users.get("file") or USERS_FILE))
        if hashes.is_file():
            try:
                reference["user_hashes"] = np.load(hashes, allow_pickle=False).astype(np.uint64)
            except (OSError, ValueError) as exc:
                raise ModelError(f"{hashes} is corrupt ({exc}): retrain the model to write a new drift reference") from exc
    return reference


def drift_table(
    reference: Mapping[str, Any], frame: pd.DataFrame, predictions: npt.ArrayLike | None, warn: float, alert: float
) -> list[dict[str, Any]]:
    """Return one row ``{"feature", "psi", "statistic", "status"}`` per reference column present tonight,
    worst PSI first: the features from ``frame`` and ``predicted_spend`` from ``predictions``."""
    rows = []
    for name, column in reference["columns"].items():
        if name == PREDICTION_COLUMN:
            values = predictions
        else:
            values = frame[name].to_numpy(dtype=np.float64) if name in frame.columns else None
        if values is None or len(values) == 0:
            continue
        rows.append({"feature": name, **column_drift(column, values, warn, alert)})
    return sorted(rows, key=lambda r: (-r["psi"], r["feature"]))


def drift_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the counts per status and the alerting and warning features (small, for XCom)."""
    counts = {status: sum(1 for r in rows if r["status"] == status) for status in DRIFT_STATUSES}
    return {
        "counts": counts,
        "alert": [r["feature"] for r in rows if r["status"] == "alert"],
        "warn": [r["feature"] for r in rows if r["status"] == "warn"],
        "max_psi": max((float(r["psi"]) for r in rows), default=None),
    }


# --------------------------------------------------------------------------- population drift


TEXT_CHANGED = "_text_changed_share"
"""Drift row: the share of users in both tonight's and the previous night's snapshot whose text changed."""
UNSEEN_USERS = "_unseen_user_share"
"""Drift row: the share of tonight's users absent from the training snapshot (the reference's user hashes)."""
UNSEEN_CATEGORIES = "_unseen_categories"
"""Drift row: the share of tonight's categorised orders (in the texts) whose category was never seen in training."""
POPULATION_FEATURES: tuple[str, ...] = (TEXT_CHANGED, UNSEEN_USERS, UNSEEN_CATEGORIES)
"""The population drift rows (``drift_metrics``: ``psi`` NULL, the share in ``statistic``)."""
POPULATION_LABELS: dict[str, str] = {
    TEXT_CHANGED: "users whose text changed since the last night",
    UNSEEN_USERS: "users the model never saw in training",
    UNSEEN_CATEGORIES: "orders in categories unseen in training",
}
"""What each population row measures, in words (the page and reports)."""
REPORT_ONLY: frozenset[str] = frozenset({TEXT_CHANGED, UNSEEN_USERS})
"""Population rows that never request a retrain: texts change whenever users act, and a model scores
users from their text and features, not their id (unseen users are expected: every one who joined
since the training snapshot; nearly all unseen means re-keyed ids upstream, which a retrain does not fix)."""
USERS_FILE = "reference_users.npy"
"""Beside ``reference.json``: the training users' 64-bit id hashes, sorted (8 bytes a user, no pickle)."""
MAX_CATEGORIES_LISTED = 10


def user_hashes(user_ids: Sequence[Any]) -> np.ndarray:
    """Return the sorted distinct 64-bit hashes (BLAKE2b, 8 bytes, as uint64) of ``user_ids``' text.

    Two distinct ids share a hash with probability about n / 2**64: a membership test on them is exact in practice.
    """
    return np.unique(_id_hashes(user_ids))


def _id_hashes(user_ids: Sequence[Any]) -> np.ndarray:
    """Each id's 64-bit BLAKE2b hash as uint64, in order."""
    import hashlib

    blake = hashlib.blake2b
    raw = b"".join(blake(str(u).encode("utf-8"), digest_size=8).digest() for u in user_ids)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def text_categories(texts: Sequence[str]) -> dict[str, int]:
    """Return how many orders of ``texts`` (rendered by ``textify``) name each category (``textify.spans`` reads them)."""
    from spendpred.textify.spans import segments

    counts: dict[str, int] = {}
    for text in texts:
        start = text.find("orders: ") if isinstance(text, str) else -1
        if start < 0:
            continue
        # only the orders section is read (the first "orders: ": the fixed sentences have none; searches follow)
        body = text[start:]
        for header in (" searches: ", " reviews: "):
            cut = body.find(header)
            if cut >= 0:
                body = body[:cut]
        for segment in segments(body):
            # an order without category but with a status ("12.00 (cancelled)") reads as category "(cancelled)"
            if segment.kind == "category" and segment.value and not segment.value.startswith("("):
                counts[segment.value] = counts.get(segment.value, 0) + 1
    return counts


def population_reference(frame: pd.DataFrame) -> dict[str, Any]:
    """Return what the population rows need of a training snapshot: ``user_hashes`` (:func:`user_hashes`, written
    to :data:`USERS_FILE` by :func:`write_reference`) and the sorted ``categories`` of its texts; a key is left
    out when ``frame`` lacks its column (``user_id``, ``text``)."""
    out: dict[str, Any] = {}
    if "user_id" in frame.columns:
        out["user_hashes"] = user_hashes(frame["user_id"].tolist())
    if "text" in frame.columns:
        out["categories"] = sorted(text_categories(frame["text"].tolist()))
    return out


def text_changed_share(tonight: pd.DataFrame, previous: pd.DataFrame) -> dict[str, Any]:
    """Return ``{"value", "users"}``: of the users in both frames (``user_id``, ``text``), the share whose text
    differs, and how many were compared (``value`` ``nan`` without any)."""
    import pandas as pd

    both = pd.merge(tonight[["user_id", "text"]].astype({"user_id": str}), previous[["user_id", "text"]].astype({"user_id": str}),
                    on="user_id", how="inner", suffixes=("", "_before"))  # fmt: skip
    if both.empty:
        return {"value": float("nan"), "users": 0}
    changed = int((both["text"] != both["text_before"]).sum())
    return {"value": changed / len(both), "users": int(len(both))}


def unseen_user_share(user_ids: Sequence[Any], hashes: npt.ArrayLike) -> dict[str, Any]:
    """Return ``{"value", "users", "unseen"}``: the share of ``user_ids`` whose hash is not in the sorted ``hashes``."""
    known = np.asarray(hashes, dtype=np.uint64)
    tonight = _id_hashes(user_ids)
    if tonight.size == 0:
        return {"value": float("nan"), "users": 0, "unseen": 0}
    if known.size:
        at = np.clip(np.searchsorted(known, tonight), 0, known.size - 1)
        seen = known[at] == tonight
    else:
        seen = np.zeros(tonight.size, dtype=bool)
    unseen = int((~seen).sum())
    return {"value": unseen / tonight.size, "users": int(tonight.size), "unseen": unseen}


def unseen_categories(texts: Sequence[str], known: Sequence[str]) -> dict[str, Any]:
    """Return ``{"value", "orders", "categories"}``: the share of tonight's categorised orders whose category is
    not in ``known``, their count, and the unseen categories, most frequent first (at most
    :data:`MAX_CATEGORIES_LISTED`); ``value`` is ``nan`` without a categorised order."""
    counts = text_categories(texts)
    total = sum(counts.values())
    known_set = set(known)
    new = sorted(((n, c) for c, n in counts.items() if c not in known_set), key=lambda t: (-t[0], t[1]))
    if total == 0:
        return {"value": float("nan"), "orders": 0, "categories": []}
    return {"value": sum(n for n, _ in new) / total, "orders": int(total),
            "categories": [c for _, c in new[:MAX_CATEGORIES_LISTED]]}  # fmt: skip


def population_table(
    reference: Mapping[str, Any], frame: pd.DataFrame, previous: pd.DataFrame | None, thresholds: Mapping[str, tuple[float, float]]
) -> list[dict[str, Any]]:
    """Return the population drift rows ``{"feature", "psi": None, "statistic": share, "status", ...detail}``.

    :data:`TEXT_CHANGED` needs ``previous`` (the previous night's snapshot) and texts in both;
    :data:`UNSEEN_USERS` the reference's ``user_hashes``; :data:`UNSEEN_CATEGORIES` its
    ``categories`` and tonight's texts. A row whose input is missing (a reference of an older
    bundle, a first night) is left out. ``thresholds`` maps each row to ``(warn, alert)``.
    """
    rows: list[dict[str, Any]] = []

    def add(name: str, detail: dict[str, Any]) -> None:
        warn, alert = thresholds[name]
        value = float(detail.pop("value"))
        rows.append({"feature": name, "psi": None, "statistic": value if math.isfinite(value) else None,
                     "status": drift_status(value, warn, alert), **detail})  # fmt: skip

    has_text = "text" in frame.columns
    if previous is not None and has_text and "text" in previous.columns and "user_id" in previous.columns:
        add(TEXT_CHANGED, text_changed_share(frame, previous))
    if reference.get("user_hashes") is not None and "user_id" in frame.columns:
        add(UNSEEN_USERS, unseen_user_share(frame["user_id"].tolist(), reference["user_hashes"]))
    if reference.get("categories") is not None and has_text:
        add(UNSEEN_CATEGORIES, unseen_categories(frame["text"].tolist(), reference["categories"]))
    return rows


def population_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the population rows for XCom: ``{name: {"value", "status", ...detail}}`` with ``alert`` and ``warn`` lists."""
    values = {r["feature"]: {("value" if k == "statistic" else k): (round(v, 4) if isinstance(v, float) else v)
                             for k, v in r.items() if k not in ("feature", "psi")} for r in rows}  # fmt: skip
    return {
        "values": values,
        "alert": [r["feature"] for r in rows if r["status"] == "alert"],
        "warn": [r["feature"] for r in rows if r["status"] == "warn"],
    }


# --------------------------------------------------------------------------- reacting


CLOCK_FEATURES: frozenset[str] = frozenset({"tenure_days", "recency_days", "days_since_last_event", "first_purchase_days"})
"""Durations up to the as-of date: for unchanged users they grow with the date, so tonight's values sit
at least H days past the training snapshot's and drift by construction. Their drift is stored and
shown, but an alert on them alone requests no retrain (it would every night)."""


def clock_drift(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the :data:`CLOCK_FEATURES` among stored drift rows (:func:`read_drift`) that warn or alert, sorted:
    what the report and the page call expected drift."""
    return sorted({str(r["feature"]) for r in rows if r.get("status") in ("warn", "alert")} & CLOCK_FEATURES)


TRIGGERS: tuple[str, ...] = ("schedule", "asset", "manual")
"""Why a retrain ran (MLflow run tag ``trigger``): its cron, the monitoring's asset event, or someone asked."""


def alert_reasons(
    drift: Mapping[str, Any] | None, evaluated: Sequence[Mapping[str, Any]], gini_floor: float
) -> list[str]:
    """Return why tonight's monitoring asks for a retrain (empty: it does not).

    ``drift`` is :func:`drift_summary`'s result (only ``alert`` counts, :data:`CLOCK_FEATURES` left
    out; a warning only reports), with the population rows under ``population``
    (:func:`population_summary`; only :data:`UNSEEN_CATEGORIES` can ask, :data:`REPORT_ONLY` never does),
    ``evaluated`` the matured partitions evaluated tonight (``pipeline.evaluate_matured``'s
    entries: per scorer its ``normalised_gini``). A partition asks when the model's realized
    normalised Gini is below ``gini_floor`` or below a baseline's on the same users.
    """
    reasons: list[str] = []
    alerting = [name for name in (drift or {}).get("alert") or [] if name not in CLOCK_FEATURES]
    if alerting:
        reasons.append(f"drift alert on {', '.join(alerting)}")
    population = (drift or {}).get("population") or {}
    for name in population.get("alert") or []:
        if name in REPORT_ONLY:
            continue
        detail = (population.get("values") or {}).get(name) or {}
        named = f" ({', '.join(detail['categories'])})" if detail.get("categories") else ""
        reasons.append(f"drift alert on {name}: {detail.get('value')}{named}")
    for entry in evaluated:
        model = (entry.get(MODEL_SCORER) or {}).get("normalised_gini")
        if model is None:
            continue
        where = f"partition {entry.get('as_of')} (version {entry.get('model_version')})"
        if model < gini_floor:
            reasons.append(f"{where}: realized normalised Gini {model:.3f} below the floor {gini_floor:g}")
        for baseline in (PAST_SPEND_SCORER, BTYD_SCORER):
            theirs = (entry.get(baseline) or {}).get("normalised_gini")
            if theirs is not None and model < theirs:
                reasons.append(f"{where}: realized normalised Gini {model:.3f} below {baseline}'s {theirs:.3f}")
    return reasons


def cooldown_until(last_requested: dt.date | None, cooldown_days: int) -> dt.date | None:
    """Return the last night on which a new request is suppressed after one on ``last_requested`` (``None``: none)."""
    if last_requested is None:
        return None
    return last_requested + dt.timedelta(days=max(int(cooldown_days) - 1, 0))


def retrain_trigger(run_type: str | None, extras: Sequence[Mapping[str, Any]] = ()) -> dict[str, str]:
    """Return the MLflow run tags that say why a retrain ran: ``trigger`` (schedule, asset or manual) and ``trigger_reason``.

    ``run_type`` is the Airflow DAG run's type (``scheduled``, ``asset_triggered``, ``manual``,
    ``backfill``; ``None`` for the CLI); ``extras`` the triggering asset events' extras, whose
    ``reasons`` (the monitoring's) become the reason.
    """
    kind = str(run_type or "").lower()
    if kind.startswith("asset") or kind.startswith("dataset"):
        reasons = [str(r) for extra in extras for r in (extra.get("reasons") or [])]
        nights = sorted({str(extra.get("as_of")) for extra in extras if extra.get("as_of")})
        reason = "; ".join(reasons) or "a model-health alert"
        return {"trigger": "asset", "trigger_reason": (f"monitoring of {', '.join(nights)}: " if nights else "") + reason}
    if kind in ("scheduled", "backfill"):
        return {"trigger": "schedule", "trigger_reason": f"{kind} run of the weekly cron"}
    return {"trigger": "manual", "trigger_reason": "triggered by hand" if kind == "manual" else "spendpred train (command line)"}


# --------------------------------------------------------------------------- warehouse


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _run(conn: sa.Connection, name: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
    import sqlalchemy as sa

    dialect = conn.dialect.name
    sql = sa.text(warehouse.load_sql(f"monitor/{name}", dialect))
    if isinstance(params, Mapping):
        return conn.execute(sql, warehouse.bind_values(dialect, params))
    return conn.execute(sql, [warehouse.bind_values(dialect, p) for p in params])


def pending_partitions(engine: sa.Engine, run_date: dt.date, horizon_days: int) -> list[tuple[dt.date, str, int]]:
    """Return ``(as_of, model_version, users)`` of every published partition mature at ``run_date``
    (as_of + H <= run_date) without a realized evaluation for this horizon and version since it was
    published (a partition republished by a backfill is evaluated again), oldest first."""
    with engine.connect() as conn:
        rows = _run(conn, "pending_partitions", {"last_as_of": mature_until(run_date, horizon_days),
                                                 "horizon_days": int(horizon_days)}).all()  # fmt: skip
    return [(_date(r[0]), str(r[1]), int(r[2])) for r in rows]


def read_realized(engine: sa.Engine, as_of: dt.date, horizon_days: int) -> pd.DataFrame:
    """Return one partition's users with ``predicted_spend``, ``tier``, ``model_version``, ``actual_spend``
    (completed spend in (as_of, as_of + H]) and ``past_spend`` (in the H days up to the end of as_of)."""
    import pandas as pd

    with engine.connect() as conn:
        result = _run(conn, "realized_spend", {"as_of": as_of, **label_window(as_of, horizon_days)})
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    for column in ("predicted_spend", "actual_spend", "past_spend"):
        frame[column] = frame[column].astype("float64")
    return frame


def read_completed_orders(engine: sa.Engine, as_of: dt.date) -> pd.DataFrame:
    """Return every buyer's completed spend per day up to the end of ``as_of`` (``user_id``, ``ordered_at``, ``amount``)."""
    import pandas as pd

    with engine.connect() as conn:
        result = _run(conn, "completed_orders", {"cutoff": label_window(as_of, 1)["cutoff"]})
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    frame["user_id"] = frame["user_id"].astype(str)
    frame["amount"] = frame["amount"].astype("float64")
    return frame


def btyd_predictions(orders: pd.DataFrame, as_of: dt.date, horizon_days: int, user_ids: Sequence[str]) -> np.ndarray | None:
    """Return the BG/NBD x Gamma-Gamma baseline's spend over (as_of, as_of + H] for ``user_ids``, fitted on ``orders``
    (:func:`read_completed_orders`); ``None`` with one warning when it cannot be fitted (no or too few buyers)."""
    from spendpred import btyd

    if orders.empty:
        logger.warning("realized performance of %s: no completed order by then, the BG/NBD x Gamma-Gamma baseline is left out", as_of)
        return None
    try:
        predicted, _ = btyd.btyd_baseline(orders, as_of, int(horizon_days), list(user_ids))
    except (DataError, ModelError) as exc:
        logger.warning("realized performance of %s: the BG/NBD x Gamma-Gamma baseline cannot be fitted (%s): left out", as_of, exc)
        return None
    if not np.isfinite(predicted).all():
        logger.warning("realized performance of %s: the BG/NBD x Gamma-Gamma baseline predicted non-finite spend: left out", as_of)
        return None
    return predicted


def store_partition_metrics(engine: sa.Engine, as_of: dt.date, horizon_days: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Replace one partition's realized metrics for a horizon in one transaction; return the rows written."""
    evaluated_at = _now()
    with engine.begin() as conn:
        _run(conn, "delete_partition_metrics", {"as_of": as_of, "horizon_days": int(horizon_days)})
        if rows:
            _run(conn, "insert_partition_metric", [{**row, "evaluated_at": evaluated_at} for row in rows])
    return len(rows)


def store_drift(engine: sa.Engine, as_of: dt.date, model_version: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Replace one night's drift rows in one transaction; return the rows written."""
    computed_at = _now()
    with engine.begin() as conn:
        _run(conn, "delete_drift", {"as_of": as_of})
        if rows:
            _run(conn, "insert_drift", [
                {"as_of": as_of, "model_version": str(model_version), "feature": r["feature"], "psi": r["psi"],
                 "statistic": r["statistic"], "status": r["status"], "computed_at": computed_at} for r in rows
            ])  # fmt: skip
    return len(rows)


def store_estimates(
    engine: sa.Engine, as_of: dt.date, model_version: str, horizon_days: int, estimate: Mapping[str, float]
) -> int:
    """Replace one night's estimated metrics (:data:`ESTIMATED_METRICS`) in one transaction; return the rows written."""
    computed_at = _now()
    rows = [{"as_of": as_of, "model_version": str(model_version), "horizon_days": int(horizon_days), "metric": metric,
             "value": float(estimate[metric]), "users": int(estimate["users"]), "computed_at": computed_at}
            for metric in ESTIMATED_METRICS if metric in estimate]  # fmt: skip
    with engine.begin() as conn:
        _run(conn, "delete_estimates", {"as_of": as_of, "horizon_days": int(horizon_days)})
        if rows:
            _run(conn, "insert_estimate", rows)
    return len(rows)


def read_estimates(engine: sa.Engine, last_as_of: dt.date) -> list[dict[str, Any]]:
    """Return each stored estimate up to ``last_as_of`` beside its realized value (``None`` until the partition matures), oldest first."""
    return _read(engine, "read_estimates", {"last_as_of": last_as_of}, "computed_at")


def last_request(engine: sa.Engine, as_of: dt.date) -> dt.date | None:
    """Return the latest night up to ``as_of`` whose monitoring requested a retrain (``None``: never)."""
    with engine.connect() as conn:
        value = _run(conn, "last_request", {"as_of": as_of}).scalar()
    return None if value is None else _date(value)


def store_request(
    engine: sa.Engine, as_of: dt.date, model_version: str, decision: str, reasons: Sequence[str], until: dt.date | None
) -> None:
    """Replace one night's retrain decision (``requested`` or ``suppressed``) in one transaction."""
    with engine.begin() as conn:
        _run(conn, "delete_request", {"as_of": as_of})
        _run(conn, "insert_request", {"as_of": as_of, "model_version": str(model_version), "decision": decision,
                                      "reasons": "; ".join(reasons), "cooldown_until": until, "decided_at": _now()})  # fmt: skip


def read_requests(engine: sa.Engine, last_as_of: dt.date) -> list[dict[str, Any]]:
    """Return the ten latest retrain decisions up to ``last_as_of``, newest first."""
    rows = _read(engine, "read_requests", {"last_as_of": last_as_of}, "decided_at")
    for row in rows:
        row["cooldown_until"] = None if row["cooldown_until"] is None else _date(row["cooldown_until"]).isoformat()
    return rows


def _read(engine: sa.Engine, query: str, params: dict[str, Any], stamp: str) -> list[dict[str, Any]]:
    """Return the rows of ``query`` as dicts, ``as_of`` as ``YYYY-MM-DD`` and ``stamp`` as text (both dialects alike)."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in _run(conn, query, params)]
    for row in rows:
        row["as_of"] = _date(row["as_of"]).isoformat()
        row[stamp] = str(row[stamp])
    return rows


def read_partition_metrics(engine: sa.Engine, last_as_of: dt.date) -> list[dict[str, Any]]:
    """Return the stored realized metrics of the partitions up to ``last_as_of``, oldest first."""
    return _read(engine, "read_partition_metrics", {"last_as_of": last_as_of}, "evaluated_at")


def read_level_corrections(engine: sa.Engine, last_as_of: dt.date) -> list[dict[str, Any]]:
    """Return the stored level corrections of the nights up to ``last_as_of``, oldest first."""
    rows = _read(engine, "read_level_corrections", {"last_as_of": last_as_of}, "created_at")
    for row in rows:
        row["based_on_as_of"] = None if row["based_on_as_of"] is None else _date(row["based_on_as_of"]).isoformat()
    return rows


def clear_level_correction(engine: sa.Engine, as_of: dt.date) -> None:
    """Remove one night's level correction (a night republished uncorrected)."""
    with engine.begin() as conn:
        _run(conn, "delete_level_correction", {"as_of": as_of})


def store_level_correction(engine: sa.Engine, as_of: dt.date, model_version: str, level: Mapping[str, Any]) -> None:
    """Replace one night's level correction (:func:`level_factor`'s result) in one transaction."""
    based_on = level.get("based_on_as_of")
    with engine.begin() as conn:
        _run(conn, "delete_level_correction", {"as_of": as_of})
        _run(conn, "insert_level_correction", {
            "as_of": as_of, "model_version": str(model_version), "factor": float(level["factor"]),
            "unclipped_factor": level.get("unclipped_factor"), "based_on_as_of": None if based_on is None else _date(based_on),
            "created_at": _now(),
        })  # fmt: skip


def read_drift(engine: sa.Engine, as_of: dt.date) -> list[dict[str, Any]]:
    """Return one night's stored drift rows, worst PSI first, the population rows (no PSI) after them."""
    rows = _read(engine, "read_drift", {"as_of": as_of}, "computed_at")
    return sorted(rows, key=lambda r: (r["psi"] is None, -(r["psi"] or 0.0), r["feature"]))


# --------------------------------------------------------------------------- text


_LABELS = {"high_tier_precision": "High-tier precision", "total_ratio": "Total ratio (pred./actual)"}


def _cell(value: Any, low: Any = None, high: Any = None) -> str:
    if value is None:
        return "n/a"
    whole = low is None and float(value).is_integer()  # a count or a whole total
    text = f"{value:,.0f}" if abs(value) >= 1000 or whole else f"{value:.3f}"
    return f"{text} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else text


def format_estimates(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the estimate-vs-realized table as text lines (empty without estimates)."""
    if not rows:
        return []

    def num(value: Any) -> str:
        return "pending" if value is None else f"{float(value):,.2f}"

    lines = ["Estimated before labels vs realized (direct loss estimation; realized once as_of + H has passed)", "",
             f"{'as_of':<12} {'version':<8} {'metric':<6} {'estimated':>12} {'realized':>12} {'error':>10}"]  # fmt: skip
    for row in rows:
        lines.append(f"{row['as_of']:<12} {row['model_version']!s:<8} {row['metric']:<6} {num(row['estimated']):>12} "
                     f"{num(row['realized']):>12} {num(row['estimate_error']) if row['realized'] is not None else '':>10}")  # fmt: skip
    return [*lines, ""]


def format_monitor(data: Mapping[str, Any]) -> str:
    """Return ``pipeline.monitor``'s result as text: per matured partition the realized metrics of each
    scorer (95% interval in brackets), the estimates beside their realized values, then the night's drift table."""
    from spendpred.metrics import metric_label

    if data.get("as_of") is None:
        return str(data.get("note", "nothing published yet"))
    lines = [f"Monitoring as of {data['as_of']} (horizon {data['horizon_days']} days)", ""]
    groups: dict[tuple[str, int, str], dict[str, dict[str, str]]] = {}
    for row in data.get("realized", []):
        key = (row["as_of"], int(row["horizon_days"]), str(row["model_version"]))
        groups.setdefault(key, {}).setdefault(row["metric"], {})[row["scorer"]] = _cell(row["value"], row["ci_low"], row["ci_high"])
    if not groups:
        lines.append("Realized performance: no partition has matured yet (as_of + H <= the run date).")
    for (as_of, horizon, version), table in groups.items():
        present = {s for values in table.values() for s in values}
        scorers = [s for s in SCORERS if s in present] + sorted(present - set(SCORERS))
        lines += [f"Realized performance of {as_of} (version {version}, labels in ({as_of}, +{horizon} days])", ""]
        lines.append(f"{'metric':<28} " + " ".join(f"{s:<26}" for s in scorers))
        for metric in (*REALIZED_METRICS, *TOTALS):
            if metric in table:
                label = _LABELS.get(metric) or metric_label(metric)
                lines.append(f"{label:<28} " + " ".join(f"{table[metric].get(s, 'n/a'):<26}" for s in scorers))
        lines.append("")
    lines += format_estimates(data.get("estimated") or [])
    for row in (data.get("requests") or [])[:3]:
        lines.append(f"Retrain {row['decision']} by the monitoring of {row['as_of']}: {row['reasons']}"
                     + (f" (cool-down until {row['cooldown_until']})" if row.get("cooldown_until") else ""))  # fmt: skip
    if data.get("requests"):
        lines.append("")
    drift = data.get("drift", [])
    skipped = (data.get("drift_summary") or {}).get("skipped")
    if not drift:
        lines.append(f"Drift: none computed for {data['as_of']}" + (f" ({skipped})" if skipped else "") + ".")
        return "\n".join(lines)
    lines += [f"Drift on {data['as_of']} against version {drift[0]['model_version']}'s training data", ""]
    lines.append(f"{'feature':<24} {'PSI':>8} {'KS/share':>8}  status")
    for row in drift:
        ks = "n/a" if row["statistic"] is None else f"{row['statistic']:.3f}"
        psi_text = "n/a" if row["psi"] is None else f"{row['psi']:.3f}"
        lines.append(f"{row['feature']:<24} {psi_text:>8} {ks:>8}  {row['status']}")
    return "\n".join(lines)
