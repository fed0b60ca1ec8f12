"""Tier assignment: quantile and threshold rules, ties, tiny populations, rule validation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from spendpred.errors import ConfigError, DataError
from spendpred.tiers import TIERS, Threshold, TierRule, assign_tiers, rule_from_settings, share_count, tier_counts, tier_of


def _check_consistent(scores: np.ndarray, tiers: np.ndarray, thresholds: list[Threshold]) -> None:
    """Every score lies in its tier's interval, and the intervals are in tier order."""
    by_tier = {t.tier: t for t in thresholds}
    assert [t.tier for t in thresholds] == list(TIERS)
    for score, tier in zip(scores, tiers):
        assert by_tier[tier].contains(float(score)), (score, tier, by_tier[tier])
        others = [t for t in TIERS if t != tier]
        assert not any(by_tier[o].contains(float(score)) for o in others)


def test_default_rule_on_ten_distinct_scores_is_1_3_6() -> None:
    scores = np.array([5.0, 90.0, 10.0, 70.0, 0.0, 30.0, 60.0, 20.0, 40.0, 80.0])
    tiers, thresholds = assign_tiers(scores)
    assert tiers.tolist() == ["low", "high", "low", "medium", "low", "low", "medium", "low", "low", "medium"]
    assert thresholds == [
        Threshold("high", 90.0, None),
        Threshold("medium", 60.0, 90.0),
        Threshold("low", None, 60.0),
    ]
    _check_consistent(scores, tiers, thresholds)


def test_default_rule_on_a_large_population_hits_the_shares() -> None:
    scores = np.random.default_rng(7).gamma(0.8, 120.0, 1000)
    tiers, thresholds = assign_tiers(scores)
    assert tier_counts(tiers) == {"high": 100, "medium": 300, "low": 600}
    _check_consistent(scores, tiers, thresholds)


def test_shares_are_rounded_up() -> None:
    # 15 users: ceil(1.5) = 2 high; ceil(6.0) = 6 high or medium -> 4 medium
    tiers, _ = assign_tiers(np.arange(15, dtype=float))
    assert tier_counts(tiers) == {"high": 2, "medium": 4, "low": 9}


def test_share_products_with_float_error_are_not_rounded_up() -> None:
    # 0.1 + 0.6 = 0.7 and 0.7 * 10 = 7.000000000000001 in floating point: still 7 users
    tiers, _ = assign_tiers(np.arange(10, dtype=float), TierRule(high=0.1, medium=0.6))
    assert tier_counts(tiers) == {"high": 1, "medium": 6, "low": 3}


def test_ties_share_a_tier_and_go_to_the_upper_tier_at_a_boundary() -> None:
    # high cut falls inside the run of 7s: all four 7s are high
    scores = np.array([7.0, 7.0, 1.0, 7.0, 2.0, 3.0, 7.0, 1.0, 1.0, 1.0])
    tiers, thresholds = assign_tiers(scores)
    assert tiers.tolist() == ["high", "high", "low", "high", "low", "low", "high", "low", "low", "low"]
    # medium cut (4th highest) is also 7: medium is empty, as its interval [7, 7) is
    assert thresholds[1] == Threshold("medium", 7.0, 7.0)
    _check_consistent(scores, tiers, thresholds)


def test_equal_scores_always_get_equal_tiers_and_order_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 12, 500).astype(float)  # many ties
    tiers, thresholds = assign_tiers(scores)
    for value in np.unique(scores):
        assert len(set(tiers[scores == value].tolist())) == 1
    order = rng.permutation(scores.size)
    shuffled_tiers, shuffled_thresholds = assign_tiers(scores[order])
    assert shuffled_tiers.tolist() == tiers[order].tolist()
    assert shuffled_thresholds == thresholds
    _check_consistent(scores, tiers, thresholds)


