"""Compare named predictions on the same test users: metrics table, Markdown report, plots.

:func:`write_evaluation` is the entry point: given the test users' true spend and a mapping
``{name: predictions}`` (the model, the model before fine-tuning, past spend, GBT, ...) it
writes into one folder

* ``metrics.json``  -- ``{"metrics": {name: {metric: value}}, "tier_confusion": {...},
  "tier_rule": {...}, ...}`` (undefined metrics are ``null``),
* ``report.md``     -- the metrics table (ranking, errors, calibration totals, tiers), tier
  confusion matrices and the plots,
* ``gain_curve.png``, ``decile_calibration.png``, ``pred_vs_true.png``,

and returns their paths. Tiers are production's: :func:`spendpred.tiers.assign_tiers` with
the settings' tier rule (or the ``rule`` passed in), applied to true and predicted spend
alike. Plots are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, so
nothing global (pyplot state, the backend) is touched.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spendpred import metrics
from spendpred.errors import DataError
from spendpred.tiers import TIERS, TierRule

logger = logging.getLogger(__name__)

REPORT_NAME = "report.md"
METRICS_NAME = "metrics.json"
PLOT_NAMES: dict[str, str] = {
    "gain_curve": "gain_curve.png",
    "decile_calibration": "decile_calibration.png",
    "pred_vs_true": "pred_vs_true.png",
}
_SCATTER_MAX_POINTS = 5000

@dataclass
class EvaluationResult:
    """What :func:`write_evaluation` computed and where it wrote it."""

    metrics: dict[str, dict[str, float]]
    confusion: dict[str, np.ndarray]
    out_dir: Path
    report_path: Path
    metrics_path: Path
    plot_paths: dict[str, Path] = field(default_factory=dict)
    tier_rule: TierRule = field(default_factory=TierRule)

    @property
    def paths(self) -> list[Path]:
        """Every file written: report, metrics JSON and plots."""
        return [self.report_path, self.metrics_path, *self.plot_paths.values()]


def _check_predictions(
    y_true: npt.ArrayLike, predictions: Mapping[str, npt.ArrayLike]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not predictions:
        raise DataError("no predictions to evaluate: pass at least one {name: predictions}")
    true = np.asarray(y_true, dtype=np.float64)
    checked: dict[str, np.ndarray] = {}
    for name, values in predictions.items():
        pred = np.asarray(values, dtype=np.float64)
        if pred.shape != true.shape:
            raise DataError(
                f"predictions {name!r} have shape {pred.shape} but y_true has {true.shape}: "
                "every model must be scored on the same test users"
            )
        checked[str(name)] = pred
    return true, checked


def metrics_table(
    y_true: npt.ArrayLike, predictions: Mapping[str, npt.ArrayLike], rule: TierRule | None = None
) -> dict[str, dict[str, float]]:
    """Return ``{name: metrics.evaluate(y_true, pred, rule)}`` in the mapping's order.

    ``rule`` defaults to the settings' tier rule. Raises ``DataError`` when a prediction
    array does not match ``y_true`` or holds bad values.
    """
    true, checked = _check_predictions(y_true, predictions)
    rule = metrics.tier_rule(rule)
    table: dict[str, dict[str, float]] = {}
    for name, pred in checked.items():
        try:
            table[name] = metrics.evaluate(true, pred, rule)
        except DataError as exc:
            raise DataError(f"predictions {name!r}: {exc}") from exc
    return table


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _diagonal(highest: float) -> np.ndarray:
    """Points of y = x dense enough to look straight on symmetric-log axes."""
    return np.r_[0.0, np.geomspace(1e-2, max(highest, 1.0), 200)]


def plot_gain_curve(y_true: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path) -> Path:
    """Draw cumulative share of spend versus share of users (one line per model); return ``path``."""
    figure = _new_figure(6.5, 5.0)
    axes = figure.add_subplot()
    if float(y_true.sum()) > 0:
        users, spend = metrics.gain_curve(y_true, y_true)
        axes.plot(users, spend, color="black", linestyle=":", label="perfect ordering")
    for name, pred in predictions.items():
        users, spend = metrics.gain_curve(y_true, pred)
        gini = metrics.normalised_gini(y_true, pred)
        axes.plot(users, spend, label=f"{name} (norm. Gini {_fmt(gini)})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="random")
    axes.axvline(0.10, color="grey", linewidth=0.5)
    axes.set_xlabel("share of users (highest predicted spend first)")
    axes.set_ylabel("cumulative share of true spend")
    axes.set_title("Gain curve")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_decile_calibration(
    y_true: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path
) -> Path:
    """Draw mean predicted versus mean true spend per prediction decile; return ``path``."""
    figure = _new_figure(6.5, 5.0)
    axes = figure.add_subplot()
    highest = 1.0
    for name, pred in predictions.items():
        mean_pred, mean_true, counts = metrics.decile_table(y_true, pred)
        keep = counts > 0
        axes.plot(mean_true[keep], mean_pred[keep], marker="o", label=name)
        highest = max(highest, float(np.nanmax(mean_true[keep])), float(np.nanmax(mean_pred[keep])))
    diagonal = _diagonal(highest)
    axes.plot(diagonal, diagonal, color="grey", linestyle="--", label="calibrated")
    axes.set_xscale("symlog", linthresh=1.0)
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_xlabel("mean true spend in the decile")
    axes.set_ylabel("mean predicted spend in the decile")
    axes.set_title("Decile calibration (deciles of each model's predictions)")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_pred_vs_true(
    y_true: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path, seed: int = 0
) -> Path:
    """Scatter predicted versus true spend on symmetric-log axes, one panel per model; return ``path``.

    At most 5000 users (a seeded sample) are drawn per panel.
    """
    count = len(predictions)
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    figure = _new_figure(5.0 * columns, 4.5 * rows)
    sample = np.arange(y_true.size)
    if y_true.size > _SCATTER_MAX_POINTS:
        sample = np.sort(np.random.default_rng(seed).choice(y_true.size, _SCATTER_MAX_POINTS, replace=False))
    highest = max(1.0, float(y_true.max()), *(float(np.max(p)) for p in predictions.values()))
    for index, (name, pred) in enumerate(predictions.items(), start=1):
        axes = figure.add_subplot(rows, columns, index)
        axes.scatter(y_true[sample], pred[sample], s=6, alpha=0.4)
        axes.plot(_diagonal(highest), _diagonal(highest), color="grey", linestyle="--")
        axes.set_xscale("symlog", linthresh=1.0)
        axes.set_yscale("symlog", linthresh=1.0)
        axes.set_xlabel("true spend")
        axes.set_ylabel("predicted spend")
        axes.set_title(name)
    figure.tight_layout()
    figure.savefig(path)
    return path


def _report_markdown(
    title: str,
    y_true: np.ndarray,
    table: dict[str, dict[str, float]],
    confusion: dict[str, np.ndarray],
    context: Mapping[str, Any],
    plot_paths: dict[str, Path],
    rule: TierRule,
) -> str:
    lines = [f"# {title}", ""]
    summary = {
        "test users": f"{y_true.size:,}",
        "total true spend": _fmt(float(y_true.sum())),
        "users with zero spend": f"{float(np.mean(y_true == 0)):.1%}",
        **{str(key): str(value) for key, value in context.items()},
    }
    lines += [_markdown_table(["", ""], [[key, value] for key, value in summary.items()]), ""]
    lines += ["## Metrics", ""]
    header = ["model"] + [metrics.METRIC_LABELS[name] for name in metrics.METRIC_NAMES]
    rows = [[name] + [_fmt(values[m]) for m in metrics.METRIC_NAMES] for name, values in table.items()]
    lines += [_markdown_table(header, rows), ""]
    lines += [
        "RMSE and MAE in currency units (lower is better). Gini = 2·mean(cumulative share of "
        "true spend in predicted order) − 1; normalised Gini divides it by the Gini of the "
        "perfect ordering. Top-10% capture: share of true spend held by the top decile of "
        "predictions. Decile MAPE: mean over prediction deciles of |mean predicted − mean true| "
        "/ mean true (deciles with no true spend skipped). Totals: summed predicted and true "
        "spend; total ratio = total predicted / total true (1 = calibrated in aggregate). "
        f"Tiers (the published rule, {rule.mode}): {rule.describe()}; applied separately to "
        "true and to predicted spend. Users with equal predictions share their spend evenly.",
        "",
        "## Tier confusion (rows: true tier, columns: predicted tier)",
        "",
    ]
    for name, matrix in confusion.items():
        lines += [f"**{name}**", ""]
        tier_rows = [[tier] + [str(int(v)) for v in matrix[i]] for i, tier in enumerate(TIERS)]
        lines += [_markdown_table(["true \\ predicted", *TIERS], tier_rows), ""]
    lines += ["## Plots", ""]
    for key, plot in plot_paths.items():
        lines += [f"![{key.replace('_', ' ')}]({plot.name})", ""]
    return "\n".join(lines)


def write_evaluation(
    y_true: npt.ArrayLike,
    predictions: Mapping[str, npt.ArrayLike],
    out_dir: str | Path,
    *,
    title: str = "Spend model evaluation on held-out test users",
    context: Mapping[str, Any] | None = None,
    rule: TierRule | None = None,
) -> EvaluationResult:
    """Compute every metric for each named prediction and write report, JSON and plots.

    ``context`` adds rows to the report's summary (e.g. as_of, horizon, model version).
    ``rule`` is the tier rule of the tier metrics, by default the settings' rule (the one
    the published tiers use). Returns an :class:`EvaluationResult` with the metrics and the
    written paths. Raises ``DataError`` on mismatched or bad predictions and ``ConfigError``
    on an invalid settings rule (before anything is written).
    """
    true, checked = _check_predictions(y_true, predictions)
    rule = metrics.tier_rule(rule)
    table = metrics_table(true, checked, rule)
    confusion = {name: metrics.tier_confusion(true, pred, rule) for name, pred in checked.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    plot_paths = {
        "gain_curve": plot_gain_curve(true, checked, out / PLOT_NAMES["gain_curve"]),
        "decile_calibration": plot_decile_calibration(
            true, checked, out / PLOT_NAMES["decile_calibration"]
        ),
        "pred_vs_true": plot_pred_vs_true(true, checked, out / PLOT_NAMES["pred_vs_true"]),
    }
    metrics_path = out / METRICS_NAME
    payload = {
        "test_users": int(true.size),
        "metrics": table,
        "tier_confusion": {name: matrix.tolist() for name, matrix in confusion.items()},
        "tiers": list(TIERS),
        "tier_rule": asdict(rule),
        "context": dict(context or {}),
    }
    metrics_path.write_text(json.dumps(_json_safe(payload), indent=2) + "\n", encoding="utf-8")
    report_path = out / REPORT_NAME
    report_path.write_text(
        _report_markdown(title, true, table, confusion, context or {}, plot_paths, rule) + "\n",
        encoding="utf-8",
    )
    logger.info("evaluation of %d model(s) on %d users written to %s", len(table), true.size, out)
    for name, values in table.items():
        logger.info(
            "%s: rmse=%.3f normalised_gini=%.3f top10_capture=%.3f",
            name, values["rmse"], values["normalised_gini"], values["top10_capture"],
        )
    return EvaluationResult(table, confusion, out, report_path, metrics_path, plot_paths, rule)
