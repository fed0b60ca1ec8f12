"""Simple baselines every model is compared with on the same test users.

* **past spend**: predict that a user spends in the next H days what they spent in the
  last H days (the snapshot's ``past_spend`` column).
* **gradient-boosted trees**: scikit-learn's ``HistGradientBoostingRegressor`` on the numeric
  feature columns, fitted on ``log1p(label)`` of the training users (seeded), predictions
  mapped back with ``expm1`` and a smearing factor (Duan, 1983) so that the mean is not
  biased low by the log transform, then clipped at 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spendpred.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

PAST_SPEND_COLUMN = "past_spend"
LABEL_COLUMN = "label"


def _numeric_block(df: pd.DataFrame, columns: Sequence[str], what: str) -> np.ndarray:
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {missing}: pass a snapshot frame that has them "
            "(see the snapshot manifest's feature_columns)"
        )
    try:
        block = df[list(columns)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} has non-numeric values in {list(columns)}: {exc}") from exc
    bad = ~np.isfinite(block)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{what} has {int(bad.sum())} null or non-finite value(s), first in column "
            f"{columns[col]!r} at row {row}: snapshots must have no nulls (re-extract it)"
        )
    return block


def past_spend_baseline(df: pd.DataFrame) -> np.ndarray:
    """Return the past-spend prediction (the ``past_spend`` column) as a float array.

    Raises ``DataError`` when the column is missing, non-finite or negative.
    """
    values = _numeric_block(df, [PAST_SPEND_COLUMN], "the frame")[:, 0]
    if (values < 0).any():
        raise DataError(f"column {PAST_SPEND_COLUMN!r} has negative spend; spend must be >= 0")
    return values


@dataclass
class GBTBaseline:
    """A fitted gradient-boosted-trees baseline (predicts spend in currency units)."""

    feature_columns: list[str]
    estimator: Any
    smearing: float

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Return predicted spend (>= 0) for each row of ``df``.

        Raises ``DataError`` when a feature column is missing or non-finite.
        """
        features = _numeric_block(df, self.feature_columns, "the frame to predict")
        log_pred = self.estimator.predict(features)
        return np.clip(np.expm1(log_pred) * self.smearing + (self.smearing - 1.0), 0.0, None)


def fit_gbt_baseline(
    train_df: pd.DataFrame,
    feature_columns: Sequence[str],
    seed: int = 42,
    max_iter: int = 300,
    learning_rate: float = 0.05,
) -> GBTBaseline:
    """Fit gradient-boosted trees on ``log1p(label)`` of the training users.

    Returns a :class:`GBTBaseline`. Raises ``DataError`` when the frame is empty, lacks
    ``label`` or a feature column, or holds non-finite or negative labels.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    if not feature_columns:
        raise DataError("feature_columns is empty: the GBT baseline needs numeric features")
    if len(train_df) == 0:
        raise DataError("the training frame is empty: cannot fit the GBT baseline")
    features = _numeric_block(train_df, list(feature_columns), "the training frame")
    labels = _numeric_block(train_df, [LABEL_COLUMN], "the training frame")[:, 0]
    if (labels < 0).any():
        raise DataError(f"column {LABEL_COLUMN!r} has negative spend; labels must be >= 0")
    target = np.log1p(labels)
    estimator = HistGradientBoostingRegressor(
        max_iter=max_iter,
        learning_rate=learning_rate,
        l2_regularization=1.0,
        random_state=seed,
    )
    estimator.fit(features, target)
    residuals = target - estimator.predict(features)
    # Duan's smearing on the log1p scale: E[y] ~ (1 + yhat) * mean(exp(residual)) - 1
    smearing = float(np.mean(np.exp(residuals)))
    logger.info(
        "GBT baseline fitted on %d users, %d features (seed %d, smearing %.3f)",
        len(train_df), len(feature_columns), seed, smearing,
    )
    return GBTBaseline(list(feature_columns), estimator, smearing)


def gbt_baseline(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    feature_columns: Sequence[str],
    seed: int = 42,
) -> np.ndarray:
    """Fit the GBT baseline on ``train_df`` and return its predictions for ``test_df``.

    Raises ``DataError`` as :func:`fit_gbt_baseline` and :meth:`GBTBaseline.predict` do.
    """
    return fit_gbt_baseline(train_df, feature_columns, seed=seed).predict(test_df)
