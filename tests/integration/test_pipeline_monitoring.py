"""The monitoring steps (``spendpred.pipeline.monitoring``): realized performance of matured partitions on a
small hand-made warehouse (SQLite and PostgreSQL; spend computed by hand), drift on hand-staged nights, the
monitor step's guard, and ``spendpred monitor`` on good and bad input. The stage's own functions
(``spendpred.monitoring``) are tested in ``tests/unit/test_monitoring.py``."""

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
from spendpred.pipeline.monitoring import decide_retrain

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
    # earlier history of repeat buyers: BG/NBD x Gamma-Gamma is fitted on it (and on the past window)
    ("u02", "2023-06-05 10:00:00", 120.0, "completed"), ("u02", "2023-09-14 10:00:00", 80.0, "completed"),
    ("u03", "2023-03-01 10:00:00", 60.0, "completed"), ("u03", "2023-05-20 10:00:00", 40.0, "completed"),
    ("u03", "2023-11-02 10:00:00", 90.0, "completed"), ("u04", "2023-08-08 10:00:00", 30.0, "completed"),
    ("u04", "2023-08-09 10:00:00", 35.0, "completed"), ("u06", "2023-02-10 10:00:00", 200.0, "completed"),
    ("u06", "2023-12-24 10:00:00", 150.0, "completed"), ("u09", "2023-10-01 10:00:00", 15.0, "completed"),
    ("u09", "2023-10-01 18:00:00", 5.0, "completed"),  # the same day: one purchase day of 20
    ("u10", "2023-04-04 10:00:00", 25.0, "completed"), ("u10", "2023-07-07 10:00:00", 25.0, "completed"),
    ("u11", "2023-12-30 10:00:00", 70.0, "cancelled"),  # not a purchase
    ("u05", "2023-01-15 10:00:00", 40.0, "completed"), ("u05", "2023-02-15 10:00:00", 45.0, "completed"),
    ("u05", "2023-03-20 10:00:00", 50.0, "completed"), ("u05", "2023-05-01 10:00:00", 42.0, "completed"),
    ("u08", "2022-06-01 10:00:00", 60.0, "completed"), ("u08", "2022-07-01 10:00:00", 30.0, "completed"),
    ("u12", "2022-02-01 10:00:00", 10.0, "completed"), ("u12", "2022-03-01 10:00:00", 12.0, "completed"),
    ("u12", "2022-04-01 10:00:00", 9.0, "completed"), ("u07", "2023-11-20 10:00:00", 22.0, "completed"),
    ("u07", "2023-12-18 10:00:00", 18.0, "completed"), ("u07", "2023-12-28 10:00:00", 25.0, "completed"),
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


def _completed_by(day: dt.date) -> Any:
    """The hand-made completed orders before the end of ``day``, as a frame (the baseline's input, built here)."""
    import pandas as pd

    cutoff = f"{day + dt.timedelta(days=1)} 00:00:00"
    rows = [(u, t, a) for u, t, a, s in ORDERS if s == "completed" and t < cutoff]
    return pd.DataFrame(rows, columns=["user_id", "ordered_at", "amount"])


def test_btyd_baseline_equals_an_independent_fit(hand_made: str) -> None:
    from spendpred import btyd, metrics

    result = pipeline.evaluate_matured(RUN_DATE, hand_made, draws=30)
    assert monitoring.BTYD_SCORER in result["evaluated"][0]
    values = _values(hand_made, MATURE)
    users = list(SCORES)
    actual = np.array([ACTUAL.get(u, 0.0) for u in users])
    # fitted here on the order rows themselves (not the warehouse's per-day sums), as of the same date
    predicted, _ = btyd.btyd_baseline(_completed_by(MATURE), MATURE, H, users)
    assert predicted.sum() > 0 and predicted[users.index("u11")] == 0.0  # no completed purchase: outside the model
    scorer = monitoring.BTYD_SCORER
    assert values[(scorer, "total_predicted")] == pytest.approx(predicted.sum(), rel=1e-6)
    assert values[(scorer, "normalised_gini")] == pytest.approx(metrics.normalised_gini(actual, predicted), rel=1e-6)
    assert values[(scorer, "top10_capture")] == pytest.approx(metrics.top_k_capture(actual, predicted), rel=1e-6)
    assert values[(scorer, "decile_mape")] == pytest.approx(metrics.decile_mape(actual, predicted), rel=1e-6)
    assert values[(scorer, "rmse")] == pytest.approx(float(np.sqrt(np.mean((actual - predicted) ** 2))), rel=1e-6)
    users_top = set(np.asarray(users)[np.argsort(-predicted, kind="stable")[:2]])
    assert values[(scorer, "high_tier_precision")] == pytest.approx(len(users_top & {"u01", "u03"}) / 2)
    # the model's errors, written out
    model = np.array([SCORES[u][0] for u in users])
    assert values[("model", "mae")] == pytest.approx(float(np.mean(np.abs(actual - model))))
    assert values[("model", "rmse")] == pytest.approx(float(np.sqrt(np.mean((actual - model) ** 2))))


