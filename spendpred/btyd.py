"""BG/NBD × Gamma-Gamma: the classic "buy till you die" baseline for spend over a horizon.

Implemented from the papers with numpy/scipy (the ``lifetimes`` package no longer imports):

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive, a customer buys at Poisson rate ``λ ~ Gamma(r, α)`` (shape ``r``, rate ``α``); after
  each purchase they drop out with probability ``p ~ Beta(a, b)``. From a customer's
  ``(x, t_x, T)`` -- repeat purchases, time of the last one and age, all measured from the
  first purchase -- the likelihood is::

      L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
          + [x > 0] · B(a+1, b+x-1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))

  and the expected number of purchases in the next ``t`` (their eq. 10) is::

      E[Y(t)] = (a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1; t/(α+T+t))]
                / (1 + [x > 0] · a/(b+x-1) · ((α+T)/(α+t_x))^(r+x))

* **Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013 note): each
  purchase's value is ``Gamma(p, ν)`` with ``ν ~ Gamma(q, γ)``; fitted on the mean value
  ``m_x`` of repeat customers' ``x`` repeat purchases, it gives the expected value of a
  customer's future purchases ``E[M] = p (γ + x m_x) / (p x + q - 1)``.

Expected spend over ``H`` days is ``E[Y(H)] · E[M]``. Conventions (as ``lifetimes``'
``summary_data_from_transaction_data``): time is in **days**; purchases are aggregated per
calendar day (several orders on one day are one purchase); the first purchase day is the
customer's birth and is excluded from ``frequency`` and from ``monetary_value`` (the mean
spend of the repeat days). Users without a purchase by the as-of date are outside the model
and are predicted 0.

Both fits are maximum likelihood over log-parameters (L-BFGS-B from several starting points,
best optimum kept); ``penalizer`` adds ``penalizer · Σ θ²`` on the parameters as lifetimes'
``penalizer_coef`` does (0 = plain ML).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from spendpred.errors import DataError, ModelError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS: tuple[str, ...] = ("frequency", "recency", "T", "monetary_value")
"""Columns of :func:`rfm_summary`'s result (index: user id)."""

_LOG_BOUND = 15.0  # log-parameters are searched in [-15, 15]


# --------------------------------------------------------------------------- inputs


def _as_array(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} has {int(bad.sum())} non-finite value(s), first at position {first}")
    return array


