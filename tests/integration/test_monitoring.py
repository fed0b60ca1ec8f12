"""Realized performance of matured partitions on a small hand-made warehouse (SQLite and PostgreSQL;
spend computed by hand), drift on hand-staged nights, the monitor step's guard, and ``spendpred monitor`` on good and bad input."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.stats import spearmanr

from spendpred import monitoring, pipeline, warehouse

H = 30
MATURE = dt.date(2024, 1, 31)  # labels in (Jan 31, Mar 1]: mature at run date Mar 1
IMMATURE = dt.date(2024, 2, 15)  # labels end Mar 16
RUN_DATE = dt.date(2024, 3, 1)
SPENDPRED = str(Path(sys.executable).with_name("spendpred"))

# user: (published predicted spend, published tier)
SCORES = {
    "u01": (900.0, "high"), "u02": (500.0, "high"), "u03": (400.0, "medium"), "u04": (300.0, "medium"),
    "u05": (200.0, "medium"), "u06": (150.0, "medium"), "u07": (100.0, "low"), "u08": (80.0, "low"),
    "u09": (60.0, "low"), "u10": (40.0, "low"), "u11": (20.0, "low"), "u12": (10.0, "low"),
}  # fmt: skip
# completed orders: (user, ordered_at, amount, status)
ORDERS = [
    # before the past window (ends up in neither figure)
    ("u01", "2023-12-01 10:00:00", 999.0, "completed"),
    ("u01", "2024-01-01 23:59:59", 100.0, "completed"),  # the last second before the past window
    # the past window [Jan 2 00:00, Feb 1 00:00), the H days up to the end of as_of: the past-spend baseline
    ("u01", "2024-01-02 00:00:00", 100.0, "completed"),
    ("u02", "2024-01-20 12:00:00", 300.0, "completed"),
    ("u05", "2024-01-31 23:59:59", 50.0, "completed"),
    ("u07", "2024-01-10 08:00:00", 20.0, "completed"),
    # the label window [Feb 1 00:00, Mar 2 00:00): actual spend
    ("u01", "2024-02-01 00:00:00", 700.0, "completed"),
    ("u02", "2024-02-10 09:00:00", 50.0, "completed"),
    ("u03", "2024-02-11 09:00:00", 400.0, "completed"),
    ("u03", "2024-02-12 09:00:00", 25.5, "completed"),
    ("u04", "2024-02-20 09:00:00", 100.0, "cancelled"),  # not spend
    ("u06", "2024-02-25 09:00:00", 10.0, "completed"),
    ("u08", "2024-03-01 23:59:59", 120.0, "completed"),  # the last second of the window
    ("u12", "2024-02-14 09:00:00", 5.0, "completed"),
]  # fmt: skip
ACTUAL = {"u01": 700.0, "u02": 50.0, "u03": 425.5, "u06": 10.0, "u08": 120.0, "u12": 5.0}
PAST = {"u01": 100.0, "u02": 300.0, "u05": 50.0, "u07": 20.0}


@pytest.fixture
def hand_made(warehouse_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", str(H))
    pipeline.init_warehouse(warehouse_url)
    engine = warehouse.get_engine(warehouse_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (user_id, signup_at) VALUES (:u, '2023-01-01 00:00:00')"),
                         [{"u": u} for u in SCORES])  # fmt: skip
            conn.execute(
                sa.text("INSERT INTO orders (order_id, user_id, ordered_at, amount, items, status) VALUES (:o, :u, :t, :a, 1, :s)"),
                [{"o": f"o{i}", "u": u, "t": t, "a": a, "s": s} for i, (u, t, a, s) in enumerate(ORDERS)],
            )
            for as_of in (MATURE, IMMATURE):
                conn.execute(
                    sa.text("INSERT INTO user_spend_scores VALUES (:d, :u, :p, :t, 'spendpred-regressor', '3', '2024-02-01 02:00:00')"),
                    [{"d": as_of.isoformat(), "u": u, "p": p, "t": t} for u, (p, t) in SCORES.items()],
                )
    finally:
        engine.dispose()
    return warehouse_url


def _stored(url: str) -> list[tuple]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM partition_metrics ORDER BY as_of, scorer, metric"))]
    finally:
        engine.dispose()


def _values(url: str, as_of: dt.date) -> dict[tuple[str, str], float | None]:
    return {(r[2], r[3]): r[4] for r in _stored(url) if str(r[0]) == as_of.isoformat()}


def _gini(actual: np.ndarray, order_by: np.ndarray) -> float:
    """Gini of an ordering without ties, written out: 2 * mean cumulative share - 1."""
    ranked = actual[np.argsort(-order_by, kind="stable")]
    return 2.0 * float(np.mean(np.cumsum(ranked) / ranked.sum())) - 1.0


def test_realized_metrics_equal_a_hand_computation(hand_made: str) -> None:
    result = pipeline.evaluate_matured(RUN_DATE, hand_made, draws=50)
    assert [e["as_of"] for e in result["evaluated"]] == [MATURE.isoformat()]  # the immature partition is not evaluated
    values = _values(hand_made, MATURE)
    assert not _values(hand_made, IMMATURE)

    users = list(SCORES)
    actual = np.array([ACTUAL.get(u, 0.0) for u in users])
    predicted = np.array([SCORES[u][0] for u in users])
    past = np.array([PAST.get(u, 0.0) for u in users])
    assert values[("model", "total_actual")] == pytest.approx(1310.5)
    assert values[("model", "total_predicted")] == pytest.approx(2760.0)
    assert values[("model", "total_ratio")] == pytest.approx(2760.0 / 1310.5)
    assert values[("past_spend", "total_predicted")] == pytest.approx(470.0)
    assert values[("model", "users")] == 12
    perfect = _gini(actual, actual)
    assert values[("model", "normalised_gini")] == pytest.approx(_gini(actual, predicted) / perfect)
    # top 10% of 12 users = 2 users: u01 and u02 by the model (700 + 50), u02 and u01 by past spend
    assert values[("model", "top10_capture")] == pytest.approx(750.0 / 1310.5)
    assert values[("past_spend", "top10_capture")] == pytest.approx(750.0 / 1310.5)
    # actual top 10% (2 users): u01 (700) and u03 (425.5); published high: u01, u02
    assert values[("model", "high_tier_precision")] == pytest.approx(0.5)
    assert values[("model", "high_tier_recall")] == pytest.approx(0.5)
    assert values[("model", "spearman")] == pytest.approx(float(spearmanr(actual, predicted).statistic))
    assert values[("past_spend", "normalised_gini")] is not None
    for scorer in ("model", "past_spend"):
        for metric in monitoring.REALIZED_METRICS:
            row = next(r for r in _stored(hand_made) if (r[2], r[3]) == (scorer, metric))
            if row[5] is not None:  # an interval holds its point more often than not on this data; it is ordered
                assert row[5] <= row[6]
    assert values[("past_spend", "spearman")] == pytest.approx(float(spearmanr(actual, past).statistic))
    assert not math.isnan(values[("past_spend", "decile_mape")])


def test_rerun_changes_nothing_and_later_orders_do_not_leak(hand_made: str) -> None:
    pipeline.evaluate_matured(RUN_DATE, hand_made, draws=20)
    first = _stored(hand_made)
    again = pipeline.evaluate_matured(RUN_DATE, hand_made, draws=20)
    assert again["evaluated"] == [] and _stored(hand_made) == first  # evaluated_at included

    engine = warehouse.get_engine(hand_made)
    try:
        with engine.begin() as conn:  # an order one second after the window, and a big one later on
            conn.execute(sa.text("INSERT INTO orders (order_id, user_id, ordered_at, amount, items, status) VALUES "
                                 "('late1', 'u12', '2024-03-02 00:00:00', 5000, 1, 'completed'), "
                                 "('late2', 'u11', '2024-03-05 00:00:00', 800, 1, 'completed')"))  # fmt: skip
            conn.execute(sa.text("DELETE FROM partition_metrics"))
    finally:
        engine.dispose()
    pipeline.evaluate_matured(RUN_DATE, hand_made, draws=20)
    assert [r[:7] for r in _stored(hand_made)] == [r[:7] for r in first]


def test_immature_partition_waits_for_its_horizon(hand_made: str) -> None:
    assert pipeline.evaluate_matured(IMMATURE + dt.timedelta(days=H - 1), hand_made, draws=10)["evaluated"][0]["as_of"] == MATURE.isoformat()
    assert not _values(hand_made, IMMATURE)
    later = pipeline.evaluate_matured(IMMATURE + dt.timedelta(days=H), hand_made, draws=10)
    assert [e["as_of"] for e in later["evaluated"]] == [IMMATURE.isoformat()]


def test_monitor_scores_never_fails_the_night(hand_made: str, isolated_settings: Path) -> None:
    run = {"kind": "score", "as_of": RUN_DATE.isoformat(), "root": str(isolated_settings / "staging")}
    result = pipeline.monitor_scores(run, hand_made)  # no run folder staged: drift fails, realized still runs
    assert [e["as_of"] for e in result["realized"]["evaluated"]] == [MATURE.isoformat()]
    assert set(result["errors"]) == {"drift"} and "\n" not in result["errors"]["drift"]


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([SPENDPRED, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120, check=False)


def test_monitor_command_prints_and_refuses_bad_input(hand_made: str) -> None:
    done = _cli(["monitor", "--as-of", RUN_DATE.isoformat(), "--url", hand_made])
    assert done.returncode == 0, done.stderr
    assert "Realized performance of 2024-01-31" in done.stdout and "Normalised Gini" in done.stdout
    assert "Drift: none computed" in done.stdout

    bad_date = _cli(["monitor", "--as-of", "2024-13-01", "--url", hand_made])
    assert bad_date.returncode == 2 and bad_date.stderr.count("error:") == 1 and "as_of" in bad_date.stderr
    bad_threshold = _cli(["monitor", "--url", hand_made], env={"SPENDPRED_DRIFT_PSI_ALERT": "0.05"})
    assert bad_threshold.returncode == 2
    assert "SPENDPRED_DRIFT_PSI_ALERT" in bad_threshold.stderr and len(bad_threshold.stderr.strip().splitlines()) == 1
    out_of_range = _cli(["monitor", "--url", hand_made], env={"SPENDPRED_DRIFT_PSI_WARN": "-1"})
    assert out_of_range.returncode == 2 and "SPENDPRED_DRIFT_PSI_WARN=-1 is out of range" in out_of_range.stderr


def _stage_night(day: dt.date, frame: Any, predicted: np.ndarray) -> dict[str, str]:
    """A scoring run folder as the nightly leaves it: a validated snapshot, tiers.parquet and tiers.json."""
    import pandas as pd

    from spendpred.files import sha256_file, write_json_atomic
    from spendpred.snapshot import Manifest, RunFolder

    run = RunFolder.for_date("score", day)
    run.snapshot_dir.mkdir(parents=True)
    users = [f"u{i:04d}" for i in range(len(frame))]
    frame.assign(user_id=users).to_parquet(run.snapshot.parquet, index=False)
    Manifest(day, H, False, len(frame), "v2", list(frame.columns), {}, None, "x", "now", source_checks={}).write(run.snapshot_dir)
    write_json_atomic(run.snapshot.validation_json, {"success": True, "checksum": sha256_file(run.snapshot.parquet)})
    pd.DataFrame({"user_id": users, "predicted_spend": predicted, "tier": "low"}).to_parquet(run.tiers_parquet, index=False)
    write_json_atomic(run.tiers_json, {**run.ref(), "model_version": "3"})
    return run.ref()


def test_drift_is_stored_per_feature_and_alerts_on_a_shift(hand_made: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.unit.test_monitoring import FEATURES, _population

    train, held_out = _population(1500, seed=1)
    reference = monitoring.build_reference(train, FEATURES, held_out)
    calm_frame, calm_pred = _population(1500, seed=2)
    calm = pipeline.check_drift(_stage_night(RUN_DATE, calm_frame, calm_pred), hand_made, reference=reference)
    assert calm["alert"] == [] and calm["counts"]["ok"] == len(FEATURES) + 1

    shifted = calm_frame.assign(monetary_90d=calm_frame["monetary_90d"] * 100)
    night = RUN_DATE + dt.timedelta(days=1)
    with caplog.at_level("WARNING", logger="spendpred.pipeline.monitoring"):
        result = pipeline.check_drift(_stage_night(night, shifted, calm_pred * 100), hand_made, reference=reference)
    assert set(result["alert"]) == {"monetary_90d", "predicted_spend"}
    assert sum("drift alert on" in r.getMessage() for r in caplog.records) == 2
    engine = warehouse.get_engine(hand_made)
    try:
        assert [r["feature"] for r in monitoring.read_drift(engine, night)][:2] in (
            ["monetary_90d", "predicted_spend"], ["predicted_spend", "monetary_90d"])
        assert len(monitoring.read_drift(engine, RUN_DATE)) == len(FEATURES) + 1
        again = pipeline.check_drift(_stage_night(night + dt.timedelta(days=1), shifted, calm_pred * 100), hand_made, reference=reference)
        assert again["alert"] == result["alert"]
    finally:
        engine.dispose()
    # spendpred monitor prints the night's stored drift (no registry here: its recompute is skipped, the rows stay)
    done = _cli(["monitor", "--as-of", night.isoformat(), "--url", hand_made])
    assert done.returncode == 0 and "monetary_90d" in done.stdout and "alert" in done.stdout, done.stderr
