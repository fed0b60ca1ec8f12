"""Evaluation: metrics table, Markdown report, metrics JSON and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spendpred import evaluation, metrics, tiers
from spendpred.errors import DataError
from spendpred.tiers import TIERS, TierRule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def predictions() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    y_true = rng.exponential(50.0, 300) * (rng.random(300) < 0.4)
    return y_true, {
        "model": y_true * 0.8 + rng.exponential(5.0, 300),
        "past spend": rng.permutation(y_true),
        "constant": np.full(300, y_true.mean()),
    }


def test_metrics_table_matches_metrics_evaluate(predictions: tuple) -> None:
    y_true, preds = predictions
    table = evaluation.metrics_table(y_true, preds)
    assert list(table) == ["model", "past spend", "constant"]
    assert table["model"] == metrics.evaluate(y_true, preds["model"])
    # a near-perfect ordering beats a shuffled one
    assert table["model"]["normalised_gini"] > 0.9 > table["past spend"]["normalised_gini"]


def test_write_evaluation_writes_report_json_and_plots(
    tmp_path: Path, predictions: tuple
) -> None:
    y_true, preds = predictions
    result = evaluation.write_evaluation(
        y_true, preds, tmp_path / "eval", context={"as_of": "2024-03-31", "horizon_days": 90}
    )
    assert result.report_path == tmp_path / "eval" / "report.md"
    assert set(result.plot_paths) == {"gain_curve", "decile_calibration", "pred_vs_true"}
    for plot in result.plot_paths.values():
        assert plot.read_bytes()[:8] == PNG_MAGIC
        assert plot.stat().st_size > 5_000  # a real picture, not an empty canvas

    report = result.report_path.read_text(encoding="utf-8")
    assert "| model |" in report and "| past spend |" in report
    assert "2024-03-31" in report
    assert "![gain curve](gain_curve.png)" in report
    model_gini = f"{result.metrics['model']['normalised_gini']:.3f}"
    assert model_gini in report

    payload = json.loads(result.metrics_path.read_text(encoding="utf-8"))
    assert payload["test_users"] == 300
    assert payload["metrics"]["model"]["rmse"] == pytest.approx(result.metrics["model"]["rmse"])
    # the constant predictor has an undefined Spearman: stored as null, shown as n/a
    assert payload["metrics"]["constant"]["spearman"] is None
    assert "n/a" in report
    confusion = np.array(payload["tier_confusion"]["model"])
    assert confusion.sum() == 300
    assert len(result.paths) == 5
    # calibration: decile MAPE and the totals, in the JSON and in the report's table
    model = payload["metrics"]["model"]
    assert model["total_actual"] == pytest.approx(float(y_true.sum()))
    assert model["total_predicted"] == pytest.approx(float(preds["model"].sum()))
    assert model["total_ratio"] == pytest.approx(preds["model"].sum() / y_true.sum())
    assert model["decile_mape"] == pytest.approx(result.metrics["model"]["decile_mape"])
    for label in ("Decile MAPE", "Total predicted", "Total actual", "Total ratio (pred./actual)"):
        assert label in report
    assert f"{model['total_ratio']:.3f}" in report
    # the tier rule: the settings' default, named in the report and the JSON
    assert result.tier_rule == TierRule()
    assert payload["tier_rule"] == {"mode": "quantile", "high": 0.1, "medium": 0.3, "high_min": None, "medium_min": None}
    assert "top 10% of users high, next 30% medium" in report


def test_write_evaluation_rejects_mismatched_predictions(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'gbt' have shape"):
        evaluation.write_evaluation([1.0, 2.0, 3.0], {"gbt": [1.0, 2.0]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_write_evaluation_names_the_bad_model(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="predictions 'model'.*non-finite"):
        evaluation.metrics_table([1.0, 2.0], {"model": [1.0, float("inf")]})


def test_write_evaluation_needs_predictions(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no predictions"):
        evaluation.write_evaluation([1.0], {}, tmp_path)


def _published_confusion(y_true: np.ndarray, y_pred: np.ndarray, rule: TierRule) -> list[list[int]]:
    true_tiers, _ = tiers.assign_tiers(y_true, rule)
    pred_tiers, _ = tiers.assign_tiers(y_pred, rule)
    return [[int(np.sum((true_tiers == t) & (pred_tiers == p))) for p in TIERS] for t in TIERS]


def test_write_evaluation_uses_the_rule_passed_in(tmp_path: Path, predictions: tuple) -> None:
    y_true, preds = predictions
    rule = TierRule(mode="threshold", high_min=100.0, medium_min=20.0)
    result = evaluation.write_evaluation(y_true, preds, tmp_path / "eval", rule=rule)
    payload = json.loads(result.metrics_path.read_text(encoding="utf-8"))
    for name, pred in preds.items():
        expected = _published_confusion(y_true, pred, rule)
        assert payload["tier_confusion"][name] == expected
        assert result.confusion[name].tolist() == expected
        assert result.metrics[name] == pytest.approx(metrics.evaluate(y_true, pred, rule), nan_ok=True)
        assert np.trace(expected) / 300 == pytest.approx(result.metrics[name]["tier_accuracy"])
    # not the default rule's tiers
    default = _published_confusion(y_true, preds["model"], TierRule())
    assert payload["tier_confusion"]["model"] != default
    assert payload["tier_rule"]["mode"] == "threshold" and payload["tier_rule"]["high_min"] == 100.0
    assert "high if spend >= 100, medium if >= 20, low otherwise" in result.report_path.read_text(encoding="utf-8")


def test_write_evaluation_defaults_to_the_settings_rule(
    tmp_path: Path, predictions: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    y_true, preds = predictions
    monkeypatch.setenv("SPENDPRED_TIER_HIGH", "0.2")
    monkeypatch.setenv("SPENDPRED_TIER_MEDIUM", "0.3")
    rule = TierRule(high=0.2, medium=0.3)
    result = evaluation.write_evaluation(y_true, {"model": preds["model"]}, tmp_path / "eval")
    assert result.tier_rule == rule
    assert result.confusion["model"].tolist() == _published_confusion(y_true, preds["model"], rule)
    assert result.confusion["model"].tolist() != _published_confusion(y_true, preds["model"], TierRule())
    assert evaluation.metrics_table(y_true, {"model": preds["model"]}) == {"model": result.metrics["model"]}
    assert "top 20% of users high, next 30% medium" in result.report_path.read_text(encoding="utf-8")