def test_btyd_baseline_sees_no_order_after_as_of(hand_made: str) -> None:
    engine = warehouse.get_engine(hand_made)
    try:
        before = monitoring.read_completed_orders(engine, MATURE)
        with engine.begin() as conn:  # a purchase the first second after as_of, by a user without history
            conn.execute(sa.text("INSERT INTO orders (order_id, user_id, ordered_at, amount, items, status) "
                                 "VALUES ('next', 'u11', '2024-02-01 00:00:00', 50, 1, 'completed')"))  # fmt: skip
        after = monitoring.read_completed_orders(engine, MATURE)
    finally:
        engine.dispose()
    assert len(after) == len(before) and "u11" not in set(after["user_id"])
    daily = _completed_by(MATURE).assign(day=lambda f: f["ordered_at"].str[:10]).groupby(["user_id", "day"])["amount"].sum()
    assert len(before) == len(daily) and before["amount"].sum() == pytest.approx(daily.sum())


def test_realized_metrics_are_logged_on_the_versions_training_run(hand_made: str) -> None:
    from spendpred import registry

    client = registry.get_client()
    experiment = registry.ensure_experiment(client)
    run = client.create_run(experiment, run_name="retrain 2024-01-01")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(registry.REGISTERED_MODEL)
    for _ in range(3):  # the partitions were published by version 3
        version = client.create_model_version(registry.REGISTERED_MODEL, run.info.artifact_uri, run_id=run.info.run_id)
    assert str(version.version) == "3"
    result = pipeline.evaluate_matured(RUN_DATE, hand_made, draws=20)
    assert result["evaluated"][0]["mlflow_run_id"] == run.info.run_id
    values = _values(hand_made, MATURE)
    history = client.get_metric_history(run.info.run_id, "realized_model_normalised_gini")
    assert [(m.step, m.value) for m in history] == [((MATURE - dt.date(1970, 1, 1)).days, pytest.approx(values[("model", "normalised_gini")]))]
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged["realized_past_spend_top10_capture"] == pytest.approx(values[("past_spend", "top10_capture")])
    assert logged["realized_bgnbd_gamma_gamma_total_ratio"] == pytest.approx(values[("bgnbd_gamma_gamma", "total_ratio")])
    assert client.get_model_version(registry.REGISTERED_MODEL, "3").tags["realized_last_as_of"] == MATURE.isoformat()


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


def test_a_backfilled_partition_is_evaluated_again(hand_made: str) -> None:
    pipeline.evaluate_matured(RUN_DATE, hand_made, draws=10)
    before = _values(hand_made, MATURE)
    engine = warehouse.get_engine(hand_made)
    try:
        with engine.begin() as conn:  # the partition republished later (a backfill): u12 now predicted 1000
            conn.execute(sa.text("UPDATE user_spend_scores SET scored_at = '2099-01-01 00:00:00' WHERE as_of = :d"),
                         {"d": MATURE.isoformat()})  # fmt: skip
            conn.execute(sa.text("UPDATE user_spend_scores SET predicted_spend = 1000 WHERE as_of = :d AND user_id = 'u12'"),
                         {"d": MATURE.isoformat()})  # fmt: skip
    finally:
        engine.dispose()
    again = pipeline.evaluate_matured(RUN_DATE, hand_made, draws=10)
    assert [e["as_of"] for e in again["evaluated"]] == [MATURE.isoformat()]
    after = _values(hand_made, MATURE)
    assert after[("model", "total_predicted")] == pytest.approx(before[("model", "total_predicted")] + 990.0)
    assert after[("past_spend", "total_predicted")] == before[("past_spend", "total_predicted")]


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


