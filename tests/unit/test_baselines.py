"""Baselines: past spend and gradient-boosted trees on the numeric features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spendpred import baselines, metrics
from spendpred.errors import DataError

FEATURES = ["monetary_90d", "frequency_90d", "recency_days"]


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Synthetic users whose next-period spend follows their past monetary value."""
    rng = np.random.default_rng(seed)
    monetary = rng.exponential(100.0, n) * (rng.random(n) < 0.5)
    frequency = rng.poisson(2.0, n).astype(float)
    recency = rng.integers(0, 365, n).astype(float)
    buys = rng.random(n) < np.where(monetary > 0, 0.8, 0.1)
    label = np.where(buys, monetary * 0.9 + rng.exponential(20.0, n), 0.0)
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "monetary_90d": monetary,
            "frequency_90d": frequency,
            "recency_days": recency,
            "past_spend": monetary,
            "label": label,
        }
    )


def test_past_spend_baseline_returns_the_column() -> None:
    df = pd.DataFrame({"past_spend": [0.0, 12.5, 3.0]})
    np.testing.assert_array_equal(baselines.past_spend_baseline(df), [0.0, 12.5, 3.0])


def test_past_spend_baseline_missing_column() -> None:
    with pytest.raises(DataError, match="past_spend"):
        baselines.past_spend_baseline(pd.DataFrame({"label": [1.0]}))


def test_gbt_learns_the_signal_and_is_seeded() -> None:
    train, test = _frame(400, seed=1), _frame(200, seed=2)
    pred = baselines.gbt_baseline(train, test, FEATURES, seed=7)
    assert pred.shape == (200,)
    assert (pred >= 0).all()
    # the label is ~0.9 x monetary for buyers: the trees must rank users well
    assert metrics.normalised_gini(test["label"], pred) > 0.7
    # smearing keeps the mean prediction close to the mean label (log models bias it low)
    assert pred.mean() == pytest.approx(test["label"].mean(), rel=0.35)
    again = baselines.gbt_baseline(train, test, FEATURES, seed=7)
    np.testing.assert_array_equal(pred, again)


def test_gbt_rejects_missing_feature_and_nulls() -> None:
    train = _frame(50, seed=3)
    with pytest.raises(DataError, match="lacks column"):
        baselines.fit_gbt_baseline(train.drop(columns=["recency_days"]), FEATURES)
    train.loc[5, "frequency_90d"] = np.nan
    with pytest.raises(DataError, match="'frequency_90d' at row 5"):
        baselines.fit_gbt_baseline(train, FEATURES)


def test_gbt_rejects_negative_labels() -> None:
    train = _frame(50, seed=4)
    train.loc[0, "label"] = -1.0
    with pytest.raises(DataError, match="negative"):
        baselines.fit_gbt_baseline(train, FEATURES)
