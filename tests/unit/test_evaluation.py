"""Evaluation: metrics table, Markdown report, metrics JSON and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spendpred import evaluation, metrics
from spendpred.errors import DataError

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
