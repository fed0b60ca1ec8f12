"""Loss functions and output-to-spend mappings for the spend regressor (pure functions).

Every loss takes the raw head output and the true spend in currency units (``y >= 0``):

- ``mse``: the head outputs one value ``z`` per user, trained with the mean squared error
  against ``log1p(y)``; the predicted spend is ``expm1(z)`` clipped at 0.
- ``huber``: as ``mse`` but with the Huber loss (``delta`` in log1p units).
- ``ziln`` (the default): zero-inflated lognormal. The head outputs ``(logit, mu, sigma_raw)`` with
  ``sigma = softplus(sigma_raw)``; the loss is ``BCE(logit, y > 0)`` plus, for buyers,
  the negative log lognormal density ``log y + log sigma + log(2 pi)/2 +
  (log y - mu)^2 / (2 sigma^2)``, both averaged over all users in the batch. The
  predicted spend is the expectation ``sigmoid(logit) * exp(mu + sigma^2 / 2)``.

``predicted_spend`` is meant as currency: the expected spend over the horizon. MSE or Huber
on ``log1p(y)`` predicts something like a geometric mean, which for zero-inflated,
heavy-tailed spend lies far below the expectation (about 20x on the demo data), so every
trained model is calibrated on its validation users before it is saved
(``fit_calibration``/``apply_calibration``: ``exp(a) * (1 + p) ** b``, a monotone map that
keeps the ranking and makes the mean prediction equal the mean spend).

Each loss is one object in ``LOSS_FUNCTIONS`` (``LossFunction``: head width, training loss,
predicted spend, starting bias), looked up once by name (``loss_function``) where a name
enters: the training configuration, a saved bundle. ``compute_loss``, ``predict_spend``,
``output_dim`` and ``initial_bias`` are that lookup and one method, for callers holding a name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from spendpred.errors import ConfigError
from spendpred.params import LOSSES, Loss  # the one list of loss names (the parameter spec)


SIGMA_MIN = 1e-4
"""Lower bound on the ZILN scale, so that the density never divides by zero."""

MAX_LOG_SPEND = 80.0
"""Upper bound on a log-spend before ``exp`` (keeps predictions finite in float32)."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def check_loss_name(loss: str) -> str:
    """Return ``loss`` unchanged when supported; raises ``ConfigError`` naming the choices."""
    return loss_function(loss).name


def output_dim(loss: str) -> int:
    """Return how many values the head outputs per user for ``loss`` (1, or 3 for ZILN).

    Raises ``ConfigError`` for an unknown loss.
    """
    return loss_function(loss).outputs


def mse_log1p_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the mean squared error between ``output`` (shape (n,) or (n, 1)) and ``log1p(y)``."""
    return F.mse_loss(output.reshape(-1), torch.log1p(y.reshape(-1)))


def huber_log1p_loss(output: torch.Tensor, y: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Return the mean Huber loss (threshold ``delta``) between ``output`` and ``log1p(y)``."""
    return F.huber_loss(output.reshape(-1), torch.log1p(y.reshape(-1)), delta=delta)