def _check_rfm(
    frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike  # noqa: N803 - the papers' name
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x, t_x, T)`` as float arrays; raises ``DataError`` when they break 0 <= t_x <= T."""
    x, t_x, age = _as_array(frequency, "frequency"), _as_array(recency, "recency"), _as_array(T, "T")
    if not x.shape == t_x.shape == age.shape:
        raise DataError(f"frequency, recency and T must have the same length, got {x.size}, {t_x.size}, {age.size}")
    if x.size == 0:
        raise DataError("no customers: frequency, recency and T are empty")
    checks = (
        (x < 0, "frequency is negative"),
        (x != np.round(x), "frequency is not a whole number"),
        (t_x < 0, "recency is negative"),
        (age < t_x, "recency is larger than T (the last purchase is after the as-of date)"),
        ((x == 0) & (t_x != 0), "recency is not 0 although frequency is 0"),
    )
    for bad, problem in checks:
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"customer at position {first}: {problem} (frequency={x[first]:g}, recency={t_x[first]:g}, "
                f"T={age[first]:g}); build the inputs with spendpred.btyd.rfm_summary"
            )
    return x, t_x, age


def rfm_summary(
    orders: pd.DataFrame,
    as_of: str | dt.date,
    user_column: str = "user_id",
    time_column: str = "ordered_at",
    amount_column: str = "amount",
) -> pd.DataFrame:
    """Summarise purchases up to the end of ``as_of`` into BG/NBD and Gamma-Gamma inputs.

    ``orders`` holds one row per (completed) purchase; rows at or after ``as_of + 1 day`` are
    ignored (the point-in-time rule). Purchases are aggregated per calendar day. Returns a
    frame indexed by user id (string) with float columns ``frequency`` (repeat purchase days),
    ``recency`` (days from the first to the last purchase day), ``T`` (days from the first
    purchase day to ``as_of``) and ``monetary_value`` (mean spend of the repeat days, 0 when
    there is none); users without a purchase by ``as_of`` are absent. Raises ``DataError`` for
    a missing column, an unparsable timestamp or a negative or non-finite amount.
    """
    import pandas as pd

    missing = [c for c in (user_column, time_column, amount_column) if c not in orders.columns]
    if missing:
        raise DataError(f"the orders frame lacks column(s) {missing}: pass {user_column}, {time_column}, {amount_column}")
    day = pd.Timestamp(as_of).normalize()
    try:
        stamps = pd.to_datetime(orders[time_column])
    except (TypeError, ValueError) as exc:
        raise DataError(f"column {time_column!r} has a value that is not a timestamp: {exc}") from exc
    if getattr(stamps.dt, "tz", None) is not None:  # timezone-aware: compare in UTC wall time
        stamps = stamps.dt.tz_convert(None)
    amounts = pd.to_numeric(orders[amount_column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(amounts) | (amounts < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"column {amount_column!r} row {first}: amount {orders[amount_column].iloc[first]!r} is not a "
            "number >= 0; drop or fix it (spend is never negative)"
        )
    keep = (stamps < day + pd.Timedelta(days=1)).to_numpy() & stamps.notna().to_numpy()
    frame = pd.DataFrame(
        {
            "user_id": orders[user_column].astype(str).to_numpy()[keep],
            "day": stamps.dt.normalize().to_numpy()[keep],
            "amount": amounts[keep],
        }
    )
    empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in SUMMARY_COLUMNS})
    if frame.empty:
        return empty.rename_axis("user_id")
    daily = frame.groupby(["user_id", "day"], sort=True)["amount"].sum().reset_index()
    grouped = daily.groupby("user_id", sort=True)
    first_day = grouped["day"].min()
    last_day = grouped["day"].max()
    n_days = grouped["day"].size()
    total = grouped["amount"].sum()
    first_spend = daily.drop_duplicates("user_id", keep="first").set_index("user_id")["amount"]
    frequency = (n_days - 1).astype(np.float64)
    repeat_spend = (total - first_spend).clip(lower=0.0)
    monetary = np.where(frequency > 0, repeat_spend / frequency.where(frequency > 0, 1.0), 0.0)
    return pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last_day - first_day).dt.days.astype(np.float64),
            "T": (day - first_day).dt.days.astype(np.float64),
            "monetary_value": monetary,
        }
    ).rename_axis("user_id")


# --------------------------------------------------------------------------- BG/NBD


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters: purchase rate ``Gamma(r, alpha)`` (alpha in days), dropout ``Beta(a, b)``."""

    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        """The parameters as a plain dict."""
        return asdict(self)


