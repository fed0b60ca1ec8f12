"""spendpred.monitoring's pure functions: realized metrics and their intervals, PSI, drift reference and table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spendpred import metrics, monitoring
from spendpred.errors import DataError, ModelError

FEATURES = ("monetary_90d", "monetary_all", "frequency_90d", "tenure_days")


def _population(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    buyer = rng.random(n) < 0.4
    frame = pd.DataFrame({
        "monetary_90d": np.where(buyer, np.round(rng.gamma(2.0, 60.0, n), 2), 0.0),
        "monetary_all": np.round(rng.gamma(2.0, 300.0, n), 2),
        "frequency_90d": np.where(buyer, rng.poisson(2.0, n) + 1, 0).astype(float),
        "tenure_days": rng.integers(1, 800, n).astype(float),
    })  # fmt: skip
    predictions = np.round(frame["monetary_90d"].to_numpy() * 0.8 + rng.gamma(1.0, 5.0, n), 2)
    return frame, predictions


def test_drift_flags_a_shift_and_not_a_fresh_sample() -> None:
    train, held_out = _population(3000, seed=1)
    reference = monitoring.build_reference(train, FEATURES, held_out, seed=0)
    assert set(reference["columns"]) == {*FEATURES, monitoring.PREDICTION_COLUMN}
    assert len(json.dumps(reference)) < 40_000  # small: a few kB per column

    tonight, predicted = _population(3000, seed=2)  # the same world, other users
    calm = monitoring.drift_table(reference, tonight, predicted, warn=0.1, alert=0.25)
    assert {row["status"] for row in calm} == {"ok"}, calm
    assert max(row["psi"] for row in calm) < 0.05

    shifted = tonight.copy()
    for column in ("monetary_90d", "monetary_all"):  # prices switched to cents
        shifted[column] = shifted[column] * 100
    rows = {row["feature"]: row for row in monitoring.drift_table(reference, shifted, predicted * 100, warn=0.1, alert=0.25)}
    for name in ("monetary_90d", "monetary_all", monitoring.PREDICTION_COLUMN):
        assert rows[name]["status"] == "alert" and rows[name]["psi"] >= 0.25
        assert rows[name]["statistic"] > 0.3  # Kolmogorov-Smirnov against the reference sample
    assert rows["tenure_days"]["status"] == "ok" and rows["frequency_90d"]["status"] == "ok"
    summary = monitoring.drift_summary(list(rows.values()))
    assert summary["counts"] == {"ok": 2, "warn": 0, "alert": 3}
    assert set(summary["alert"]) == {"monetary_90d", "monetary_all", monitoring.PREDICTION_COLUMN}


def test_psi_and_status() -> None:
    assert monitoring.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # by hand: (0.3 - 0.5) ln(0.3/0.5) + (0.7 - 0.5) ln(0.7/0.5)
    assert monitoring.psi([0.5, 0.5], [0.3, 0.7]) == pytest.approx(-0.2 * np.log(0.6) + 0.2 * np.log(1.4))
    assert np.isfinite(monitoring.psi([1.0, 0.0], [0.0, 1.0]))  # empty bins floored
    assert [monitoring.drift_status(v, 0.1, 0.25) for v in (0.0, 0.1, 0.2, 0.25, float("nan"))] == ["ok", "warn", "warn", "alert", "ok"]


def test_bins_put_a_mass_of_zeros_in_one_bin() -> None:
    values = np.r_[np.zeros(70), np.arange(1.0, 31.0)]
    reference = monitoring.column_reference(values, sample=10)
    assert reference["edges"][0] == 0.0 and reference["proportions"][0] == pytest.approx(0.7)
    assert sum(reference["proportions"]) == pytest.approx(1.0) and len(reference["sample"]) == 10
    assert monitoring.bin_shares([-1.0, 0.0, 1000.0], reference["edges"])[[0, -1]].tolist() == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(DataError, match="non-finite"):
        monitoring.column_reference([1.0, float("nan")])


def test_reference_file_round_trip(tmp_path: Path) -> None:
    assert monitoring.read_reference(tmp_path / "reference.json") is None  # an older bundle: drift is skipped
    train, held_out = _population(200, seed=3)
    path = monitoring.write_reference(tmp_path / "reference.json", monitoring.build_reference(train, FEATURES, held_out))
    assert monitoring.read_reference(path)["columns"]["tenure_days"]["count"] == 200
    path.write_text('{"format": 99}', encoding="utf-8")
    with pytest.raises(ModelError, match="retrain"):
        monitoring.read_reference(path)


def test_realized_metrics_match_the_metric_functions_and_are_seeded() -> None:
    rng = np.random.default_rng(5)
    actual = np.where(rng.random(300) < 0.4, rng.gamma(2.0, 50.0, 300), 0.0)
    model = actual * 0.7 + rng.gamma(1.0, 20.0, 300)
    past = np.where(rng.random(300) < 0.5, actual, 0.0)
    table = monitoring.realized_metrics(actual, {"model": model, "past_spend": past}, draws=60, seed=3)
    again = monitoring.realized_metrics(actual, {"model": model, "past_spend": past}, draws=60, seed=3)
    day = pd.Timestamp("2024-01-31").date()
    assert monitoring.metric_rows(day, "3", 30, table) == monitoring.metric_rows(day, "3", 30, again)  # nan as None
    value, low, high = table["model"]["normalised_gini"]
    assert value == pytest.approx(metrics.normalised_gini(actual, model)) and low < value < high
    assert table["model"]["decile_mape"][0] == pytest.approx(metrics.decile_mape(actual, model))
    assert table["model"]["top10_capture"][0] == pytest.approx(metrics.top_k_capture(actual, model))
    assert table["model"]["total_ratio"][0] == pytest.approx(model.sum() / actual.sum())
    # high tier: the top 10% (30 users) by each side; recall = precision when both tiers hold 30
    truth, chosen = monitoring.high_flags(actual), monitoring.high_flags(model)
    assert truth.sum() == 30 and chosen.sum() == 30
    assert table["model"]["high_tier_recall"][0] == pytest.approx((truth & chosen).sum() / 30)
    assert list(table["model"]) == [*monitoring.REALIZED_METRICS, *monitoring.TOTALS]
    rows = monitoring.metric_rows(day, "3", 30, table)
    assert len(rows) == 2 * len(table["model"]) and all(r["ci_low"] is None for r in rows if r["metric"] == "users")


def test_realized_metrics_refuse_bad_input() -> None:
    with pytest.raises(DataError, match="one prediction per user"):
        monitoring.realized_metrics([1.0, 2.0], {"model": [1.0]})
    with pytest.raises(DataError, match="negative"):
        monitoring.realized_metrics([-1.0, 2.0], {"model": [1.0, 1.0]})
    with pytest.raises(DataError, match="one flag per user"):
        monitoring.realized_metrics([1.0, 2.0], {"model": [1.0, 2.0]}, predicted_high={"model": [True]})


def test_format_monitor_prints_both_tables() -> None:
    data = {
        "as_of": "2024-03-01", "horizon_days": 30,
        "realized": [{"as_of": "2024-01-31", "horizon_days": 30, "model_version": "3", "scorer": "model",
                      "metric": "normalised_gini", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9}],
        "drift": [{"model_version": "3", "feature": "monetary_90d", "psi": 1.5, "statistic": 0.9, "status": "alert"}],
    }  # fmt: skip
    text = monitoring.format_monitor(data)
    assert "Normalised Gini" in text and "0.800 [0.700, 0.900]" in text and "monetary_90d" in text and "alert" in text