def test_estimate_is_stored_nightly_and_meets_its_realized_value(hand_made: str) -> None:
    from tests.unit.test_monitoring import FEATURES, _population, _world

    train, _ = _population(600, seed=1)
    held_out, held_pred, labels = _world(600, seed=2)
    reference = monitoring.build_reference(train, FEATURES, held_pred, held_out=held_out, labels=labels)
    tonight, _ = _population(len(SCORES), seed=3)
    predicted = np.array([p for p, _ in SCORES.values()])
    night_ref = _stage_night(MATURE, tonight, predicted)
    night = pipeline.check_drift(night_ref, hand_made, reference=reference)
    expected = monitoring.estimate_errors(reference["error_model"], tonight, predicted)
    assert night["estimated"]["rmse"] == pytest.approx(expected["rmse"], abs=1e-4) and night["estimated"]["users"] == 12

    engine = warehouse.get_engine(hand_made)
    try:
        pending = monitoring.read_estimates(engine, RUN_DATE)
        assert [(r["as_of"], r["metric"], r["realized"]) for r in pending] == [
            (MATURE.isoformat(), "mae", None), (MATURE.isoformat(), "rmse", None)]  # labels not in yet
        assert {r["metric"]: r["estimated"] for r in pending} == pytest.approx({"mae": expected["mae"], "rmse": expected["rmse"]})
        again = pipeline.check_drift(night_ref, hand_made, reference=reference)
        assert again["estimated"] == night["estimated"] and len(monitoring.read_estimates(engine, RUN_DATE)) == 2  # rerun: replaced

        pipeline.evaluate_matured(RUN_DATE, hand_made, draws=10)
        rows = {r["metric"]: r for r in monitoring.read_estimates(engine, RUN_DATE)}
    finally:
        engine.dispose()
    actual = np.array([ACTUAL.get(u, 0.0) for u in SCORES])
    realized = float(np.sqrt(np.mean((actual - predicted) ** 2)))
    assert rows["rmse"]["realized"] == pytest.approx(realized)
    assert rows["rmse"]["estimate_error"] == pytest.approx(expected["rmse"] - realized, abs=1e-4)
    assert rows["mae"]["realized"] == pytest.approx(float(np.mean(np.abs(actual - predicted))))
    text = monitoring.format_monitor({"as_of": RUN_DATE.isoformat(), "horizon_days": H, "estimated": list(rows.values())})
    assert "Estimated before labels vs realized" in text and f"{realized:,.2f}" in text


def test_a_reference_without_error_model_skips_the_estimate(hand_made: str) -> None:
    from tests.unit.test_monitoring import FEATURES, _population

    train, held_out = _population(300, seed=1)
    tonight, predicted = _population(300, seed=2)
    result = pipeline.check_drift(_stage_night(RUN_DATE, tonight, predicted), hand_made,
                                  reference=monitoring.build_reference(train, FEATURES, held_out))  # fmt: skip
    assert result["estimated"] is None and result["counts"]["ok"] >= 1


