"""Evaluation metrics for zero-inflated, heavy-tailed spend.

Every function takes ``y_true`` (observed spend, >= 0 where shares of spend are involved)
and ``y_pred`` (predicted spend) as 1-D array-likes of the same length and raises
:class:`spendpred.errors.DataError` on empty, mis-shaped or non-finite input. Standard
metrics are thin checked wrappers: RMSE, MAE and the confusion matrix come from
scikit-learn, ranks and Spearman from SciPy (imported on first use, so importing this
module stays light).

Conventions shared by the ranking metrics (Gini, top-k capture, decile MAPE):

* Users are ordered by prediction, highest first.
* **Ties in the prediction share their spend evenly**: inside a group of equal predictions
  every user is credited with the group's mean true spend. The result therefore depends
  neither on the input order nor on a sort's tie-breaking, and a constant predictor gets no
  credit for a lucky order.
* **No spend at all** (``sum(y_true) == 0``): shares of spend are undefined, so
  :func:`gini`, :func:`normalised_gini`, :func:`top_k_capture` and the total ratio
  return ``nan``.

The paired bootstrap (:func:`paired_bootstrap`, :func:`share_ahead`) is the one behind the
promotion gate and the benchmarks: users resampled with replacement, every model scored on
the same draw. **A draw without spend** (its resampled users spent nothing) has undefined
ranking metrics (``nan``): no model is ahead in it, and it still counts among the draws.

Tiers are production's: :func:`spendpred.tiers.assign_tiers` with a
:class:`spendpred.tiers.TierRule` (by default the settings' rule, the one the published
tiers use), applied separately to true and to predicted spend. Under the quantile rule
ties go to the upper tier, so when more than ``1 - high - medium`` of the users spent
nothing, every zero spender is *medium* on the true side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from spendpred.errors import DataError
from spendpred.tiers import TIERS, TierRule, assign_tiers, rule_from_settings, share_count

ArrayLike = npt.ArrayLike

METRIC_LABELS: dict[str, str] = {
    "rmse": "RMSE",
    "mae": "MAE",
    "spearman": "Spearman",
    "gini": "Gini",
    "normalised_gini": "Normalised Gini",
    "top10_capture": "Top-10% capture",
    "decile_mape": "Decile MAPE",
    "total_predicted": "Total predicted",
    "total_actual": "Total actual",
    "total_ratio": "Total ratio (pred./actual)",
    "tier_accuracy": "Tier accuracy",
    "high_tier_recall": "High-tier recall",
}
"""Display label of each key of :func:`evaluate`'s result, in report order."""

METRIC_NAMES: Sequence[str] = tuple(METRIC_LABELS)
"""Keys of :func:`evaluate`'s result, in report order."""

LIFT_PREFIX = "finetune_lift_"
"""Prefix of the fine-tuning lift metrics (fine-tuned minus frozen encoder) recorded with a training run."""


