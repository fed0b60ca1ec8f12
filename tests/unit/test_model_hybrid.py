"""Hybrid features: BG/NBD x Gamma-Gamma quantities, intervals and trends from snapshot columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spendpred import btyd
from spendpred.errors import DataError
from spendpred.model.hybrid import DERIVED_COLUMNS, SOURCE_COLUMNS, HybridFeatures, has_sources, model_columns, rfm


def _population(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Users with purchase histories in snapshot form (days, as of the snapshot date)."""
    rng = np.random.default_rng(seed)
    buyer = rng.random(n) < 0.7
    days = np.where(buyer, 1 + rng.poisson(2.0, n), 0).astype(float)
    first = np.where(buyer, rng.uniform(30, 360, n), 0.0)
    last_gap = np.where(days > 1, rng.uniform(0, 1, n) * first, first)  # recency_days = as_of - last purchase
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "purchase_days": days,
            "first_purchase_days": first,
            "recency_days": np.where(buyer, last_gap, 500.0),  # non-buyers: the tenure sentinel
            "repeat_value": np.where(days > 1, rng.lognormal(3.0, 0.5, n), 0.0),
            "monetary_90d": rng.gamma(1.0, 20.0, n),
            "monetary_365d": rng.gamma(2.0, 40.0, n),
            "frequency_90d": rng.poisson(1.0, n).astype(float),
            "frequency_365d": rng.poisson(3.0, n).astype(float),
        }
    )


def test_rfm_follows_the_bgnbd_conventions() -> None:
    frame = pd.DataFrame(
        {"purchase_days": [0.0, 1.0, 4.0], "first_purchase_days": [0.0, 10.0, 100.0], "recency_days": [30.0, 10.0, 40.0],
         "repeat_value": [0.0, 0.0, 25.0], "monetary_90d": [0.0] * 3, "monetary_365d": [0.0] * 3,
         "frequency_90d": [0.0] * 3, "frequency_365d": [0.0] * 3}
    )  # fmt: skip
    buyer, x, t_x, age, m = rfm(frame)
    assert buyer.tolist() == [False, True, True]
    assert x.tolist() == [0.0, 0.0, 3.0]  # repeat days: the first purchase day is the birth
    assert t_x.tolist() == [0.0, 0.0, 60.0]  # first -> last purchase day
    assert age.tolist() == [0.0, 10.0, 100.0]
    assert m.tolist() == [0.0, 0.0, 25.0]


def test_fit_and_transform_match_the_btyd_baseline_formulas() -> None:
    train = _population(seed=1)
    features = HybridFeatures.fit(train, horizon_days=90)
    assert features.bgnbd is not None and features.gamma_gamma is not None
    scored = _population(seed=2)
    out = features.transform(scored)
    assert list(out.columns) == [*scored.columns, *DERIVED_COLUMNS]
    assert np.isfinite(out[list(DERIVED_COLUMNS)].to_numpy()).all()
    buyer, x, t_x, age, m = rfm(scored)
    params = btyd.BGNBDParams(**features.bgnbd)
    expected = btyd.bgnbd_expected_purchases(params, 90, x[buyer], t_x[buyer], np.maximum(age, t_x)[buyer])
    np.testing.assert_allclose(out["btyd_purchases"].to_numpy()[buyer], expected)
    assert (out.loc[~buyer, ["btyd_p_alive", "btyd_purchases", "btyd_spend"]] == 0).all().all()
    np.testing.assert_allclose(out["btyd_spend"], out["btyd_purchases"] * out["btyd_value"])
    assert ((out["btyd_p_alive"] >= 0) & (out["btyd_p_alive"] <= 1)).all()


def test_parameters_come_from_the_training_frame_only() -> None:
    """Point in time: scoring applies the stored training parameters, it never refits."""
    features = HybridFeatures.fit(_population(seed=1), horizon_days=90)
    other = HybridFeatures.fit(_population(seed=5), horizon_days=90)
    scored = _population(seed=2)
    first = features.transform(scored)["btyd_spend"]
    np.testing.assert_array_equal(first, features.transform(scored)["btyd_spend"])
    assert not np.allclose(first, other.transform(scored)["btyd_spend"])
    restored = HybridFeatures.from_dict(features.to_dict())
    np.testing.assert_array_equal(restored.transform(scored)["btyd_spend"], first)


def test_no_buyers_gives_zero_btyd_features_not_an_error() -> None:
    frame = _population(50)
    frame["purchase_days"] = 0.0
    features = HybridFeatures.fit(frame, horizon_days=30)
    assert features.bgnbd is None and features.gamma_gamma is None
    assert (features.transform(frame)["btyd_spend"] == 0).all()


def test_missing_or_bad_sources_are_data_errors() -> None:
    frame = _population(20)
    assert has_sources(frame) and not has_sources(frame.drop(columns="repeat_value"))
    with pytest.raises(DataError, match=r"\['repeat_value'\]"):
        rfm(frame.drop(columns="repeat_value"))
    frame.loc[3, "purchase_days"] = -1.0
    with pytest.raises(DataError, match="purchase_days"):
        rfm(frame)
    assert model_columns(["a"], None) == ["a"] and model_columns(["a"], {"x": 1})[1:] == list(DERIVED_COLUMNS)
    assert set(SOURCE_COLUMNS) >= {"purchase_days", "first_purchase_days", "repeat_value"}
