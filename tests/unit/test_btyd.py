"""BG/NBD × Gamma-Gamma baseline: likelihoods by hand, parameter recovery on simulated data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spendpred import btyd
from spendpred.errors import DataError

TRUE_BGNBD = btyd.BGNBDParams(r=0.25, alpha=30.0, a=0.8, b=2.5)
TRUE_GG = btyd.GammaGammaParams(p=6.0, q=4.0, gamma=15.0)


def _beta(x: float, y: float) -> float:
    return math.gamma(x) * math.gamma(y) / math.gamma(x + y)


def _bgnbd_likelihood_by_hand(r: float, alpha: float, a: float, b: float, x: int, t_x: float, T: float) -> float:  # noqa: N803
    """Equation 6 of Fader, Hardie & Lee (2005), written out term by term."""
    gamma_part = math.gamma(r + x) * alpha**r / math.gamma(r)
    alive = _beta(a, b + x) / _beta(a, b) * gamma_part / (alpha + T) ** (r + x)
    dropped = _beta(a + 1, b + x - 1) / _beta(a, b) * gamma_part / (alpha + t_x) ** (r + x) if x > 0 else 0.0
    return alive + dropped


def _simulate_bgnbd(
    params: btyd.BGNBDParams, T: np.ndarray, holdout: float, rng: np.random.Generator  # noqa: N803
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate BG/NBD customers born at 0: repeat purchases in (0, T], their last time, purchases in (T, T+holdout]."""
    n = T.size
    rate = rng.gamma(params.r, 1.0 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    x, t_x, y, clock = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        clock[idx] += rng.exponential(1.0 / rate[idx])
        ended = clock[idx] > T[idx] + holdout
        active[idx[ended]] = False
        idx = idx[~ended]
        calibration = clock[idx] <= T[idx]
        x[idx[calibration]] += 1
        t_x[idx[calibration]] = clock[idx[calibration]]
        y[idx[~calibration]] += 1
        active[idx[rng.random(idx.size) < dropout[idx]]] = False
    return x, t_x, y


def test_bgnbd_log_likelihood_matches_hand_computed_values() -> None:
    # r = alpha = a = b = 1: x=0, T=1 gives 1/2; x=1, t_x=1, T=2 gives 1/18 + 1/8 = 13/72
    unit = btyd.BGNBDParams(1.0, 1.0, 1.0, 1.0)
    ll = btyd.bgnbd_log_likelihood(unit, [0, 1], [0, 1], [1, 2])
    np.testing.assert_allclose(ll, [math.log(0.5), math.log(13 / 72)], rtol=1e-12)

    params = btyd.BGNBDParams(r=0.5, alpha=2.0, a=2.0, b=3.0)
    customers = [(0, 0.0, 4.0), (2, 3.0, 5.0), (5, 20.5, 30.0)]
    expected = [math.log(_bgnbd_likelihood_by_hand(0.5, 2.0, 2.0, 3.0, *c)) for c in customers]
    got = btyd.bgnbd_log_likelihood(params, *zip(*customers, strict=True))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_gamma_gamma_log_likelihood_matches_hand_computed_value() -> None:
    p, q, g, x, m = 2.0, 3.0, 10.0, 2.0, 15.0
    density = math.gamma(p * x + q) / (math.gamma(p * x) * math.gamma(q)) * g**q * m ** (p * x - 1) * x ** (p * x) / (g + m * x) ** (p * x + q)
    got = btyd.gamma_gamma_log_likelihood(btyd.GammaGammaParams(p, q, g), [x], [m])
    np.testing.assert_allclose(got, [math.log(density)], rtol=1e-12)


def test_fit_bgnbd_recovers_simulated_parameters_and_holdout_purchases() -> None:
    rng = np.random.default_rng(7)
    T = rng.uniform(180.0, 270.0, 20_000)  # noqa: N806
    x, t_x, y = _simulate_bgnbd(TRUE_BGNBD, T, 180.0, rng)
    fit = btyd.fit_bgnbd(x, t_x, T)
    got = fit.params
    assert got.r == pytest.approx(TRUE_BGNBD.r, rel=0.15)
    assert got.alpha == pytest.approx(TRUE_BGNBD.alpha, rel=0.25)
    assert got.a == pytest.approx(TRUE_BGNBD.a, rel=0.3)
    assert got.b == pytest.approx(TRUE_BGNBD.b, rel=0.35)
    # the fitted optimum is at least as likely as the true parameters
    true_ll = float(btyd.bgnbd_log_likelihood(TRUE_BGNBD, x, t_x, T).sum())
    assert fit.log_likelihood >= true_ll - 1e-6
    # conditional expectation (eq. 10) reproduces the simulated holdout, overall and by frequency
    expected = btyd.bgnbd_expected_purchases(TRUE_BGNBD, 180.0, x, t_x, T)
    assert expected.sum() == pytest.approx(y.sum(), rel=0.05)
    for k in (0, 1, 2):
        assert expected[x == k].sum() == pytest.approx(y[x == k].sum(), rel=0.12)
    # repeat buyers with a long silence are less likely alive than recent ones
    alive = btyd.bgnbd_probability_alive(TRUE_BGNBD, [0, 3, 3], [0, 200, 20], [250, 250, 250])
    assert alive[0] == 1.0 and alive[1] > alive[2]


def test_fit_gamma_gamma_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(3)
    n = 8000
    x = rng.integers(1, 8, n).astype(float)
    scale = rng.gamma(TRUE_GG.q, 1.0 / TRUE_GG.gamma, n)  # nu
    means = np.array([rng.gamma(TRUE_GG.p, 1.0 / s, int(k)).mean() for s, k in zip(scale, x, strict=True)])
    fit = btyd.fit_gamma_gamma(x, means)
    assert fit.params.p == pytest.approx(TRUE_GG.p, rel=0.15)
    assert fit.params.q == pytest.approx(TRUE_GG.q, rel=0.2)
    assert fit.params.gamma == pytest.approx(TRUE_GG.gamma, rel=0.25)
    value = fit.expected_value([0, 5], [0.0, 100.0])
    assert value[0] == pytest.approx(fit.params.population_mean)
    assert TRUE_GG.population_mean < value[1] < 100.0  # shrunk towards the population mean


def test_rfm_summary_aggregates_days_and_respects_the_as_of_date() -> None:
    orders = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "c"],
            "ordered_at": ["2024-01-01 09:00:00", "2024-01-01 18:00:00", "2024-01-11 00:00:00",
                           "2024-02-01 00:00:00", "2024-01-21 23:59:59", "2024-01-31 23:59:59"],
            "amount": [10.0, 5.0, 30.0, 99.0, 7.0, 1.0],
        }
    )
    summary = btyd.rfm_summary(orders, "2024-01-31")
    assert list(summary.index) == ["a", "b", "c"]
    assert summary.loc["a"].to_dict() == {"frequency": 1.0, "recency": 10.0, "T": 30.0, "monetary_value": 30.0}
    assert summary.loc["b"].to_dict() == {"frequency": 0.0, "recency": 0.0, "T": 10.0, "monetary_value": 0.0}
    assert summary.loc["c", "T"] == 0.0