def bgnbd_log_likelihood(
    params: BGNBDParams, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike  # noqa: N803
) -> np.ndarray:
    """Return each customer's BG/NBD log-likelihood ``ln L(r, α, a, b | x, t_x, T)``.

    Raises ``DataError`` for inputs that break ``0 <= t_x <= T`` or ``x`` whole and >= 0, and
    ``ValueError`` for non-positive parameters.
    """
    x, t_x, age = _check_rfm(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if min(r, alpha, a, b) <= 0:
        raise ValueError(f"BG/NBD parameters must be > 0, got {params}")
    return _bgnbd_ll(np.log([r, alpha, a, b]), x, t_x, age)


def _bgnbd_ll(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
    r, alpha, a, b = np.exp(log_params)
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    beta_ab = special.betaln(a, b)
    alive = special.betaln(a, b + x) - beta_ab - (r + x) * np.log(alpha + age)
    repeat = x > 0
    dropped = np.full_like(x, -np.inf)
    xr = x[repeat]
    dropped[repeat] = special.betaln(a + 1.0, b + xr - 1.0) - beta_ab - (r + xr) * np.log(alpha + t_x[repeat])
    return common + np.logaddexp(alive, dropped)


def _fit_log_params(
    objective: Callable[[np.ndarray], float], starts: Sequence[np.ndarray], what: str
) -> tuple[np.ndarray, float, bool]:
    """Minimise ``objective`` over log-parameters from each start; return (best, value, converged)."""
    best: optimize.OptimizeResult | None = None
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(starts[0])
    for start in starts:
        with np.errstate(all="ignore"):
            result = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds)
        if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise ModelError(f"{what} fit failed: the likelihood is not finite at any starting point; check the inputs")
    if not best.success:
        logger.warning("%s fit did not fully converge: %s", what, best.message)
    return best.x, float(best.fun), bool(best.success)


@dataclass(frozen=True)
class BGNBDFit:
    """A fitted BG/NBD model: parameters, total log-likelihood and customer count."""

    params: BGNBDParams
    log_likelihood: float
    customers: int
    converged: bool

    def expected_purchases(
        self, t: float, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike  # noqa: N803
    ) -> np.ndarray:
        """Expected purchases in the next ``t`` days per customer (see :func:`bgnbd_expected_purchases`)."""
        return bgnbd_expected_purchases(self.params, t, frequency, recency, T)


def fit_bgnbd(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803
    penalizer: float = 0.0,
) -> BGNBDFit:
    """Fit BG/NBD by maximum likelihood on ``(x, t_x, T)`` (days); return a :class:`BGNBDFit`.

    Raises ``DataError`` for invalid inputs or fewer than 2 customers, ``ModelError`` when the
    likelihood cannot be evaluated at any starting point.
    """
    x, t_x, age = _check_rfm(frequency, recency, T)
    if x.size < 2:
        raise DataError(f"BG/NBD needs at least 2 customers, got {x.size}")
    if penalizer < 0:
        raise ValueError(f"penalizer must be >= 0, got {penalizer}")
    n = x.size

    def objective(theta: np.ndarray) -> float:
        value = -float(np.sum(_bgnbd_ll(theta, x, t_x, age))) / n
        if penalizer:
            value += penalizer * float(np.sum(np.exp(theta) ** 2)) / n
        return value if np.isfinite(value) else 1e300

    scale = max(float(np.mean(age)), 1.0)
    starts = [np.log([r0, scale * s, a0, b0]) for r0, s, a0, b0 in ((1.0, 1.0, 1.0, 1.0), (0.3, 0.1, 0.8, 2.5), (2.0, 3.0, 2.0, 5.0))]
    theta, value, converged = _fit_log_params(objective, starts, "BG/NBD")
    params = BGNBDParams(*(float(v) for v in np.exp(theta)))
    fit = BGNBDFit(params, float(np.sum(_bgnbd_ll(theta, x, t_x, age))), n, converged)
    logger.info(
        "BG/NBD fitted on %d customers (%.1f%% repeaters): r=%.4g alpha=%.4g days a=%.4g b=%.4g, log-likelihood %.2f",
        n, 100.0 * float(np.mean(x > 0)), params.r, params.alpha, params.a, params.b, fit.log_likelihood,
    )
    return fit


def _log_dropout_odds(params: BGNBDParams, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
    """``ln( a/(b+x-1) · ((α+T)/(α+t_x))^(r+x) )`` for repeaters, ``-inf`` otherwise."""
    out = np.full_like(x, -np.inf)
    rep = x > 0
    xr = x[rep]
    out[rep] = (
        np.log(params.a) - np.log(params.b + xr - 1.0)
        + (params.r + xr) * (np.log(params.alpha + age[rep]) - np.log(params.alpha + t_x[rep]))
    )
    return out


def bgnbd_probability_alive(
    params: BGNBDParams, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike  # noqa: N803
) -> np.ndarray:
    """Return P(alive at T | x, t_x, T) per customer (1 for customers with no repeat purchase).

    Raises ``DataError`` for invalid inputs.
    """
    x, t_x, age = _check_rfm(frequency, recency, T)
    return special.expit(-_log_dropout_odds(params, x, t_x, age))


def bgnbd_expected_purchases(
    params: BGNBDParams, t: float, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike  # noqa: N803
) -> np.ndarray:
    """Return each customer's expected number of purchases (days) in ``(T, T + t]``, eq. 10 of the paper.

    Raises ``DataError`` for invalid inputs and ``ValueError`` for ``t < 0``.
    """
    x, t_x, age = _check_rfm(frequency, recency, T)
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"t must be a number of days >= 0, got {t!r}")
    if t == 0:
        return np.zeros_like(x)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < 1e-7:  # removable singularity: evaluate just beside it
        a = 1.0 + 1e-7
    # Pfaff: ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; c; z) = 2F1(r+x, a-1; c; -t/(α+T)), c = a+b+x-1
    c = a + b + x - 1.0
    with np.errstate(all="ignore"):
        hyp = special.hyp2f1(r + x, a - 1.0, c, -t / (alpha + age))
        bad = ~np.isfinite(hyp)
        if bad.any():
            z = t / (alpha + age[bad] + t)
            log_pre = (r + x[bad]) * (np.log(alpha + age[bad]) - np.log(alpha + age[bad] + t))
            hyp[bad] = np.exp(log_pre) * special.hyp2f1(r + x[bad], b + x[bad], c[bad], z)
    if not np.isfinite(hyp).all():
        raise ModelError(f"BG/NBD expected purchases are not finite for some customers with parameters {params}")
    numerator = c / (a - 1.0) * (1.0 - hyp)
    return np.clip(numerator * special.expit(-_log_dropout_odds(params, x, t_x, age)), 0.0, None)


# --------------------------------------------------------------------------- Gamma-Gamma


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: purchase value ``Gamma(p, ν)`` with ``ν ~ Gamma(q, gamma)``."""

    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        """The parameters as a plain dict."""
        return asdict(self)

    @property
    def population_mean(self) -> float:
        """Mean purchase value of a new customer, ``p·γ/(q-1)`` (``nan`` when ``q <= 1``)."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("nan")


def _check_monetary(frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, m = _as_array(frequency, "frequency"), _as_array(monetary, "monetary_value")
    if x.shape != m.shape:
        raise DataError(f"frequency and monetary_value must have the same length, got {x.size} and {m.size}")
    if (x < 0).any() or (m < 0).any():
        raise DataError("frequency and monetary_value must be >= 0")
    return x, m


def gamma_gamma_log_likelihood(params: GammaGammaParams, frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> np.ndarray:
    """Return each customer's Gamma-Gamma log-density of the mean value ``m_x`` of ``x`` purchases.

    Needs ``x >= 1`` and ``m_x > 0``. Raises ``DataError`` otherwise.
    """
    x, m = _check_monetary(frequency, monetary)
    if (x < 1).any() or (m <= 0).any():
        raise DataError("Gamma-Gamma needs frequency >= 1 and monetary_value > 0 for every customer")
    return _gg_ll(np.log([params.p, params.q, params.gamma]), x, m)


def _gg_ll(log_params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    p, q, gamma = np.exp(log_params)
    px = p * x
    return (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
        + q * np.log(gamma) + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + m * x)
    )


@dataclass(frozen=True)
class GammaGammaFit:
    """A fitted Gamma-Gamma model: parameters, total log-likelihood, customers used."""

    params: GammaGammaParams
    log_likelihood: float
    customers: int
    converged: bool
    fallback_mean: float

    def expected_value(self, frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> np.ndarray:
        """Expected value of each customer's future purchases (see :func:`gamma_gamma_expected_value`)."""
        return gamma_gamma_expected_value(self.params, frequency, monetary, self.fallback_mean)


def fit_gamma_gamma(frequency: npt.ArrayLike, monetary: npt.ArrayLike, penalizer: float = 0.0) -> GammaGammaFit:
    """Fit Gamma-Gamma by maximum likelihood on customers with ``x >= 1`` and ``m_x > 0``.

    Other customers are ignored. Returns a :class:`GammaGammaFit`. Raises ``DataError`` when
    fewer than 2 customers qualify, ``ModelError`` when the fit fails.
    """
    x, m = _check_monetary(frequency, monetary)
    use = (x >= 1) & (m > 0)
    if int(use.sum()) < 2:
        raise DataError(f"Gamma-Gamma needs at least 2 repeat customers with spend > 0, got {int(use.sum())}")
    x, m = x[use], m[use]
    n = x.size

    def objective(theta: np.ndarray) -> float:
        value = -float(np.sum(_gg_ll(theta, x, m))) / n
        if penalizer:
            value += penalizer * float(np.sum(np.exp(theta) ** 2)) / n
        return value if np.isfinite(value) else 1e300

    mean = float(np.mean(m))
    starts = [np.log([p0, q0, g0]) for p0, q0, g0 in ((1.0, 2.0, mean), (5.0, 3.0, mean), (0.5, 5.0, 4.0 * mean))]
    theta, _value, converged = _fit_log_params(objective, starts, "Gamma-Gamma")
    params = GammaGammaParams(*(float(v) for v in np.exp(theta)))
    if params.q <= 1.0:
        logger.warning(
            "Gamma-Gamma q=%.3g <= 1: the population mean is infinite; customers without repeat purchases "
            "get the observed mean %.2f instead", params.q, mean,
        )
    fit = GammaGammaFit(params, float(np.sum(_gg_ll(theta, x, m))), n, converged, mean)
    logger.info(
        "Gamma-Gamma fitted on %d repeat customers: p=%.4g q=%.4g gamma=%.4g (population mean %.2f)",
        n, params.p, params.q, params.gamma, params.population_mean,
    )
    return fit


def gamma_gamma_expected_value(
    params: GammaGammaParams, frequency: npt.ArrayLike, monetary: npt.ArrayLike, fallback_mean: float | None = None
) -> np.ndarray:
    """Return ``E[M | x, m_x] = p (γ + x m_x) / (p x + q - 1)`` per customer.

    Customers with ``x = 0`` get the population mean ``pγ/(q-1)``, or ``fallback_mean`` when
    ``q <= 1``. Raises ``DataError`` for invalid inputs, ``ModelError`` when ``q <= 1`` and
    no fallback is given.
    """
    x, m = _check_monetary(frequency, monetary)
    p, q, gamma = params.p, params.q, params.gamma
    out = np.empty_like(x)
    rep = x > 0
    out[rep] = p * (gamma + x[rep] * m[rep]) / (p * x[rep] + q - 1.0)
    if (~rep).any():
        if q > 1.0:
            out[~rep] = params.population_mean
        elif fallback_mean is not None:
            out[~rep] = fallback_mean
        else:
            raise ModelError(f"Gamma-Gamma q={q:g} <= 1 has no population mean: pass fallback_mean")
    return out


# --------------------------------------------------------------------------- combined


@dataclass(frozen=True)
class BTYDModel:
    """BG/NBD (purchase days) × Gamma-Gamma (value per purchase day), fitted as of a date."""

    bgnbd: BGNBDFit
    gamma_gamma: GammaGammaFit

    def predict_spend(self, summary: pd.DataFrame, horizon_days: float) -> np.ndarray:
        """Return expected spend in the next ``horizon_days`` for each row of an :func:`rfm_summary` frame.

        Raises ``DataError`` when a summary column is missing or invalid.
        """
        missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
        if missing:
            raise DataError(f"the summary lacks column(s) {missing}: build it with spendpred.btyd.rfm_summary")
        purchases = self.bgnbd.expected_purchases(horizon_days, summary["frequency"], summary["recency"], summary["T"])
        value = self.gamma_gamma.expected_value(summary["frequency"], summary["monetary_value"])
        return purchases * value

    def describe(self) -> dict[str, Any]:
        """Parameters and fit statistics as a JSON-able dict."""
        return {
            "bgnbd": {**self.bgnbd.params.as_dict(), "log_likelihood": self.bgnbd.log_likelihood,
                      "customers": self.bgnbd.customers, "converged": self.bgnbd.converged, "time_unit": "day"},
            "gamma_gamma": {**self.gamma_gamma.params.as_dict(), "log_likelihood": self.gamma_gamma.log_likelihood,
                            "customers": self.gamma_gamma.customers, "converged": self.gamma_gamma.converged},
        }


def fit_btyd(summary: pd.DataFrame, penalizer: float = 0.0) -> BTYDModel:
    """Fit BG/NBD on every customer and Gamma-Gamma on the repeat customers of an :func:`rfm_summary` frame.

    Returns a :class:`BTYDModel`. Raises ``DataError`` for a malformed or too small summary,
    ``ModelError`` when a fit fails.
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise DataError(f"the summary lacks column(s) {missing}: build it with spendpred.btyd.rfm_summary")
    bgnbd = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"], penalizer=penalizer)
    gamma_gamma = fit_gamma_gamma(summary["frequency"], summary["monetary_value"], penalizer=penalizer)
    return BTYDModel(bgnbd, gamma_gamma)


def btyd_baseline(
    orders: pd.DataFrame,
    as_of: str | dt.date,
    horizon_days: int,
    user_ids: Sequence[str] | npt.ArrayLike,
    penalizer: float = 0.0,
) -> tuple[np.ndarray, BTYDModel]:
    """Fit BG/NBD × Gamma-Gamma on purchases up to ``as_of`` and predict spend in ``(as_of, as_of + H]``.

    ``orders`` holds the completed purchases (``user_id``, ``ordered_at``, ``amount``); only
    rows before ``as_of + 1 day`` are used. Returns ``(predictions aligned with user_ids,
    model)``; users without a purchase by ``as_of`` get 0. Raises as :func:`rfm_summary` and
    :func:`fit_btyd`.
    """
    summary = rfm_summary(orders, as_of)
    model = fit_btyd(summary, penalizer=penalizer)
    spend = model.predict_spend(summary, float(horizon_days))
    import pandas as pd

    by_user = pd.Series(spend, index=summary.index)
    ids = pd.Index([str(u) for u in np.asarray(user_ids, dtype=object)])
    return by_user.reindex(ids).fillna(0.0).to_numpy(dtype=np.float64), model


__all__ = [
    "BGNBDFit",
    "BGNBDParams",
    "BTYDModel",
    "GammaGammaFit",
    "GammaGammaParams",
    "SUMMARY_COLUMNS",
    "bgnbd_expected_purchases",
    "bgnbd_log_likelihood",
    "bgnbd_probability_alive",
    "btyd_baseline",
    "fit_bgnbd",
    "fit_btyd",
    "fit_gamma_gamma",
    "gamma_gamma_expected_value",
    "gamma_gamma_log_likelihood",
    "rfm_summary",
]