def ziln_params(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a ZILN head output of shape (n, 3) into ``(logit, mu, sigma)`` (sigma > 0).

    Raises ``ValueError`` when the output does not have 3 columns.
    """
    if output.ndim != 2 or output.shape[1] != 3:
        raise ValueError(f"a ZILN head output must have shape (n, 3), got {tuple(output.shape)}")
    logit, mu, sigma_raw = output.unbind(dim=1)
    sigma = F.softplus(sigma_raw).clamp_min(SIGMA_MIN)
    return logit, mu, sigma


def ziln_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the zero-inflated lognormal negative log-likelihood, averaged over the batch.

    ``output`` has shape (n, 3): purchase logit, mu, raw sigma. Raises ``ValueError`` on a
    wrongly shaped output.
    """
    logit, mu, sigma = ziln_params(output)
    y = y.reshape(-1).to(logit.dtype)
    positive = (y > 0).to(logit.dtype)
    classification = F.binary_cross_entropy_with_logits(logit, positive, reduction="none")
    log_y = torch.log(torch.where(y > 0, y, torch.ones_like(y)))
    nll = log_y + torch.log(sigma) + _HALF_LOG_2PI + (log_y - mu) ** 2 / (2.0 * sigma**2)
    return (classification + positive * nll).mean()


def compute_loss(loss: str, output: torch.Tensor, y: torch.Tensor, huber_delta: float = 1.0) -> torch.Tensor:
    """Return the scalar training loss ``loss`` of ``output`` against spend ``y``.

    Raises ``ConfigError`` for an unknown loss.
    """
    return loss_function(loss).loss(output, y, huber_delta)


def log1p_predict(output: torch.Tensor) -> torch.Tensor:
    """Return the spend predicted by an ``mse``/``huber`` head: ``expm1(output)`` clipped at 0, shape (n,)."""
    return torch.expm1(output.reshape(-1).clamp(max=MAX_LOG_SPEND)).clamp_min(0.0)


def ziln_predict(output: torch.Tensor) -> torch.Tensor:
    """Return the expected spend under the ZILN head output: ``sigmoid(logit) * exp(mu + sigma^2/2)``."""
    logit, mu, sigma = ziln_params(output)
    return torch.sigmoid(logit) * torch.exp((mu + 0.5 * sigma**2).clamp(max=MAX_LOG_SPEND))


def predict_spend(loss: str, output: torch.Tensor) -> torch.Tensor:
    """Return predicted spend (currency units, >= 0, shape (n,)) from a raw head output.

    Raises ``ConfigError`` for an unknown loss.
    """
    return loss_function(loss).predict(output)


def initial_bias(loss: str, y: Sequence[float] | np.ndarray) -> list[float]:
    """Return a starting bias for the head's last layer that fits the label distribution.

    ``mse``/``huber``: the mean of ``log1p(y)``. ``ziln``: the log-odds of buying, the mean
    log spend of buyers and the raw sigma whose softplus is their log-spend standard
    deviation. Starting there makes the untrained model the best constant predictor, so
    training only has to learn the differences between users. Raises ``ConfigError`` for
    an unknown loss.
    """
    return loss_function(loss).initial_bias(y)


class LossFunction:
    """One regression loss: ``name``, the head's width ``outputs``, and what training and scoring need of it."""

    name: ClassVar[Loss]
    outputs: ClassVar[int] = 1

    def loss(self, output: torch.Tensor, y: torch.Tensor, huber_delta: float = 1.0) -> torch.Tensor:
        """Return the scalar training loss of head ``output`` against spend ``y``."""
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """Return the predicted spend (currency, >= 0, shape (n,)) of head ``output``: ``expm1`` clipped at 0."""
        return log1p_predict(output)

    def initial_bias(self, y: Sequence[float] | np.ndarray) -> list[float]:
        """Return the head's starting bias: the mean of ``log1p(y)`` (the best constant on log1p spend)."""
        values = np.asarray(y, dtype=np.float64).reshape(-1)
        return [float(np.log1p(values).mean()) if values.size else 0.0]

    def __repr__(self) -> str:
        return f"<loss {self.name}>"


class MSELoss(LossFunction):
    """``mse``: mean squared error against ``log1p(y)``."""

    name = "mse"

    def loss(self, output: torch.Tensor, y: torch.Tensor, huber_delta: float = 1.0) -> torch.Tensor:
        return mse_log1p_loss(output, y)


class HuberLoss(LossFunction):
    """``huber``: Huber loss (threshold ``huber_delta``) against ``log1p(y)``."""

    name = "huber"

    def loss(self, output: torch.Tensor, y: torch.Tensor, huber_delta: float = 1.0) -> torch.Tensor:
        return huber_log1p_loss(output, y, delta=huber_delta)


class ZILNLoss(LossFunction):
    """``ziln``: zero-inflated lognormal; the head outputs ``(logit, mu, sigma_raw)``."""

    name = "ziln"
    outputs = 3

    def loss(self, output: torch.Tensor, y: torch.Tensor, huber_delta: float = 1.0) -> torch.Tensor:
        return ziln_loss(output, y)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return ziln_predict(output)

    def initial_bias(self, y: Sequence[float] | np.ndarray) -> list[float]:
        """Return the log-odds of buying, the buyers' mean log spend and the raw sigma of their log-spend spread."""
        values = np.asarray(y, dtype=np.float64).reshape(-1)
        n = values.size
        buyers = values[values > 0]
        share = (buyers.size + 0.5) / (n + 1.0)
        logit = math.log(share / (1.0 - share))
        if buyers.size == 0:
            return [logit, 0.0, 0.0]
        log_y = np.log(buyers)
        mu = float(log_y.mean())
        std = max(float(log_y.std()), 0.1)
        sigma_raw = std + math.log(-math.expm1(-std))  # inverse softplus
        return [logit, mu, sigma_raw]


LOSS_FUNCTIONS: dict[str, LossFunction] = {fn.name: fn for fn in (MSELoss(), HuberLoss(), ZILNLoss())}
"""The loss object of each name of the parameter spec's ``LOSSES``."""
if tuple(LOSS_FUNCTIONS) != LOSSES:  # the spec names what this module implements, in its order
    raise ImportError(f"spendpred.model.losses implements {tuple(LOSS_FUNCTIONS)} but the spec names {LOSSES}")


def loss_function(loss: str | LossFunction) -> LossFunction:
    """Return the loss object of name ``loss`` (a ``LossFunction`` as is); raises ``ConfigError`` naming the choices."""
    if isinstance(loss, LossFunction):
        return loss
    try:
        return LOSS_FUNCTIONS[loss]
    except (KeyError, TypeError):
        raise ConfigError(f"loss={loss!r} is not supported: use one of {', '.join(LOSSES)}") from None


CALIBRATION_METHOD = "poisson-log1p"
"""Name of the calibration map ``exp(a) * (1 + p) ** b`` stored in ``bundle.json``."""

MIN_CALIBRATION_SLOPE = 0.05
"""Below this fitted slope ``b`` the ranking would flatten: only the scale is calibrated."""


def fit_calibration(predicted: np.ndarray, actual: np.ndarray, max_iter: int = 100) -> dict[str, float | str | int]:
    """Return ``{"method", "a", "b", "users", ...}`` mapping predicted to expected spend.

    Fits ``E[y | p] = exp(a + b * log1p(p))`` by Poisson maximum likelihood (Newton steps on
    two parameters, an intercept included, so the mean calibrated prediction equals the
    mean of ``actual`` on these users). When the slope is below ``MIN_CALIBRATION_SLOPE``
    (a model that ranks badly), ``b`` is fixed at 1 and only the scale is fitted. With no
    spend at all the identity is returned. Raises ``ValueError`` on mismatched or
    non-finite inputs.
    """
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    y = np.asarray(actual, dtype=np.float64).reshape(-1)
    if p.shape != y.shape or not (np.isfinite(p).all() and np.isfinite(y).all()):
        raise ValueError("calibration needs finite predicted and actual spend of the same length")
    if y.size == 0 or y.sum() <= 0:
        return {"method": "none", "users": int(y.size)}
    out: dict[str, float | str | int] = {"method": CALIBRATION_METHOD, "users": int(y.size)}
    u = np.log1p(np.clip(p, 0.0, None))
    x = np.column_stack([np.ones_like(u), u])
    beta = np.array([math.log(y.mean()), 0.0])
    for _ in range(max_iter):
        eta = np.clip(x @ beta, -MAX_LOG_SPEND, MAX_LOG_SPEND)
        mu = np.exp(eta)
        gradient = x.T @ (y - mu)
        hessian = (x * mu[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    a, b = float(beta[0]), float(beta[1])
    if not (math.isfinite(a) and math.isfinite(b)) or b < MIN_CALIBRATION_SLOPE:
        # scale only: exp(a) * (1 + p) sums to the total spend
        b = 1.0
        a = math.log(y.sum() / float(np.sum(1.0 + np.clip(p, 0.0, None))))
    calibrated = apply_calibration(p, {"a": a, "b": b})
    out.update(
        a=a,
        b=b,
        mean_actual=float(y.mean()),
        mean_predicted_before=float(p.mean()),
        mean_predicted_after=float(calibrated.mean()),
    )
    return out


def apply_calibration(predicted: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Return ``exp(a) * (1 + p) ** b`` for predicted spend ``p``.

    The identity when ``calibration`` is None (a bundle saved before calibration existed) or
    its method is ``none``.
    """
    p = np.asarray(predicted, dtype=np.float64)
    if not calibration or calibration.get("method") != CALIBRATION_METHOD:
        return p
    a, b = float(calibration["a"]), float(calibration["b"])
    return np.exp(np.clip(a + b * np.log1p(np.clip(p, 0.0, None)), -MAX_LOG_SPEND, MAX_LOG_SPEND))


ANCHOR_METHOD = "btyd-total-ratio"
"""Name of the population trend anchor stored in ``bundle.json`` (``anchor``)."""

ANCHOR_BOUNDS = (0.25, 4.0)
"""The anchor never scales a night's predictions by less than a quarter or more than four times."""


def fit_anchor(calibrated: np.ndarray, forecast: np.ndarray) -> dict[str, float | str | int] | None:
    """Return the population trend anchor of a model: how its total compares with BG/NBD x Gamma-Gamma's.

    ``calibrated`` is the model's calibrated predicted spend on the validation users,
    ``forecast`` the hybrid ``btyd_spend`` forecast for the same users. The model was
    calibrated on these users' real spend, so ``reference_ratio = sum(forecast) /
    sum(calibrated)`` is how far the structural forecast sat from a calibrated total at
    training time. ``None`` when either total is zero (nothing to anchor to).

    Why: the head learns the spend of users at the tenures and recencies of the training
    window; when a whole cohort ages past them (CDNOW: one cohort whose spending decays),
    its calibration drifts, while BG/NBD's dropout process extrapolates the ageing. At scoring,
    :func:`anchor_factor` moves the model's population total with the structural forecast's,
    keeping every user's rank.
    """
    c = np.asarray(calibrated, dtype=np.float64).reshape(-1)
    f = np.asarray(forecast, dtype=np.float64).reshape(-1)
    if c.shape != f.shape or not (np.isfinite(c).all() and np.isfinite(f).all()):
        raise ValueError("the trend anchor needs finite predictions and forecasts of the same length")
    total_c, total_f = float(c.sum()), float(f.sum())
    if total_c <= 0 or total_f <= 0:
        return None
    return {"method": ANCHOR_METHOD, "reference_ratio": total_f / total_c, "users": int(c.size)}


def anchor_factor(anchor: dict | None, predicted_total: float, forecast_total: float) -> float:
    """Return the factor a night's predictions are scaled by so their total follows the structural forecast's.

    ``(forecast_total / predicted_total) / reference_ratio``, clipped to ``ANCHOR_BOUNDS`` and
    rounded to 6 decimals (so equal inputs give one factor however they were summed); 1.0
    without an anchor or with a zero total.
    """
    if not anchor or anchor.get("method") != ANCHOR_METHOD or predicted_total <= 0 or forecast_total <= 0:
        return 1.0
    factor = (forecast_total / predicted_total) / float(anchor["reference_ratio"])
    if not math.isfinite(factor):
        return 1.0
    return round(min(max(factor, ANCHOR_BOUNDS[0]), ANCHOR_BOUNDS[1]), 6)