def metric_label(key: str) -> str:
    """Return the display label of a metric key: ``METRIC_LABELS``'s, ``Fine-tuning lift: <label>`` for a lift,
    else the key in words (``"high_tier_precision"`` → ``"High tier precision"``); never the raw key.
    """
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith(LIFT_PREFIX) and len(key) > len(LIFT_PREFIX):
        return f"Fine-tuning lift: {metric_label(key[len(LIFT_PREFIX):])}"
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{name} is empty: metrics need at least one user")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at position {first}: "
            f"{array[first]!r}); fill or drop them before computing metrics"
        )
    return array


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true = _as_1d(y_true, "y_true")
    pred = _as_1d(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise DataError(
            f"y_true has {true.size} values but y_pred has {pred.size}: "
            "pass one prediction per user"
        )
    return true, pred


def _require_non_negative(y_true: np.ndarray) -> None:
    negative = y_true < 0
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise DataError(
            f"y_true has {int(negative.sum())} negative value(s) (first at position {first}: "
            f"{y_true[first]!r}); spend must be >= 0 for shares of spend"
        )


def _sorted_by_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """True spend ordered by prediction (highest first), ties sharing their spend evenly."""
    order = np.argsort(-y_pred, kind="stable")
    pred_sorted = y_pred[order]
    true_sorted = y_true[order]
    starts = np.flatnonzero(np.r_[True, pred_sorted[1:] != pred_sorted[:-1]])
    sizes = np.diff(np.r_[starts, y_pred.size])
    group_means = np.add.reduceat(true_sorted, starts) / sizes
    return np.repeat(group_means, sizes)


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return the root mean squared error (scikit-learn). Raises ``DataError`` on bad input."""
    from sklearn.metrics import root_mean_squared_error

    true, pred = _pair(y_true, y_pred)
    return float(root_mean_squared_error(true, pred))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return the mean absolute error (scikit-learn). Raises ``DataError`` on bad input."""
    from sklearn.metrics import mean_absolute_error

    true, pred = _pair(y_true, y_pred)
    return float(mean_absolute_error(true, pred))


def spearman(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return Spearman's rank correlation (``scipy.stats.spearmanr``, ties at average ranks).

    ``nan`` when either side is constant, a single user included (the correlation is
    undefined; answered here, so SciPy's ``ConstantInputWarning`` is not raised).
    Raises ``DataError`` on bad input.
    """
    from scipy.stats import spearmanr

    true, pred = _pair(y_true, y_pred)
    if np.ptp(true) == 0.0 or np.ptp(pred) == 0.0:
        return float("nan")
    return float(spearmanr(true, pred).statistic)


def gain_curve(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return the cumulative gain curve ``(share_of_users, share_of_spend)``.

    Both arrays have ``n + 1`` points starting at ``(0, 0)``; users are taken in order of
    prediction (highest first), ties sharing their spend evenly. The spend share is ``nan``
    everywhere when ``sum(y_true) == 0``. Raises ``DataError`` on bad or negative input.
    """
    true, pred = _pair(y_true, y_pred)
    _require_non_negative(true)
    total = float(true.sum())
    share_users = np.arange(true.size + 1, dtype=np.float64) / true.size
    if total == 0.0:
        return share_users, np.full(true.size + 1, np.nan)
    cumulative = np.r_[0.0, np.cumsum(_sorted_by_prediction(true, pred))] / total
    return share_users, cumulative


def gini(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return the Gini of the predicted ordering: ``2 * mean_k(C_k) - 1``.

    ``C_k`` is the share of all true spend held by the ``k`` users with the highest
    predictions (``k = 1..n``; ties share their spend evenly). One user holding all spend
    and ranked first gives 1; a constant prediction gives ``1/n``. ``nan`` when
    ``sum(y_true) == 0``. Raises ``DataError`` on bad or negative input.
    """
    _, cumulative = gain_curve(y_true, y_pred)
    if np.isnan(cumulative[-1]):
        return float("nan")
    return float(2.0 * cumulative[1:].mean() - 1.0)


def normalised_gini(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return the model's Gini divided by the Gini of the perfect ordering (``y_pred = y_true``).

    1 means the predictions order users exactly as their true spend does. ``nan`` when
    ``sum(y_true) == 0`` (the perfect Gini is then undefined; it is > 0 otherwise).
    Raises ``DataError`` on bad or negative input.
    """
    true, pred = _pair(y_true, y_pred)
    perfect = gini(true, true)
    if math.isnan(perfect):
        return float("nan")
    return gini(true, pred) / perfect


def top_k_capture(y_true: ArrayLike, y_pred: ArrayLike, k: float = 0.10) -> float:
    """Return the share of true spend held by the top ``k`` share of users by prediction.

    The top group has ``ceil(k * n)`` users (at least one when ``k > 0``); ties with the
    group's last member share their spend evenly. ``nan`` when ``sum(y_true) == 0``.
    Raises ``DataError`` on bad input and ``ValueError`` when ``k`` is not in (0, 1].
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be a share of users in (0, 1], got {k!r}")
    _, cumulative = gain_curve(y_true, y_pred)
    n = cumulative.size - 1
    return float(cumulative[share_count(k, n)])


def decile_table(
    y_true: ArrayLike, y_pred: ArrayLike, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(mean_pred, mean_true, count)`` per prediction decile, highest decile first.

    Users are ordered by prediction (ties sharing their spend evenly) and split into
    ``bins`` groups of sizes differing by at most one (``numpy.array_split``: the larger
    groups come first). With fewer users than bins the trailing groups are empty: their
    means are ``nan`` and their count 0. Raises ``DataError`` on bad input.
    """
    true, pred = _pair(y_true, y_pred)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins!r}")
    true_sorted = _sorted_by_prediction(true, pred)
    pred_sorted = np.sort(pred)[::-1]
    mean_pred = np.full(bins, np.nan)
    mean_true = np.full(bins, np.nan)
    counts = np.zeros(bins, dtype=np.int64)
    for index, positions in enumerate(np.array_split(np.arange(true.size), bins)):
        if positions.size:
            mean_pred[index] = pred_sorted[positions].mean()
            mean_true[index] = true_sorted[positions].mean()
            counts[index] = positions.size
    return mean_pred, mean_true, counts


def decile_mape(y_true: ArrayLike, y_pred: ArrayLike, bins: int = 10) -> float:
    """Return the mean over prediction deciles of ``|mean pred - mean true| / mean true``.

    Deciles as in :func:`decile_table`. Deciles that are empty or whose mean true spend is
    zero are skipped (the relative error is undefined there); ``nan`` when every decile is
    skipped. Raises ``DataError`` on bad or negative input.
    """
    true, pred = _pair(y_true, y_pred)
    _require_non_negative(true)
    mean_pred, mean_true, counts = decile_table(true, pred, bins)
    usable = (counts > 0) & (mean_true > 0)
    if not usable.any():
        return float("nan")
    errors = np.abs(mean_pred[usable] - mean_true[usable]) / mean_true[usable]
    return float(errors.mean())


def tier_rule(rule: TierRule | None = None) -> TierRule:
    """Return ``rule``, or when it is ``None`` the settings' rule (the one production publishes with)."""
    return rule_from_settings() if rule is None else rule


def tier_confusion(y_true: ArrayLike, y_pred: ArrayLike, rule: TierRule | None = None) -> np.ndarray:
    """Return the 3x3 tier confusion matrix (int counts) of true versus predicted tiers.

    Rows are true tiers and columns predicted tiers, both in :data:`spendpred.tiers.TIERS`
    order (high, medium, low); tiers come from :func:`spendpred.tiers.assign_tiers` with
    ``rule`` (default: the settings' rule) applied separately to ``y_true`` and ``y_pred``.
    Raises ``DataError`` on bad input.
    """
    from sklearn.metrics import confusion_matrix

    true, pred = _pair(y_true, y_pred)
    rule = tier_rule(rule)
    true_tiers, _ = assign_tiers(true, rule, quiet=True)
    pred_tiers, _ = assign_tiers(pred, rule, quiet=True)
    return confusion_matrix(true_tiers, pred_tiers, labels=list(TIERS)).astype(np.int64)


def evaluate(y_true: ArrayLike, y_pred: ArrayLike, rule: TierRule | None = None) -> dict[str, float]:
    """Return every scalar metric as ``{name: value}`` with keys :data:`METRIC_NAMES`.

    ``total_predicted`` and ``total_actual`` are the sums of predicted and true spend,
    ``total_ratio`` their quotient (1 = calibrated in aggregate; ``nan`` without true spend).
    ``tier_accuracy`` is the share of users whose predicted tier equals their true tier,
    ``high_tier_recall`` the share of truly high users predicted high, both under ``rule``
    (default: the settings' rule; see :func:`tier_confusion`). Undefined metrics are ``nan``
    (see the module docstring). Raises ``DataError`` on bad or negative input.
    """
    true, pred = _pair(y_true, y_pred)
    _require_non_negative(true)
    confusion = tier_confusion(true, pred, rule)
    true_high = int(confusion[0].sum())
    total_predicted = float(pred.sum())
    total_actual = float(true.sum())
    return {
        "rmse": rmse(true, pred),
        "mae": mae(true, pred),
        "spearman": spearman(true, pred),
        "gini": gini(true, pred),
        "normalised_gini": normalised_gini(true, pred),
        "top10_capture": top_k_capture(true, pred, 0.10),
        "decile_mape": decile_mape(true, pred),
        "total_predicted": total_predicted,
        "total_actual": total_actual,
        "total_ratio": total_predicted / total_actual if total_actual > 0 else float("nan"),
        "tier_accuracy": float(np.trace(confusion) / true.size),
        "high_tier_recall": float(confusion[0, 0] / true_high) if true_high else float("nan"),
    }


BOOTSTRAP_METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "normalised_gini": normalised_gini,
    "top10_capture": top_k_capture,
}
"""The ranking metrics the paired bootstrap resamples by default (``top10_capture``: k = 10%)."""


def paired_bootstrap(
    y_true: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    draws: int,
    seed: int = 0,
    scores: Mapping[str, Callable[[ArrayLike, ArrayLike], float]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Return ``{model: {metric: values}}``: each metric of ``scores`` (default
    :data:`BOOTSTRAP_METRICS`) on each of ``draws`` paired bootstrap draws, in draw order.

    A draw resamples the users with replacement (``numpy.random.default_rng(seed)``, one
    ``integers(0, n, n)`` per draw), and every model of ``predictions`` is scored on the same
    draw, so differences between models are paired. A draw without spend gives ``nan`` for
    the ranking metrics and stays among the draws (see the module docstring); compare models
    with :func:`share_ahead`. Without users (or draws) every array is empty. Raises
    ``DataError`` on mis-shaped, non-finite or negative input.
    """
    y = np.asarray(y_true, dtype=np.float64)
    models = {name: np.asarray(values, dtype=np.float64) for name, values in predictions.items()}
    for name, predicted in models.items():
        if predicted.shape != y.shape:
            raise DataError(f"{name} has {predicted.size} predictions for {y.size} users: pass one prediction per user")
    scores = BOOTSTRAP_METRICS if scores is None else scores
    values: dict[str, dict[str, list[float]]] = {name: {key: [] for key in scores} for name in models}
    if y.size and draws > 0:
        rng = np.random.default_rng(seed)
        for _ in range(draws):
            index = rng.integers(0, y.size, y.size)
            for name, predicted in models.items():
                for key, score in scores.items():
                    values[name][key].append(score(y[index], predicted[index]))
    return {name: {key: np.asarray(v, dtype=np.float64) for key, v in per.items()} for name, per in values.items()}


def share_ahead(ours: ArrayLike, theirs: ArrayLike) -> float:
    """Return the share of paired draws (:func:`paired_bootstrap`'s values of two models for one
    metric) in which ``ours`` is strictly higher than ``theirs``; a draw where either is ``nan``
    (a draw without spend) counts as not ahead. ``nan`` when there are no draws."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"paired draws differ in number: {a.size} and {b.size}")
    if a.size == 0:
        return float("nan")
    return int(np.count_nonzero(a > b)) / a.size
