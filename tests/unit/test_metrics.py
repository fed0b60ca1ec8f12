"""Metrics on small hand-computed examples (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from spendpred import metrics, tiers
from spendpred.errors import ConfigError, DataError
from spendpred.tiers import TIERS, TierRule

# The running example: five users, total true spend 100.
Y_TRUE = np.array([0.0, 10.0, 0.0, 30.0, 60.0])
Y_PRED = np.array([1.0, 2.0, 3.0, 5.0, 4.0])


def test_rmse_and_mae_by_hand() -> None:
    # pred - true = [1, -8, 3, -25, -56]
    # squares 1 + 64 + 9 + 625 + 3136 = 3835; 3835 / 5 = 767; sqrt(767) = 27.6947...
    assert metrics.rmse(Y_TRUE, Y_PRED) == pytest.approx(math.sqrt(767.0))
    # |errors| 1 + 8 + 3 + 25 + 56 = 93; 93 / 5 = 18.6
    assert metrics.mae(Y_TRUE, Y_PRED) == pytest.approx(18.6)


def test_spearman_by_hand() -> None:
    # ranks true [1.5, 3, 1.5, 4, 5], ranks pred [1, 2, 3, 5, 4], both mean 3
    # deviations true [-1.5, 0, -1.5, 1, 2], pred [-2, -1, 0, 2, 1]
    # sum of products 3 + 0 + 0 + 2 + 2 = 7; sums of squares 9.5 and 10
    # rho = 7 / sqrt(95) = 0.71818...
    assert metrics.spearman(Y_TRUE, Y_PRED) == pytest.approx(7.0 / math.sqrt(95.0))
    assert metrics.spearman(Y_TRUE, Y_TRUE) == pytest.approx(1.0)
    assert metrics.spearman(Y_TRUE, -Y_TRUE) == pytest.approx(-1.0)


def test_spearman_constant_side_is_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SciPy's ConstantInputWarning would fail here
        assert math.isnan(metrics.spearman(Y_TRUE, np.ones(5)))
        assert math.isnan(metrics.spearman(np.zeros(5), Y_PRED))
        assert math.isnan(metrics.spearman([3.0], [4.0]))  # one user: no correlation


def test_spearman_with_ties_in_both_sides() -> None:
    # ranks true [1.5, 1.5, 3, 4], pred [1, 2.5, 2.5, 4]; deviations from 2.5:
    # true [-1, -1, 0.5, 1.5], pred [-1.5, 0, 0, 1.5] -> products 1.5 + 0 + 0 + 2.25 = 3.75
    # squares 1 + 1 + 0.25 + 2.25 = 4.5 and 2.25 + 0 + 0 + 2.25 = 4.5 -> rho = 3.75 / 4.5
    assert metrics.spearman([0, 0, 5, 9], [1, 2, 2, 7]) == pytest.approx(3.75 / 4.5)


@pytest.mark.parametrize("function", [metrics.rmse, metrics.mae, metrics.spearman])
def test_library_backed_metrics_keep_the_input_checks(function) -> None:
    with pytest.raises(DataError, match="y_true has 3 values but y_pred has 2"):
        function([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(DataError, match="y_pred has 1 non-finite"):
        function([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(DataError, match="empty"):
        function([], [])


def test_gini_and_normalised_gini_by_hand() -> None:
    # predicted order (highest first): users 3, 4, 2, 1, 0 with true spend 30, 60, 0, 10, 0
    # cumulative shares 0.3, 0.9, 0.9, 1.0, 1.0 -> mean 4.1 / 5 = 0.82 -> Gini 2*0.82-1 = 0.64
    assert metrics.gini(Y_TRUE, Y_PRED) == pytest.approx(0.64)
    # perfect order 60, 30, 10, 0, 0 -> shares 0.6, 0.9, 1, 1, 1 -> mean 0.9 -> Gini 0.8
    assert metrics.gini(Y_TRUE, Y_TRUE) == pytest.approx(0.8)
    # normalised = 0.64 / 0.8 = 0.8
    assert metrics.normalised_gini(Y_TRUE, Y_PRED) == pytest.approx(0.8)
    assert metrics.normalised_gini(Y_TRUE, Y_TRUE) == pytest.approx(1.0)


def test_gini_ties_share_spend_evenly_whatever_the_input_order() -> None:
    # two users, equal predictions: each is credited with the mean spend 5
    # cumulative shares 0.5, 1.0 -> mean 0.75 -> Gini 0.5 (= 1/n for a constant predictor)
    assert metrics.gini([10.0, 0.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert metrics.gini([0.0, 10.0], [1.0, 1.0]) == pytest.approx(0.5)
    # perfect: shares 1, 1 -> Gini 1; normalised 0.5 / 1
    assert metrics.normalised_gini([0.0, 10.0], [1.0, 1.0]) == pytest.approx(0.5)


def test_ranking_metrics_do_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.exponential(10.0, 200) * (rng.random(200) < 0.4)
    y_pred = np.round(y_true + rng.normal(0, 5, 200), 0)  # rounding creates ties
    permutation = rng.permutation(200)
    for name, value in metrics.evaluate(y_true, y_pred).items():
        permuted = metrics.evaluate(y_true[permutation], y_pred[permutation])[name]
        assert permuted == pytest.approx(value), name


def test_all_zero_truth_gives_nan_for_shares_of_spend() -> None:
    zeros = np.zeros(4)
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    assert math.isnan(metrics.gini(zeros, pred))
    assert math.isnan(metrics.normalised_gini(zeros, pred))
    assert math.isnan(metrics.top_k_capture(zeros, pred))
    assert math.isnan(metrics.decile_mape(zeros, pred))
    # errors stay defined: rmse = sqrt((1+4+9+16)/4) = sqrt(7.5)
    assert metrics.rmse(zeros, pred) == pytest.approx(math.sqrt(7.5))


def test_top_k_capture_by_hand() -> None:
    # k = 10% of 5 users -> ceil(0.5) = 1 user: user 3 holds 30 of 100
    assert metrics.top_k_capture(Y_TRUE, Y_PRED) == pytest.approx(0.3)
    # k = 40% -> 2 users: 30 + 60 = 90 of 100
    assert metrics.top_k_capture(Y_TRUE, Y_PRED, k=0.4) == pytest.approx(0.9)
    # 20 users, top decile = 2 users holding 50 + 30 of 100 (18 others share the last 20)
    y_true = np.r_[50.0, 30.0, np.full(18, 20.0 / 18.0)]
    y_pred = np.arange(20, 0, -1, dtype=float)
    assert metrics.top_k_capture(y_true, y_pred) == pytest.approx(0.8)


def test_top_k_capture_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k_capture(Y_TRUE, Y_PRED, k=0.0)


def test_gain_curve_starts_at_origin_and_ends_at_one() -> None:
    share_users, share_spend = metrics.gain_curve(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(share_users, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(share_spend, [0, 0.3, 0.9, 0.9, 1.0, 1.0])


def test_decile_mape_by_hand() -> None:
    # two "deciles" (bins=2); order by prediction: (pred 5, true 6), (3, 4), (2, 2), (1, 0)
    # bin 1: mean pred 4, mean true 5 -> |4-5|/5 = 0.2
    # bin 2: mean pred 1.5, mean true 1 -> |1.5-1|/1 = 0.5 ; mean of bins 0.35
    assert metrics.decile_mape([0, 4, 2, 6], [1, 3, 2, 5], bins=2) == pytest.approx(0.35)
    # a bin with zero mean true spend is skipped: order (4, 6), (3, 2), (2, 0), (1, 0)
    # bin 1: |3.5 - 4| / 4 = 0.125; bin 2 true mean 0 -> skipped
    assert metrics.decile_mape([0, 0, 2, 6], [1, 2, 3, 4], bins=2) == pytest.approx(0.125)


def test_decile_table_default_ten_bins() -> None:
    # 20 users -> 10 bins of 2, highest predictions first
    y_pred = np.arange(20, dtype=float)
    y_true = 2.0 * y_pred
    mean_pred, mean_true, counts = metrics.decile_table(y_true, y_pred)
    assert counts.tolist() == [2] * 10
    # first bin: predictions 19 and 18 -> mean 18.5; true 38, 36 -> 37
    assert mean_pred[0] == pytest.approx(18.5)
    assert mean_true[0] == pytest.approx(37.0)
    # predictions are half the truth everywhere: every decile off by 50%
    assert metrics.decile_mape(y_true, y_pred) == pytest.approx(0.5)


def test_tier_confusion_by_hand() -> None:
    # n = 5, 10% / 30%: high = ceil(0.5) = 1 user, high+medium = ceil(2.0) = 2 users
    # true tiers: 60 high, 30 medium, 10 and the zeros low
    # pred tiers: user 3 (pred 5) high, user 4 (pred 4) medium, rest low
    confusion = metrics.tier_confusion(Y_TRUE, Y_PRED, TierRule())
    assert confusion.tolist() == [
        [0, 1, 0],  # true high (user 4) predicted medium
        [1, 0, 0],  # true medium (user 3) predicted high
        [0, 0, 3],  # users 0, 1, 2 low on both sides
    ]
    assert confusion.dtype == np.int64


def _confusion_from_production_tiers(y_true: np.ndarray, y_pred: np.ndarray, rule: TierRule) -> np.ndarray:
    """The confusion matrix counted by hand from what ``tiers.assign_tiers`` publishes."""
    true_tiers, _ = tiers.assign_tiers(y_true, rule)
    pred_tiers, _ = tiers.assign_tiers(y_pred, rule)
    return np.array([[int(np.sum((true_tiers == t) & (pred_tiers == p))) for p in TIERS] for t in TIERS])


@pytest.mark.parametrize(
    "rule",
    [
        TierRule(high=0.2, medium=0.3),
        TierRule(mode="threshold", high_min=40.0, medium_min=5.0),
    ],
    ids=["shares-20-30", "threshold"],
)
def test_evaluation_tiers_are_the_published_tiers(rule: TierRule) -> None:
    rng = np.random.default_rng(1)
    y_true = np.round(rng.exponential(20.0, 400) * (rng.random(400) < 0.5), 0)  # zeros and ties
    y_pred = np.round(y_true * 0.7 + rng.exponential(6.0, 400), 0)
    expected = _confusion_from_production_tiers(y_true, y_pred, rule)
    confusion = metrics.tier_confusion(y_true, y_pred, rule)
    np.testing.assert_array_equal(confusion, expected)
    result = metrics.evaluate(y_true, y_pred, rule)
    assert result["tier_accuracy"] == pytest.approx(np.trace(expected) / 400)
    assert result["high_tier_recall"] == pytest.approx(expected[0, 0] / expected[0].sum())
    # the rule matters: the default 10% / 30% rule counts differently on these users
    assert not np.array_equal(metrics.tier_confusion(y_true, y_pred, TierRule()), expected)


def test_threshold_rule_by_hand() -> None:
    # high >= 40, medium >= 10: true [0 low, 10 medium, 0 low, 30 medium, 60 high]
    # pred [1, 2, 3, 5, 4] are all below 10: every user predicted low
    rule = TierRule(mode="threshold", high_min=40.0, medium_min=10.0)
    assert metrics.tier_confusion(Y_TRUE, Y_PRED, rule).tolist() == [[0, 0, 1], [0, 0, 2], [0, 0, 2]]
    result = metrics.evaluate(Y_TRUE, Y_PRED, rule)
    assert result["tier_accuracy"] == pytest.approx(2 / 5)
    assert result["high_tier_recall"] == pytest.approx(0.0)
    # no user truly high: recall undefined
    low_rule = TierRule(mode="threshold", high_min=100.0, medium_min=10.0)
    assert math.isnan(metrics.evaluate(Y_TRUE, Y_PRED, low_rule)["high_tier_recall"])


def test_ties_go_to_the_upper_tier_as_in_production() -> None:
    # n = 4, high 25%, medium 50%: 1 high slot, ceil(3.0) = 3 high-or-medium slots.
    # Three 3s straddle the high cut: production puts all of them high (a mean-rank rule
    # would have put them all medium).
    rule = TierRule(high=0.25, medium=0.5)
    confusion = metrics.tier_confusion([3.0, 3.0, 3.0, 0.0], [4.0, 3.0, 2.0, 1.0], rule)
    # true: high, high, high, low; pred: high, medium, medium, low
    assert confusion.tolist() == [[1, 2, 0], [0, 0, 0], [0, 0, 1]]
    # zero spenders at the medium cut are never tiered up, as in production: 10 users,
    # 10% / 30% -> the 4th highest true spend is 0, so medium holds the other two spenders
    y_true = np.array([9.0, 8.0, 7.0] + [0.0] * 7)
    y_pred = np.arange(10, 0, -1, dtype=float)
    confusion = metrics.tier_confusion(y_true, y_pred, TierRule())
    assert confusion.sum(axis=1).tolist() == [1, 2, 7]  # true tiers: 1 high, 2 medium, 7 low
    assert confusion.sum(axis=0).tolist() == [1, 3, 6]  # predicted: 1, 3, 6 (no ties)


def test_tier_rule_defaults_to_the_settings_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics.tier_rule() == TierRule()
    explicit = TierRule(high=0.2, medium=0.3)
    assert metrics.tier_rule(explicit) is explicit
    monkeypatch.setenv("SPENDPRED_TIER_MODE", "threshold")
    monkeypatch.setenv("SPENDPRED_TIER_HIGH_MIN", "40")
    monkeypatch.setenv("SPENDPRED_TIER_MEDIUM_MIN", "10")
    settings_rule = TierRule(mode="threshold", high_min=40.0, medium_min=10.0)
    assert metrics.tier_rule() == settings_rule
    assert metrics.evaluate(Y_TRUE, Y_PRED) == metrics.evaluate(Y_TRUE, Y_PRED, settings_rule)
    np.testing.assert_array_equal(
        metrics.tier_confusion(Y_TRUE, Y_PRED), metrics.tier_confusion(Y_TRUE, Y_PRED, settings_rule)
    )
    # an explicit rule wins over the settings
    assert metrics.evaluate(Y_TRUE, Y_PRED, TierRule())["tier_accuracy"] == pytest.approx(0.6)
    monkeypatch.setenv("SPENDPRED_TIER_MEDIUM_MIN", "90")  # not below high_min
    with pytest.raises(ConfigError, match="high_min"):
        metrics.evaluate(Y_TRUE, Y_PRED)


def test_totals_by_hand() -> None:
    # predicted 1 + 2 + 3 + 5 + 4 = 15, true 100 -> ratio 0.15
    result = metrics.evaluate(Y_TRUE, Y_PRED, TierRule())
    assert result["total_predicted"] == pytest.approx(15.0)
    assert result["total_actual"] == pytest.approx(100.0)
    assert result["total_ratio"] == pytest.approx(0.15)
    assert metrics.evaluate(Y_TRUE, Y_TRUE, TierRule())["total_ratio"] == pytest.approx(1.0)
    # no true spend: the ratio is undefined, the totals are not
    zero = metrics.evaluate(np.zeros(3), [1.0, 2.0, 3.0], TierRule())
    assert (zero["total_predicted"], zero["total_actual"]) == (6.0, 0.0)
    assert math.isnan(zero["total_ratio"])


def test_evaluate_returns_every_scalar_metric() -> None:
    result = metrics.evaluate(Y_TRUE, Y_PRED)  # the settings' rule: 10% / 30% by default
    assert list(result) == list(metrics.METRIC_NAMES) == list(metrics.METRIC_LABELS)
    assert result["rmse"] == pytest.approx(math.sqrt(767.0))
    assert result["mae"] == pytest.approx(18.6)
    assert result["spearman"] == pytest.approx(7.0 / math.sqrt(95.0))
    assert result["normalised_gini"] == pytest.approx(0.8)
    assert result["top10_capture"] == pytest.approx(0.3)
    # prediction order 5, 4, 3, 2, 1 with true 30, 60, 0, 10, 0; bins of 1 user, the
    # zero-true bins skipped: |5-30|/30, |4-60|/60, |2-10|/10 -> mean (0.8333+0.9333+0.8)/3
    assert result["decile_mape"] == pytest.approx((25 / 30 + 56 / 60 + 8 / 10) / 3)
    # 3 of 5 users on the diagonal; the single truly high user is predicted medium
    assert result["tier_accuracy"] == pytest.approx(0.6)
    assert result["high_tier_recall"] == pytest.approx(0.0)
    assert all(isinstance(value, float) for value in result.values())


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([1.0, 2.0], [1.0], "y_true has 2 values but y_pred has 1"),
        ([], [], "empty"),
        ([1.0, float("nan")], [1.0, 2.0], "non-finite value"),
        ([[1.0]], [[1.0]], "one-dimensional"),
        ([-1.0, 2.0], [1.0, 2.0], "negative"),
    ],
)
def test_bad_input_raises_data_error(y_true: list, y_pred: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        metrics.evaluate(y_true, y_pred)


def test_paired_bootstrap_scores_every_model_on_the_same_draws() -> None:
    drawn = metrics.paired_bootstrap(Y_TRUE, {"model": Y_PRED, "perfect": Y_TRUE}, draws=50, seed=3)
    assert set(drawn) == {"model", "perfect"} and set(drawn["model"]) == set(metrics.BOOTSTRAP_METRICS)
    assert all(values.shape == (50,) for per in drawn.values() for values in per.values())
    # the same seed gives the same draws; the perfect order is never behind on any draw with spend
    again = metrics.paired_bootstrap(Y_TRUE, {"model": Y_PRED, "perfect": Y_TRUE}, draws=50, seed=3)
    np.testing.assert_array_equal(drawn["model"]["normalised_gini"], again["model"]["normalised_gini"])
    assert metrics.share_ahead(drawn["model"]["normalised_gini"], drawn["perfect"]["normalised_gini"]) == 0.0
    with_spend = ~np.isnan(drawn["perfect"]["normalised_gini"])
    np.testing.assert_allclose(drawn["perfect"]["normalised_gini"][with_spend], 1.0)


def test_a_draw_without_spend_counts_and_no_model_is_ahead_in_it() -> None:
    # one buyer among 20 users: many draws miss the buyer, their ranking metrics are undefined
    y = np.zeros(20)
    y[7] = 50.0
    better, worse = -np.abs(np.arange(20) - 7.0), np.arange(20, dtype=float)
    drawn = metrics.paired_bootstrap(y, {"better": better, "worse": worse}, draws=200, seed=0)
    ours, theirs = drawn["better"]["normalised_gini"], drawn["worse"]["normalised_gini"]
    no_spend = np.isnan(ours)
    assert no_spend.any() and (np.isnan(theirs) == no_spend).all()  # the same draws, for every model
    assert (ours[~no_spend] > theirs[~no_spend]).all()
    assert metrics.share_ahead(ours, theirs) == pytest.approx(1.0 - no_spend.mean())  # counted, never ahead
    assert metrics.share_ahead(theirs, ours) == 0.0


def test_share_ahead_without_draws_is_nan_and_refuses_unpaired_draws() -> None:
    assert all(v.size == 0 for per in metrics.paired_bootstrap([], {"a": []}, draws=10).values() for v in per.values())
    assert math.isnan(metrics.share_ahead([], []))
    with pytest.raises(DataError, match="paired draws differ"):
        metrics.share_ahead([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="short has 1 predictions for 5 users"):
        metrics.paired_bootstrap(Y_TRUE, {"short": [1.0]}, draws=10)
