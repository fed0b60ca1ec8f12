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
    asked = monitoring.format_monitor({**data, "requests": [{"as_of": "2024-03-01", "decision": "requested",
                                                             "reasons": "drift alert on monetary_90d", "cooldown_until": "2024-03-07"}]})  # fmt: skip
    assert "Retrain requested by the monitoring of 2024-03-01: drift alert on monetary_90d (cool-down until 2024-03-07)" in asked


def _world(n: int, seed: int, level: float = 1.0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Users whose spend is noisier the more they spent before: (features, predictions, labels).
    ``level`` scales past and future spend alike (a population that shifted towards big spenders)."""
    frame, _ = _population(n, seed)
    rng = np.random.default_rng(seed + 100)
    frame["monetary_90d"] = frame["monetary_90d"] * level
    predictions = frame["monetary_90d"].to_numpy() * 0.9 + 2.0
    labels = np.clip(predictions + rng.normal(0.0, 1.0, n) * (5.0 + 0.6 * predictions), 0.0, None)
    return frame, predictions, labels


def test_error_trees_predict_as_scikit_learn_without_it() -> None:
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(400, 3)) * [1.0, 10.0, 0.1]
    target = np.abs(inputs[:, 0]) * 3 + (inputs[:, 1] > 2) * 5 + rng.random(400)
    tree = DecisionTreeRegressor(max_depth=4, min_samples_leaf=10).fit(inputs, target)
    exported = json.loads(json.dumps(monitoring._tree_json(tree)))  # through JSON, as reference.json keeps it
    fresh = rng.normal(size=(300, 3)) * [1.0, 10.0, 0.1]
    assert np.array_equal(monitoring.tree_predict(exported, fresh), tree.predict(fresh))
    # a value on a threshold goes left, as in scikit-learn (float32 comparison)
    on_edge = np.tile(fresh[:1], (1, 1))
    on_edge[0, exported["feature"][0]] = exported["threshold"][0]
    assert monitoring.tree_predict(exported, on_edge) == pytest.approx(tree.predict(on_edge))


def test_estimated_errors_follow_the_population_and_match_realized_ones() -> None:
    held_out, predicted, labels = _world(2000, seed=1)
    model = monitoring.fit_error_model(held_out, FEATURES, predicted, labels, seed=0)
    assert model["held_out_users"] == 2000 and len(json.dumps(model)) < 20_000
    assert model["held_out_rmse"] == pytest.approx(metrics.rmse(labels, predicted))

    same, same_pred, same_labels = _world(3000, seed=2)  # the same world, other users
    estimate = monitoring.estimate_errors(model, same, same_pred)
    assert estimate["users"] == 3000
    assert estimate["rmse"] == pytest.approx(metrics.rmse(same_labels, same_pred), rel=0.1)
    assert estimate["mae"] == pytest.approx(metrics.mae(same_labels, same_pred), rel=0.1)

    bigger, big_pred, big_labels = _world(3000, seed=3, level=1.8)  # bigger spenders: bigger errors, no label needed
    shifted = monitoring.estimate_errors(model, bigger, big_pred)
    realized = metrics.rmse(big_labels, big_pred)
    assert shifted["rmse"] > 1.3 * estimate["rmse"]
    # closer to the realized RMSE than the held-out figure a team would otherwise quote
    assert abs(shifted["rmse"] - realized) < abs(model["held_out_rmse"] - realized)


def test_reference_keeps_the_error_model_and_estimates_refuse_bad_input(tmp_path: Path) -> None:
    train, _ = _population(500, seed=4)
    held_out, predicted, labels = _world(300, seed=5)
    reference = monitoring.build_reference(train, FEATURES, predicted, held_out=held_out, labels=labels)
    path = monitoring.write_reference(tmp_path / "reference.json", reference)
    model = monitoring.read_reference(path)["error_model"]
    assert model["columns"] == list(FEATURES) and model["min_leaf_users"] == 15
    assert "error_model" not in monitoring.build_reference(train, FEATURES, predicted)  # no labels, no error model
    with pytest.raises(DataError, match="lacks the error model's column"):
        monitoring.estimate_errors(model, held_out.drop(columns=["tenure_days"]), predicted)
    with pytest.raises(DataError, match="one prediction per user"):
        monitoring.estimate_errors(model, held_out, predicted[:10])
    with pytest.raises(ModelError, match="retrain"):
        monitoring.estimate_errors({"format": 99}, held_out, predicted)


def test_alert_reasons_only_alerts_and_poor_rankings() -> None:
    assert monitoring.alert_reasons({"alert": [], "warn": ["monetary_90d"], "max_psi": 0.2}, [], 0.0) == []  # a warning only reports
    drift = monitoring.alert_reasons({"alert": ["monetary_90d", "tenure_days", "predicted_spend"], "max_psi": 3.21}, [], 0.0)
    assert drift == ["drift alert on monetary_90d, predicted_spend"]
    # durations up to as_of grow with the date: alone they are reported, never acted on
    assert monitoring.alert_reasons({"alert": ["tenure_days", "recency_days", "first_purchase_days"]}, [], 0.0) == []
    good = {"as_of": "2024-01-31", "model_version": "3", "model": {"normalised_gini": 0.6},
            "past_spend": {"normalised_gini": 0.4}, "bgnbd_gamma_gamma": {"normalised_gini": 0.5}}  # fmt: skip
    assert monitoring.alert_reasons(None, [good], 0.0) == []
    poor = {**good, "model": {"normalised_gini": 0.45}}
    assert monitoring.alert_reasons(None, [poor], 0.0) == [
        "partition 2024-01-31 (version 3): realized normalised Gini 0.450 below bgnbd_gamma_gamma's 0.500"]
    assert monitoring.alert_reasons(None, [good], 0.7)[0].endswith("realized normalised Gini 0.600 below the floor 0.7")
    assert monitoring.alert_reasons(None, [{**good, "model": {"normalised_gini": None}}], 0.7) == []  # undefined: no verdict


def test_cooldown_and_trigger_tags() -> None:
    day = pd.Timestamp("2024-03-01").date()
    assert monitoring.cooldown_until(None, 7) is None
    assert monitoring.cooldown_until(day, 7) == pd.Timestamp("2024-03-07").date()  # the next request on day 7 after
    assert monitoring.cooldown_until(day, 0) == day == monitoring.cooldown_until(day, 1)  # at most one a night
    assert monitoring.retrain_trigger("scheduled") == {"trigger": "schedule", "trigger_reason": "scheduled run of the weekly cron"}
    assert monitoring.retrain_trigger("manual")["trigger"] == "manual"
    assert monitoring.retrain_trigger(None) == {"trigger": "manual", "trigger_reason": "spendpred train (command line)"}
    asset = monitoring.retrain_trigger("asset_triggered", [{"as_of": "2024-03-01", "reasons": ["drift alert on monetary_90d"]}])
    assert asset == {"trigger": "asset", "trigger_reason": "monitoring of 2024-03-01: drift alert on monetary_90d"}
    assert set(monitoring.TRIGGERS) == {"schedule", "asset", "manual"}


def _texts(orders: list[list[tuple[float, str]]]) -> list[str]:
    """Texts as template v2 renders orders (``orders: <amount> <category>; ...``), after a fixed sentence."""
    return [("2 completed orders totalling 10.00. orders: " + "; ".join(f"{a:.2f} {c}" for a, c in items) + ".")
            if items else "no completed orders." for items in orders]  # fmt: skip


def test_text_categories_read_the_orders_of_a_rendered_text() -> None:
    texts = _texts([[(12.5, "books"), (3.0, "garden tools")], [(7.0, "books")], []])
    assert monitoring.text_categories(texts) == {"books": 2, "garden tools": 1}
    assert monitoring.text_categories([float("nan"), "orders: 12.00 (cancelled)."]) == {}  # no text, an order without category


def test_population_rows_on_hand_made_frames(tmp_path: Path) -> None:
    train = pd.DataFrame({"user_id": ["a", "b", "c", "d"],
                          "text": _texts([[(10.0, "books")], [(5.0, "toys")], [(1.0, "books")], []]),
                          "monetary_90d": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    reference = monitoring.build_reference(train, ["monetary_90d"], [1.0, 2.0])
    assert reference["categories"] == ["books", "toys"] and reference["user_hashes"].dtype == np.uint64
    assert reference["user_hashes"].tolist() == sorted(reference["user_hashes"].tolist()) and reference["user_hashes"].size == 4

    previous = pd.DataFrame({"user_id": ["a", "b", "c", "x"], "text": ["t1", "t2", "t3", "t4"]})
    # tonight: a unchanged, b and c changed, e and f new; toys renamed "games" on 2 of 5 categorised orders
    tonight = pd.DataFrame({"user_id": ["a", "b", "c", "e", "f"],
                            "text": ["t1", *_texts([[(5.0, "games")], [(1.0, "books"), (2.0, "books")], [(3.0, "games")]]),
                                     "no completed orders."],
                            "monetary_90d": [1.0, 2.0, 3.0, 4.0, 5.0]})  # fmt: skip
    assert monitoring.text_changed_share(tonight, previous) == {"value": pytest.approx(2 / 3), "users": 3}
    assert monitoring.unseen_user_share(tonight["user_id"], reference["user_hashes"]) == {
        "value": pytest.approx(2 / 5), "users": 5, "unseen": 2}
    assert monitoring.unseen_categories(tonight["text"], reference["categories"]) == {
        "value": pytest.approx(2 / 4), "orders": 4, "categories": ["games"]}

    thresholds = {monitoring.TEXT_CHANGED: (0.5, float("inf")), monitoring.UNSEEN_USERS: (0.5, 0.8),
                  monitoring.UNSEEN_CATEGORIES: (0.01, 0.05)}  # fmt: skip
    rows = {r["feature"]: r for r in monitoring.population_table(reference, tonight, previous, thresholds)}
    assert [(n, rows[n]["status"]) for n in monitoring.POPULATION_FEATURES] == [
        (monitoring.TEXT_CHANGED, "warn"), (monitoring.UNSEEN_USERS, "ok"), (monitoring.UNSEEN_CATEGORIES, "alert")]
    assert rows[monitoring.UNSEEN_USERS]["statistic"] == pytest.approx(0.4) and rows[monitoring.UNSEEN_USERS]["psi"] is None
    summary = monitoring.population_summary(list(rows.values()))
    assert summary["alert"] == [monitoring.UNSEEN_CATEGORIES] and summary["warn"] == [monitoring.TEXT_CHANGED]
    assert summary["values"][monitoring.UNSEEN_CATEGORIES] == {"value": 0.5, "status": "alert", "orders": 4, "categories": ["games"]}

    # only the unseen categories request a retrain; a text-changed share or unseen users never do
    reasons = monitoring.alert_reasons({"alert": [], "population": summary}, [], 0.0)
    assert reasons == ["drift alert on _unseen_categories: 0.5 (games)"]
    report_only = {"alert": [monitoring.UNSEEN_USERS, monitoring.TEXT_CHANGED], "values": {}}
    assert monitoring.alert_reasons({"alert": [], "population": report_only}, [], 0.0) == []

    # the first night (no previous snapshot) and an older bundle's reference (no users, no categories) leave rows out
    older = {key: value for key, value in reference.items() if key not in ("user_hashes", "categories")}
    assert monitoring.population_table(older, tonight, None, thresholds) == []
    assert [r["feature"] for r in monitoring.population_table(older, tonight, previous, thresholds)] == [monitoring.TEXT_CHANGED]

    # written: the hashes beside reference.json (which stays small), read back the same
    path = monitoring.write_reference(tmp_path / "reference.json", reference)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert "user_hashes" not in stored and stored["users"]["count"] == 4 and (tmp_path / monitoring.USERS_FILE).is_file()
    back = monitoring.read_reference(path)
    assert back["user_hashes"].tolist() == reference["user_hashes"].tolist() and back["categories"] == ["books", "toys"]
    (tmp_path / monitoring.USERS_FILE).write_bytes(b"not numpy")
    with pytest.raises(ModelError, match="retrain"):
        monitoring.read_reference(path)


def test_population_settings_refuse_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from spendpred.config import get_settings

    settings = get_settings()
    assert (settings.drift_text_changed_warn, settings.drift_unseen_users_warn, settings.drift_unseen_users_alert,
            settings.drift_unseen_categories_warn, settings.drift_unseen_categories_alert) == (0.5, 0.5, 0.8, 0.01, 0.05)  # fmt: skip
    monkeypatch.setenv("SPENDPRED_DRIFT_UNSEEN_CATEGORIES_ALERT", "0.005")
    with pytest.raises(ValidationError, match="SPENDPRED_DRIFT_UNSEEN_CATEGORIES_WARN=0.01"):
        get_settings()
    monkeypatch.delenv("SPENDPRED_DRIFT_UNSEEN_CATEGORIES_ALERT")
    monkeypatch.setenv("SPENDPRED_DRIFT_TEXT_CHANGED_WARN", "1.5")
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        get_settings()


def _ratio_row(as_of: str, value: float | None, version: str = "3", horizon: int = 30, scorer: str = "model") -> dict[str, object]:
    return {"as_of": as_of, "model_version": version, "scorer": scorer, "metric": "total_ratio", "value": value,
            "ci_low": None, "ci_high": None, "evaluated_at": "2020-03-01 00:00:00", "horizon_days": horizon}


def test_level_factor_is_one_without_a_matured_partition_of_the_version() -> None:
    import datetime as dt

    night = dt.date(2020, 2, 15)
    # another version's, the baseline's, another horizon's, an empty ratio and a partition that
    # matured only tonight (as_of + 30 = the night: evaluated after tonight's scoring) do not count
    rows = [_ratio_row("2020-01-01", 2.0, version="2"), _ratio_row("2020-01-01", 2.0, scorer="past_spend"),
            _ratio_row("2020-01-01", 2.0, horizon=60), _ratio_row("2020-01-02", None), _ratio_row("2020-01-16", 2.0)]
    level = monitoring.level_factor(rows, [], night, "3", 30)
    assert level == {"factor": 1.0, "unclipped_factor": None, "clipped": False, "based_on_as_of": None, "ratios": {}}
    assert monitoring.level_factor([], [], night, "3", 30)["factor"] == 1.0


def test_level_factor_divides_by_the_latest_raw_ratio_and_clips() -> None:
    import datetime as dt

    night = dt.date(2020, 2, 15)
    rows = [_ratio_row("2020-01-01", 2.0), _ratio_row("2020-01-10", 0.8), _ratio_row("2020-01-10", 9.0, version="2")]
    level = monitoring.level_factor(rows, [], night, "3", 30)
    assert level["factor"] == pytest.approx(1.25) and level["based_on_as_of"] == "2020-01-10" and not level["clipped"]
    # the partition's own correction (0.5, same version) is divided out: its uncorrected ratio was 1.6
    applied = [{"as_of": "2020-01-10", "model_version": "3", "factor": 0.5}, {"as_of": "2020-01-01", "model_version": "2", "factor": 4.0}]
    assert monitoring.level_factor(rows, applied, night, "3", 30)["factor"] == pytest.approx(0.625)
    # the geometric mean of the latest two: 1 / sqrt(2.0 * 0.8)
    assert monitoring.level_factor(rows, [], night, "3", 30, partitions=2)["factor"] == pytest.approx(1 / np.sqrt(1.6))
    far = monitoring.level_factor([_ratio_row("2020-01-10", 10.0)], [], night, "3", 30)
    assert far["factor"] == 0.25 and far["unclipped_factor"] == pytest.approx(0.1) and far["clipped"]
    low = monitoring.level_factor([_ratio_row("2020-01-10", 0.1)], [], night, "3", 30)
    assert low["factor"] == 4.0 and low["clipped"]


def test_level_correction_setting_is_a_bool(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from spendpred.config import get_settings

    assert get_settings().level_correction is False and get_settings().level_correction_partitions == 1
    monkeypatch.setenv("SPENDPRED_LEVEL_CORRECTION", "true")
    assert get_settings().level_correction is True
    monkeypatch.setenv("SPENDPRED_LEVEL_CORRECTION", "sometimes")
    with pytest.raises(ValidationError, match="level_correction"):
        get_settings()