def test_retrain_requests_respect_the_cooldown_and_reruns(hand_made: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_RETRAIN_COOLDOWN_DAYS", "3")
    reasons = ["drift alert on monetary_90d (max PSI 3.00)"]
    assert decide_retrain(RUN_DATE, "3", [], hand_made) == {
        "request": False, "decision": None, "reasons": [], "model_version": "3", "cooldown_until": None}  # no alert: nothing stored
    first = decide_retrain(RUN_DATE, "3", reasons, hand_made)
    assert first["request"] and first["decision"] == "requested" and first["cooldown_until"] == "2024-03-03"
    rerun = decide_retrain(RUN_DATE, "3", reasons, hand_made)  # the same night again: no second event
    assert not rerun["request"] and rerun["decision"] == "requested" and rerun["rerun"]
    days = [RUN_DATE + dt.timedelta(days=k) for k in range(1, 5)]
    decisions = [decide_retrain(day, "3", reasons, hand_made) for day in days]
    assert [d["decision"] for d in decisions] == ["suppressed", "suppressed", "requested", "suppressed"]
    assert [d["request"] for d in decisions] == [False, False, True, False]
    engine = warehouse.get_engine(hand_made)
    try:
        stored = monitoring.read_requests(engine, days[-1])
    finally:
        engine.dispose()
    assert [(r["as_of"], r["decision"]) for r in stored][:3] == [
        ("2024-03-05", "suppressed"), ("2024-03-04", "requested"), ("2024-03-03", "suppressed")]
    assert stored[0]["reasons"] == reasons[0] and stored[0]["cooldown_until"] == "2024-03-06"


def test_monitor_scores_requests_a_retrain_on_a_poor_matured_partition(hand_made: str, isolated_settings: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_MONITOR_GINI_FLOOR", "0.99")  # the hand-made scores rank well, not this well
    run = {"kind": "score", "as_of": RUN_DATE.isoformat(), "root": str(isolated_settings / "staging"), "model_version": "3"}
    result = pipeline.monitor_scores(run, hand_made)
    assert result["retrain"]["request"] and "below the floor 0.99" in result["retrain"]["reasons"][0]
    assert set(result["errors"]) == {"drift"}  # no run folder: drift fails, the decision still stands


def test_page_and_report_show_the_model_health(hand_made: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from spendpred import report, ui

    pipeline.evaluate_matured(RUN_DATE, hand_made, draws=10)
    decide_retrain(IMMATURE, "3", ["drift alert on monetary_90d (max PSI 2.00)"], hand_made)
    data = report.page_data(hand_made)
    health = data["health"]
    assert [p["as_of"] for p in health["realized"]] == [MATURE.isoformat()]
    scorers = health["realized"][0]["scorers"]
    assert set(scorers) == {"model", "past_spend", "bgnbd_gamma_gamma"}
    assert scorers["model"]["total_ratio"][0] == pytest.approx(2760.0 / 1310.5)
    assert health["drift_as_of"] == IMMATURE.isoformat() and health["requests"][0]["decision"] == "requested"
    assert health["last_retrain"] is None and health["notes"] == []  # no registry: nothing created to read it
    page = ui.render_page(data)
    assert 'id="model-health"' in page and 'id="health-plot"' in page and 'data-scorer="bgnbd_gamma_gamma"' in page
    assert f'id="health-request">{IMMATURE.isoformat()}<' in page
    text = report.format_report(data)
    assert "model health:" in text and f"realized, partition {MATURE.isoformat()} (version 3, H={H})" in text
    assert "pred/actual   2.106" in text and "last retrain request: 2024-02-15" in text


def test_model_health_of_a_warehouse_without_monitoring_tables_is_a_note(tmp_path: Path) -> None:
    from spendpred import report
    from spendpred.config import get_settings

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = warehouse.get_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
    finally:
        engine.dispose()
    health = report.model_health(url, get_settings())
    assert health["realized"] == [] and "spendpred db init" in health["notes"][0]


def _with_texts(frame: Any, categories: list[str]) -> Any:
    """``frame`` with a v2-like text per user naming one order of ``categories[i]`` (``""``: no order)."""
    texts = [f"1 completed order totalling {i}.00. orders: {i}.00 {c}." if c else "no completed orders."
             for i, c in enumerate(categories)]  # fmt: skip
    return frame.assign(text=texts)


def test_population_drift_is_stored_logged_and_returned(hand_made: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.unit.test_monitoring import FEATURES, _population

    n = 200
    names = ["books", "toys", "garden", ""]
    train, held_out = _population(n, seed=1)
    # trained on users u0000..u0149 (the staged nights' ids) whose orders name books, toys, garden
    train = _with_texts(train, [names[i % 4] for i in range(n)]).assign(user_id=[f"u{i:04d}" for i in range(n)]).iloc[:150]
    reference = monitoring.build_reference(train, FEATURES, held_out)
    first, predicted = _population(n, seed=2)
    first = _with_texts(first, [names[i % 4] for i in range(n)])
    done = pipeline.check_drift(_stage_night(RUN_DATE, first, predicted), hand_made, reference=reference)
    assert set(done["population"]["values"]) == {monitoring.UNSEEN_USERS, monitoring.UNSEEN_CATEGORIES}  # no earlier night
    assert done["population"]["values"][monitoring.UNSEEN_USERS]["value"] == pytest.approx(50 / n)
    assert done["population"]["values"][monitoring.UNSEEN_CATEGORIES]["value"] == 0.0 and done["population"]["alert"] == []

    # the next night: "toys" renamed "games" (50 of 150 categorised orders), so those 50 users' texts changed
    night = RUN_DATE + dt.timedelta(days=1)
    renamed = _with_texts(first, [("games" if names[i % 4] == "toys" else names[i % 4]) for i in range(n)])
    with caplog.at_level("INFO", logger="spendpred.pipeline.monitoring"):
        result = pipeline.check_drift(_stage_night(night, renamed, predicted), hand_made, reference=reference)
    values = result["population"]["values"]
    assert values[monitoring.TEXT_CHANGED] == {"value": 0.25, "status": "ok", "users": n}
    assert values[monitoring.UNSEEN_CATEGORIES] == {"value": pytest.approx(round(50 / 150, 4)), "status": "alert", "orders": 150,
                                                    "categories": ["games"]}  # fmt: skip
    assert result["population"]["alert"] == [monitoring.UNSEEN_CATEGORIES] and result["counts"]["ok"] == len(FEATURES) + 1
    alerts = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(alerts) == 1 and alerts[0].startswith("drift alert on _unseen_categories") and "(games)" in alerts[0]
    reasons = monitoring.alert_reasons(result, [], 0.0)
    assert reasons == [f"drift alert on _unseen_categories: {round(50 / 150, 4)} (games)"]
    assert decide_retrain(night, result["model_version"], reasons, hand_made)["decision"] == "requested"

    engine = warehouse.get_engine(hand_made)
    try:
        stored = {r["feature"]: r for r in monitoring.read_drift(engine, night)}
        assert [r["feature"] for r in monitoring.read_drift(engine, night)][-3:] == sorted(monitoring.POPULATION_FEATURES)
        with engine.connect() as conn:
            view = dict(conn.execute(sa.text("SELECT feature, status FROM user_spend_drift WHERE as_of = :d AND psi IS NULL"),
                                     {"d": night.isoformat()}).all())  # fmt: skip
    finally:
        engine.dispose()
    assert stored[monitoring.TEXT_CHANGED]["statistic"] == 0.25 and stored[monitoring.TEXT_CHANGED]["psi"] is None
    assert stored[monitoring.UNSEEN_USERS]["statistic"] == pytest.approx(0.25) and stored[monitoring.UNSEEN_USERS]["status"] == "ok"
    assert view == {monitoring.TEXT_CHANGED: "ok", monitoring.UNSEEN_USERS: "ok", monitoring.UNSEEN_CATEGORIES: "alert"}
    printed = monitoring.format_monitor({"as_of": night.isoformat(), "horizon_days": H, "drift": list(stored.values())})
    assert any(line.startswith("_unseen_categories") and line.split()[1:] == ["n/a", "0.333", "alert"] for line in printed.splitlines())

    # a reference of an older bundle (no user hashes, no categories): those rows skipped with one info line
    older = {k: v for k, v in reference.items() if k not in ("user_hashes", "categories")}
    caplog.clear()
    with caplog.at_level("INFO", logger="spendpred.pipeline.monitoring"):
        again = pipeline.check_drift(_stage_night(night + dt.timedelta(days=1), renamed, predicted), hand_made, reference=older)
    assert list(again["population"]["values"]) == [monitoring.TEXT_CHANGED] and again["population"]["alert"] == []
    assert sum("saved before population drift" in r.getMessage() for r in caplog.records) == 1


def test_bad_population_thresholds_are_one_line_and_exit_2(hand_made: str) -> None:
    inverted = _cli(["monitor", "--url", hand_made], env={"SPENDPRED_DRIFT_UNSEEN_USERS_ALERT": "0.3"})
    assert inverted.returncode == 2 and len(inverted.stderr.strip().splitlines()) == 1
    assert "SPENDPRED_DRIFT_UNSEEN_USERS_WARN=0.5" in inverted.stderr
    out_of_range = _cli(["monitor", "--url", hand_made], env={"SPENDPRED_DRIFT_TEXT_CHANGED_WARN": "2"})
    assert out_of_range.returncode == 2 and "SPENDPRED_DRIFT_TEXT_CHANGED_WARN=2 is out of range" in out_of_range.stderr