def test_all_equal_scores_are_all_high() -> None:
    tiers, thresholds = assign_tiers(np.full(6, 3.5))
    assert tiers.tolist() == ["high"] * 6
    assert thresholds == [Threshold("high", 3.5, None), Threshold("medium", 3.5, 3.5), Threshold("low", None, 3.5)]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], []),
        ([4.0], ["high"]),
        ([1.0, 9.0], ["low", "high"]),
        ([2.0, 2.0], ["high", "high"]),
        ([0.0, 0.0], ["high", "high"]),
        ([3.0, 1.0, 2.0], ["high", "low", "medium"]),
    ],
)
def test_tiny_populations_are_deterministic(scores: list[float], expected: list[str]) -> None:
    tiers, thresholds = assign_tiers(np.array(scores, dtype=float))
    assert tiers.tolist() == expected
    assert (thresholds == []) is (len(scores) == 0)
    if scores:
        _check_consistent(np.array(scores), tiers, thresholds)


def test_shares_summing_to_one_leave_no_low_tier() -> None:
    tiers, thresholds = assign_tiers(np.arange(1, 21, dtype=float), TierRule(high=0.25, medium=0.75))
    assert tier_counts(tiers) == {"high": 5, "medium": 15, "low": 0}
    assert thresholds[2] == Threshold("low", None, 1.0)


def test_threshold_rule_uses_fixed_cut_offs_inclusive_at_the_lower_bound() -> None:
    rule = TierRule(mode="threshold", high_min=500, medium_min=100)
    scores = np.array([0.0, 99.99, 100.0, 499.99, 500.0, 10_000.0])
    tiers, thresholds = assign_tiers(scores, rule)
    assert tiers.tolist() == ["low", "low", "medium", "medium", "high", "high"]
    assert thresholds == [
        Threshold("high", 500.0, None),
        Threshold("medium", 100.0, 500.0),
        Threshold("low", None, 100.0),
    ]


def test_threshold_rule_gives_thresholds_even_without_users() -> None:
    tiers, thresholds = assign_tiers(np.array([]), TierRule(mode="threshold", high_min=10, medium_min=0))
    assert tiers.size == 0
    assert [t.lower_bound for t in thresholds] == [10.0, 0.0, None]


def test_float32_and_list_input_are_accepted() -> None:
    tiers, _ = assign_tiers(np.array([1, 2, 3, 4], dtype=np.float32))
    assert tiers.tolist() == ["low", "low", "medium", "high"]
    listed, _ = assign_tiers([1.0, 2.0, 3.0, 4.0])  # type: ignore[arg-type]
    assert listed.tolist() == tiers.tolist()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"high": 0.0}, "'high'"),
        ({"high": 1.0}, "'high'"),
        ({"high": float("nan")}, "'high'"),
        ({"high": True}, "'high'"),
        ({"medium": -0.1}, "'medium'"),
        ({"medium": "0.3"}, "'medium'"),
        ({"high": 0.6, "medium": 0.5}, "'high' \\+ 'medium'"),
        ({"mode": "percentile"}, "'mode'"),
        ({"high_min": 100.0}, "'high_min' is set but mode is 'quantile'"),
        ({"mode": "threshold", "medium_min": 1.0}, "'high_min' is required"),
        ({"mode": "threshold", "high_min": 1.0}, "'medium_min' is required"),
        ({"mode": "threshold", "high_min": 10.0, "medium_min": 10.0}, "'high_min'.*greater than medium_min"),
        ({"mode": "threshold", "high_min": 10.0, "medium_min": -1.0}, "'medium_min'.*>= 0"),
        ({"mode": "threshold", "high_min": float("inf"), "medium_min": 1.0}, "'high_min'.*finite"),
    ],
)
def test_invalid_rules_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TierRule(**kwargs)  # type: ignore[arg-type]


