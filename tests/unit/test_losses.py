"""Loss functions and spend predictions checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spendpred.errors import ConfigError
from spendpred.model.losses import (
    apply_calibration,
    compute_loss,
    fit_calibration,
    huber_log1p_loss,
    initial_bias,
    log1p_predict,
    mse_log1p_loss,
    output_dim,
    predict_spend,
    ziln_loss,
    ziln_params,
    ziln_predict,
)


def inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


def test_mse_on_log1p_matches_hand_value() -> None:
    # log1p(e - 1) = 1 and log1p(0) = 0; errors 0 and 2 -> mean of squares 2
    output = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([math.e - 1.0, 0.0])
    assert float(mse_log1p_loss(output, y)) == pytest.approx(2.0, rel=1e-6)
    assert float(compute_loss("mse", output, y)) == pytest.approx(2.0, rel=1e-6)


def test_huber_on_log1p_is_quadratic_then_linear() -> None:
    # errors 0.5 (quadratic: 0.5 * 0.25) and 3 (linear: 3 - 0.5) with delta 1 -> mean 1.3125
    output = torch.tensor([0.5, 3.0])
    y = torch.tensor([0.0, 0.0])
    assert float(huber_log1p_loss(output, y, delta=1.0)) == pytest.approx(1.3125, rel=1e-6)
    assert float(compute_loss("huber", output, y, huber_delta=1.0)) == pytest.approx(1.3125, rel=1e-6)
    # a larger delta keeps the big error quadratic: (0.125 + 4.5) / 2
    assert float(huber_log1p_loss(output, y, delta=5.0)) == pytest.approx(2.3125, rel=1e-6)


def test_ziln_loss_matches_hand_computed_value() -> None:
    sigma_raw = inverse_softplus(1.0)  # softplus(raw) = 1 -> sigma 1
    output = torch.tensor([[0.0, 1.0, sigma_raw], [2.0, 0.0, 0.0], [-1.0, 0.5, inverse_softplus(2.0)]])
    y = torch.tensor([math.e, 0.0, 3.0])
    # buyer 1: BCE(0, 1) = log 2; -log pdf at y = e with mu 1, sigma 1 = 1 + 0 + log(2 pi)/2 + 0
    first = math.log(2.0) + 1.0 + 0.5 * math.log(2 * math.pi)
    # non-buyer: BCE(2, 0) = log(1 + e^2); no density term
    second = math.log1p(math.exp(2.0))
    # buyer 3: BCE(-1, 1) = log(1 + e); density with mu 0.5, sigma 2 at y = 3
    log_y = math.log(3.0)
    third = math.log1p(math.e) + log_y + math.log(2.0) + 0.5 * math.log(2 * math.pi) + (log_y - 0.5) ** 2 / 8.0
    expected = (first + second + third) / 3.0
    assert float(ziln_loss(output, y)) == pytest.approx(expected, rel=1e-5)
    assert float(compute_loss("ziln", output, y)) == pytest.approx(expected, rel=1e-5)


def test_ziln_prediction_is_probability_times_lognormal_mean() -> None:
    output = torch.tensor([[0.0, 1.0, inverse_softplus(1.0)], [math.log(3.0), 2.0, inverse_softplus(0.5)]])
    expected = [0.5 * math.exp(1.5), 0.75 * math.exp(2.0 + 0.125)]
    assert ziln_predict(output).tolist() == pytest.approx(expected, rel=1e-5)
    assert predict_spend("ziln", output).tolist() == pytest.approx(expected, rel=1e-5)


def test_ziln_sigma_is_softplus_and_stays_positive() -> None:
    _, _, sigma = ziln_params(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -100.0]]))
    assert float(sigma[0]) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(sigma[1]) > 0


def test_ziln_gradient_is_finite_for_zero_spend() -> None:
    output = torch.zeros((3, 3), requires_grad=True)
    ziln_loss(output, torch.tensor([0.0, 0.0, 5.0])).backward()
    assert output.grad is not None and torch.isfinite(output.grad).all()
    # a non-buyer's row only moves the logit
    assert output.grad[0, 1] == 0 and output.grad[0, 2] == 0 and output.grad[0, 0] > 0


def test_ziln_rejects_wrong_output_shape() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        ziln_loss(torch.zeros((2, 1)), torch.zeros(2))


def test_log1p_prediction_inverts_target_and_clips_at_zero() -> None:
    output = torch.tensor([[-1.0], [math.log(11.0)], [0.0]])
    assert log1p_predict(output).tolist() == pytest.approx([0.0, 10.0, 0.0], abs=1e-5)
    assert predict_spend("huber", output).tolist() == pytest.approx([0.0, 10.0, 0.0], abs=1e-5)


def test_predictions_stay_finite_for_extreme_outputs() -> None:
    assert torch.isfinite(log1p_predict(torch.tensor([1e6]))).all()
    assert torch.isfinite(ziln_predict(torch.tensor([[50.0, 1e6, 50.0]]))).all()


def test_output_dim_and_unknown_loss() -> None:
    assert (output_dim("mse"), output_dim("huber"), output_dim("ziln")) == (1, 1, 3)
    with pytest.raises(ConfigError, match="loss='mae'.*mse, huber, ziln"):
        output_dim("mae")
    with pytest.raises(ConfigError, match="loss='rmse'"):
        compute_loss("rmse", torch.zeros(1), torch.zeros(1))


def test_initial_bias_is_the_best_constant() -> None:
    y = np.array([0.0, 0.0, math.e - 1.0, math.exp(3.0) - 1.0])
    assert initial_bias("mse", y) == pytest.approx([1.0])
    logit, mu, sigma_raw = initial_bias("ziln", np.array([0.0, 1.0, math.exp(2.0), 0.0]))
    # 2 buyers of 4 with the +0.5/+1 smoothing -> share 2.5 / 5 = 0.5 -> logit 0
    assert logit == pytest.approx(0.0, abs=1e-9)
    assert mu == pytest.approx(1.0)  # mean of log 1 and log e^2
    assert math.log1p(math.exp(sigma_raw)) == pytest.approx(1.0)  # softplus(raw) = std of (0, 2)
    assert initial_bias("ziln", np.zeros(5))[1:] == [0.0, 0.0]


def test_calibration_recovers_a_known_power_law_and_keeps_the_mean() -> None:
    rng = np.random.default_rng(0)
    predicted = rng.lognormal(1.0, 1.0, 4000)
    expected = math.exp(0.7) * (1.0 + predicted) ** 1.3  # the true E[y | p]
    actual = rng.poisson(expected).astype(float)
    calibration = fit_calibration(predicted, actual)
    assert calibration["method"] == "poisson-log1p"
    assert calibration["a"] == pytest.approx(0.7, abs=0.05) and calibration["b"] == pytest.approx(1.3, abs=0.02)
    calibrated = apply_calibration(predicted, calibration)
    assert calibrated.mean() == pytest.approx(actual.mean(), rel=1e-6)  # Poisson MLE with intercept
    assert (np.argsort(calibrated, kind="stable") == np.argsort(predicted, kind="stable")).all()  # ranking kept


def test_calibration_lifts_a_geometric_mean_to_the_expectation() -> None:
    """What MSE on log1p predicts (a geometric-mean-like value) is scaled up to the mean spend."""
    rng = np.random.default_rng(1)
    actual = np.where(rng.random(5000) < 0.6, 0.0, rng.lognormal(4.0, 1.2, 5000))
    geometric = np.full(actual.size, np.expm1(np.log1p(actual).mean())) * rng.lognormal(0.0, 0.01, actual.size)
    assert geometric.mean() < 0.2 * actual.mean()
    calibration = fit_calibration(geometric, actual)
    assert apply_calibration(geometric, calibration).mean() == pytest.approx(actual.mean(), rel=1e-6)


def test_calibration_falls_back_to_a_scale_for_a_model_that_does_not_rank() -> None:
    rng = np.random.default_rng(2)
    predicted = rng.lognormal(1.0, 1.0, 2000)
    actual = rng.lognormal(1.0, 1.0, 2000)[np.argsort(np.argsort(-predicted))]  # anti-ranked
    calibration = fit_calibration(np.sort(predicted), np.sort(actual)[::-1])
    assert calibration["b"] == 1.0  # never inverts the ranking
    assert apply_calibration(np.sort(predicted), calibration).mean() == pytest.approx(actual.mean(), rel=1e-6)


def test_calibration_identity_and_bad_input() -> None:
    none = fit_calibration(np.array([1.0, 2.0]), np.zeros(2))
    assert none["method"] == "none"
    np.testing.assert_array_equal(apply_calibration(np.array([1.0, 2.0]), none), [1.0, 2.0])
    np.testing.assert_array_equal(apply_calibration(np.array([3.0]), None), [3.0])  # bundles saved before calibration
    with pytest.raises(ValueError, match="same length"):
        fit_calibration(np.array([1.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        fit_calibration(np.array([np.nan]), np.array([1.0]))


def test_the_trend_anchor_follows_the_structural_forecast_and_is_bounded() -> None:
    from spendpred.model.losses import ANCHOR_BOUNDS, anchor_factor, fit_anchor

    anchor = fit_anchor(np.array([10.0, 30.0, 0.0]), np.array([20.0, 40.0, 20.0]))
    assert anchor == {"method": "btyd-total-ratio", "reference_ratio": 2.0, "users": 3}
    # at training the forecast sat at 2x the calibrated total; tonight it sits at 1.6x: scale by 0.8
    assert anchor_factor(anchor, predicted_total=100.0, forecast_total=160.0) == 0.8
    assert anchor_factor(anchor, 100.0, 200.0) == 1.0
    assert anchor_factor(anchor, 100.0, 1e6) == ANCHOR_BOUNDS[1] and anchor_factor(anchor, 100.0, 1.0) == ANCHOR_BOUNDS[0]
    assert anchor_factor(None, 100.0, 160.0) == 1.0 and anchor_factor(anchor, 0.0, 160.0) == 1.0
    assert fit_anchor(np.zeros(3), np.ones(3)) is None and fit_anchor(np.ones(3), np.zeros(3)) is None
    with pytest.raises(ValueError, match="finite"):
        fit_anchor(np.array([1.0, np.inf]), np.array([1.0, 1.0]))


def test_each_loss_is_one_object_in_the_table() -> None:
    """A loss is looked up once by name; the name-taking helpers are that lookup and one method."""
    from spendpred.model.losses import LOSS_FUNCTIONS, LossFunction, loss_function
    from spendpred.params import LOSSES

    assert tuple(LOSS_FUNCTIONS) == LOSSES
    output1, output3 = torch.tensor([[0.5], [2.0]]), torch.tensor([[0.0, 1.0, 0.2], [1.0, 0.5, -0.3]])
    y = torch.tensor([1.5, 0.0])
    for name, fn in LOSS_FUNCTIONS.items():
        assert isinstance(fn, LossFunction) and fn.name == name and loss_function(name) is fn and loss_function(fn) is fn
        assert output_dim(name) == fn.outputs == (3 if name == "ziln" else 1)
        output = output3 if fn.outputs == 3 else output1
        assert torch.equal(compute_loss(name, output, y, huber_delta=0.5), fn.loss(output, y, 0.5))
        assert torch.equal(predict_spend(name, output), fn.predict(output))
        assert initial_bias(name, [0.0, 2.0, 5.0]) == fn.initial_bias([0.0, 2.0, 5.0])
        assert len(fn.initial_bias([0.0, 2.0])) == fn.outputs
    for bad in ("mae", None, "ZILN"):
        with pytest.raises(ConfigError, match=r"is not supported: use one of mse, huber, ziln"):
            loss_function(bad)  # type: ignore[arg-type]