def test_btyd_baseline_predicts_zero_for_non_buyers_and_more_for_frequent_buyers() -> None:
    rng = np.random.default_rng(11)
    rows = []
    for i in range(400):
        days = np.sort(rng.choice(300, size=int(rng.integers(1, 12)), replace=False))
        rows += [(f"u{i}", pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(d)), float(rng.gamma(5.0, 6.0))) for d in days]
    orders = pd.DataFrame(rows, columns=["user_id", "ordered_at", "amount"])
    spend, model = btyd.btyd_baseline(orders, "2024-10-27", 90, ["u0", "u1", "nobody"])
    assert spend.shape == (3,) and spend[2] == 0.0 and (spend[:2] > 0).all()
    summary = pd.DataFrame({"frequency": [1.0, 10.0], "recency": [250.0, 290.0], "T": [300.0, 300.0],
                            "monetary_value": [30.0, 30.0]})
    low, high = model.predict_spend(summary, 90)
    assert high > low > 0
    assert set(model.describe()) == {"bgnbd", "gamma_gamma"}


def test_invalid_inputs_raise_clear_errors() -> None:
    with pytest.raises(DataError, match="recency is larger than T"):
        btyd.bgnbd_log_likelihood(TRUE_BGNBD, [1], [10], [5])
    with pytest.raises(DataError, match="not a whole number"):
        btyd.fit_bgnbd([0.5, 1], [0, 1], [2, 2])
    with pytest.raises(DataError, match="amount"):
        btyd.rfm_summary(pd.DataFrame({"user_id": ["a"], "ordered_at": ["2024-01-01"], "amount": [-1.0]}), "2024-01-02")
    with pytest.raises(DataError, match="lacks column"):
        btyd.rfm_summary(pd.DataFrame({"user_id": ["a"]}), "2024-01-02")
    with pytest.raises(DataError, match="at least 2 repeat customers"):
        btyd.fit_gamma_gamma([0, 0, 1], [0.0, 0.0, 5.0])
    with pytest.raises(ValueError, match="t must be"):
        btyd.bgnbd_expected_purchases(TRUE_BGNBD, -1.0, [0], [0], [1])