def test_rule_from_mapping() -> None:
    rule = TierRule.from_mapping({"mode": "threshold", "high_min": 50, "medium_min": 5})
    assert (rule.mode, rule.high_min, rule.medium_min) == ("threshold", 50.0, 5.0)
    with pytest.raises(ConfigError, match="unknown tier rule field"):
        TierRule.from_mapping({"top": 0.1})


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.array([1.0, np.nan, 2.0]), "position 1"),
        (np.array([1.0, np.inf]), "NaN or infinite"),
        (np.ones((2, 2)), "one-dimensional"),
    ],
)
def test_bad_scores_are_refused(scores: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        assign_tiers(scores)


def test_threshold_contains_is_half_open() -> None:
    medium = Threshold("medium", 10.0, 20.0)
    assert medium.contains(10.0) and medium.contains(19.999)
    assert not medium.contains(20.0) and not medium.contains(9.99)
    assert Threshold("high", 20.0, None).contains(1e12)
    assert Threshold("low", None, 10.0).contains(-5.0)
    assert medium.as_dict() == {"tier": "medium", "lower_bound": 10.0, "upper_bound": 20.0}


def test_tier_of_a_published_row_is_the_tier_assign_tiers_gave() -> None:
    """The page colours a spend by the published thresholds with the same rule that assigned the tiers."""
    from decimal import Decimal

    scores = np.array([5.0, 90.0, 10.0, 70.0, 0.0, 30.0, 60.0, 20.0, 40.0, 80.0])
    tiers, thresholds = assign_tiers(scores)
    # as the page reads them back: mappings with the warehouse's extra columns, NUMERIC bounds as Decimal
    rows = [
        {"as_of": "2024-03-31", "model_version": "3", **t.as_dict(),
         **{k: Decimal(str(v)) for k, v in t.as_dict().items() if k != "tier" and v is not None}}
        for t in thresholds
    ]  # fmt: skip
    for score, tier in zip(scores, tiers):
        assert tier_of(float(score), rows) == tier == tier_of(float(score), thresholds)
    assert tier_of(90.0, rows) == "high" and tier_of(89.99, rows) == "medium"  # half-open at the cut
    assert Threshold.from_mapping(rows[1]) == Threshold("medium", 60.0, 90.0)
    assert tier_of(5.0, [{"tier": "high", "lower_bound": 10.0, "upper_bound": None}]) is None  # no interval holds it
    assert tier_of(1.0, []) is None


@pytest.mark.parametrize(
    ("share", "n", "expected"),
    [(0.1, 10, 1), (0.1, 5, 1), (0.1, 15, 2), (0.7, 10, 7), (0.4, 5, 2), (1.0, 3, 3), (0.1, 0, 0), (0.0, 5, 0)],
)
def test_share_count_rounds_up_but_not_float_noise(share: float, n: int, expected: int) -> None:
    # 0.7 * 10 = 7.000000000000001 is 7, not 8; 0.1 * 15 = 1.5 is 2
    assert share_count(share, n) == expected


def test_rule_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rule_from_settings() == TierRule()
    monkeypatch.setenv("SPENDPRED_TIER_HIGH", "0.2")
    assert rule_from_settings() == TierRule(high=0.2, medium=0.3)
    monkeypatch.setenv("SPENDPRED_TIER_HIGH", "0.8")  # 0.8 + 0.3 > 1
    with pytest.raises(ConfigError, match="exceed 1"):
        rule_from_settings()


def test_describe_names_the_rule() -> None:
    assert TierRule(high=0.2, medium=0.3).describe().startswith("top 20% of users high, next 30% medium, rest low")
    threshold = TierRule(mode="threshold", high_min=500, medium_min=100)
    assert threshold.describe() == "high if spend >= 500, medium if >= 100, low otherwise"


def test_quiet_logs_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    scores = np.arange(10, dtype=float)
    with caplog.at_level(logging.INFO, logger="spendpred.tiers"):
        quiet, _ = assign_tiers(scores, quiet=True)
        assert caplog.records == []
        loud, _ = assign_tiers(scores)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert quiet.tolist() == loud.tolist()


def test_zero_scores_are_never_tiered_up() -> None:
    """70% spent nothing: high is the top 10%, medium the other 20% of spenders, every zero low."""
    scores = np.array([0.0] * 70 + list(range(1, 31)), dtype=float)
    labels, thresholds = assign_tiers(scores)
    assert (labels[:70] == "low").all()
    assert tier_counts(labels) == {"high": 10, "medium": 20, "low": 70}
    bounds = {t.tier: t for t in thresholds}
    assert bounds["medium"].lower_bound == 1.0 and bounds["low"].upper_bound == 1.0
    # all zero: nothing positive to rank, the ties-up rule alone (everyone shares the top tier)
    labels, _ = assign_tiers(np.zeros(5))
    assert (labels == "high").all()
