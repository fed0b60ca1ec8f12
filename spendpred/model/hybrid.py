"""Hybrid features: what the classic customer-value models know, given to the regressor's head.

The head already sees the pooled text and the snapshot's numeric features. These derived
columns add what BG/NBD x Gamma-Gamma, past-spend rules and trend heuristics know, so the
hybrid starts from the peers' knowledge instead of having to rediscover it:

* ``btyd_p_alive``, ``btyd_purchases`` (expected purchase days over the horizon H),
  ``btyd_value`` (expected value of a purchase day) and ``btyd_spend`` (their product: the
  BG/NBD x Gamma-Gamma forecast), from each user's ``(x, t_x, T, m)``;
* ``mean_interval`` (days between purchase days) and ``interval_overdue`` (days since the
  last purchase in units of the user's own mean interval);
* ``trend_spend`` and ``trend_frequency``: the last 90 days against a quarter of the last
  365 (above 1: accelerating).

Point in time: the inputs are snapshot columns, so they use only rows up to the snapshot's
as-of date, and the BG/NBD and Gamma-Gamma **parameters are fitted on the training users'
training snapshot only** (``HybridFeatures.fit``) and stored in the bundle; scoring applies
the stored parameters to each user's own history as of the scoring date.

The snapshot columns read (``SOURCE_COLUMNS``): ``purchase_days`` (distinct days with a
completed order), ``first_purchase_days`` (days from the first completed order to the as-of
date), ``recency_days`` (days since the last one), ``repeat_value`` (mean spend of the repeat
purchase days), ``monetary_90d``/``monetary_365d`` and ``frequency_90d``/``frequency_365d``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spendpred.errors import DataError

logger = logging.getLogger(__name__)

SOURCE_COLUMNS: tuple[str, ...] = (
    "purchase_days",
    "first_purchase_days",
    "recency_days",
    "repeat_value",
    "monetary_90d",
    "monetary_365d",
    "frequency_90d",
    "frequency_365d",
)
"""Snapshot columns the hybrid features are computed from."""

DERIVED_COLUMNS: tuple[str, ...] = (
    "btyd_p_alive",
    "btyd_purchases",
    "btyd_value",
    "btyd_spend",
    "mean_interval",
    "interval_overdue",
    "trend_spend",
    "trend_frequency",
)
"""Columns :meth:`HybridFeatures.transform` adds."""


def has_sources(df: pd.DataFrame) -> bool:
    """Return whether ``df`` carries every column the hybrid features need."""
    return all(column in df.columns for column in SOURCE_COLUMNS)


def rfm(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(buyer, x, t_x, T, m)`` in BG/NBD conventions (days) from snapshot columns.

    ``x`` repeat purchase days, ``t_x`` days from the first to the last purchase day, ``T``
    days from the first purchase day to the as-of date, ``m`` the mean spend of the repeat
    days; users without a purchase have ``buyer`` false and zeros. Raises ``DataError``
    naming a missing or invalid column.
    """
    missing = [c for c in SOURCE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"hybrid features need snapshot column(s) {missing}: extract the snapshot with this spendpred")
    values = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64) for c in SOURCE_COLUMNS}
    bad = [c for c, v in values.items() if not np.isfinite(v).all() or (v < 0).any()]
    if bad:
        raise DataError(f"snapshot column(s) {bad} hold negative, missing or non-finite values: re-extract the snapshot")
    days = values["purchase_days"]
    buyer = days > 0
    x = np.where(buyer, days - 1.0, 0.0)
    age = np.where(buyer, values["first_purchase_days"], 0.0)
    t_x = np.where(buyer, np.clip(age - values["recency_days"], 0.0, age), 0.0)
    m = np.where(x > 0, values["repeat_value"], 0.0)
    return buyer, x, t_x, age, m


@dataclass(frozen=True)
class HybridFeatures:
    """BG/NBD and Gamma-Gamma parameters fitted on training users, and the horizon (days)."""

    horizon_days: float
    bgnbd: Mapping[str, float] | None
    gamma_gamma: Mapping[str, float] | None
    value_fallback: float = 0.0
    """Mean repeat-day spend of the training users, for a Gamma-Gamma fit without a population mean (q <= 1)."""

    @classmethod
    def fit(cls, train_df: pd.DataFrame, horizon_days: float) -> HybridFeatures:
        """Fit BG/NBD on the training users who bought and Gamma-Gamma on the repeat buyers.

        A fit that is impossible (too few buyers, no repeat buyer) or fails leaves that part
        ``None``: its features are then 0 for everyone, never an error, since the hybrid
        only adds to what the head already sees. Raises ``DataError`` for missing columns.
        """
        from spendpred import btyd
        from spendpred.errors import ModelError

        buyer, x, t_x, age, m = rfm(train_df)
        bgnbd = gamma_gamma = None
        try:
            bgnbd = btyd.fit_bgnbd(x[buyer], t_x[buyer], np.maximum(age[buyer], t_x[buyer])).params.as_dict()
            # parameters at the edge of the search space can overflow the forecast: check on the training users
            btyd.bgnbd_expected_purchases(btyd.BGNBDParams(**bgnbd), horizon_days, x[buyer], t_x[buyer],
                                          np.maximum(age[buyer], t_x[buyer]))
        except (DataError, ModelError) as exc:
            bgnbd = None
            logger.warning("hybrid features: BG/NBD not fitted (%s); its features are 0", exc)
        try:
            gamma_gamma = btyd.fit_gamma_gamma(x[buyer], m[buyer]).params.as_dict()
        except (DataError, ModelError) as exc:
            logger.warning("hybrid features: Gamma-Gamma not fitted (%s); its features are 0", exc)
        repeat = m[x > 0]
        fallback = float(repeat.mean()) if repeat.size else 0.0
        logger.info("hybrid features fitted on %d training users (%d buyers): BG/NBD %s, Gamma-Gamma %s",
                    len(train_df), int(buyer.sum()), bgnbd, gamma_gamma)
        return cls(float(horizon_days), bgnbd, gamma_gamma, fallback)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return ``df`` with the ``DERIVED_COLUMNS`` added (a new frame; ``df`` is unchanged)."""
        from spendpred import btyd
        from spendpred.errors import ModelError

        buyer, x, t_x, age, m = rfm(df)
        age = np.maximum(age, t_x)
        zeros = np.zeros(len(df))
        p_alive, purchases, value = zeros, zeros, zeros
        if self.bgnbd is not None and buyer.any():
            params = btyd.BGNBDParams(**self.bgnbd)
            p_alive = np.zeros(len(df))
            p_alive[buyer] = btyd.bgnbd_probability_alive(params, x[buyer], t_x[buyer], age[buyer])
            purchases = np.zeros(len(df))
            try:
                purchases[buyer] = btyd.bgnbd_expected_purchases(params, self.horizon_days, x[buyer], t_x[buyer], age[buyer])
            except ModelError as exc:  # an overflow for users unlike the training ones: no forecast for anyone
                logger.warning("hybrid features: BG/NBD forecast not finite here (%s); btyd_purchases set to 0", exc)
        if self.gamma_gamma is not None and buyer.any():
            value = np.zeros(len(df))
            value[buyer] = btyd.gamma_gamma_expected_value(
                btyd.GammaGammaParams(**self.gamma_gamma), x[buyer], m[buyer], fallback_mean=self.value_fallback
            )
        interval = np.where(x > 0, t_x / np.maximum(x, 1.0), 0.0)
        overdue = np.where(x > 0, (age - t_x) / np.maximum(interval, 1.0), 0.0)
        out = df.copy()
        monetary_90 = pd.to_numeric(df["monetary_90d"]).to_numpy(dtype=np.float64)
        monetary_365 = pd.to_numeric(df["monetary_365d"]).to_numpy(dtype=np.float64)
        frequency_90 = pd.to_numeric(df["frequency_90d"]).to_numpy(dtype=np.float64)
        frequency_365 = pd.to_numeric(df["frequency_365d"]).to_numpy(dtype=np.float64)
        derived = {
            "btyd_p_alive": p_alive,
            "btyd_purchases": purchases,
            "btyd_value": value,
            "btyd_spend": purchases * value,
            "mean_interval": interval,
            "interval_overdue": overdue,
            "trend_spend": (monetary_90 + 1.0) / (monetary_365 / 4.0 + 1.0),
            "trend_frequency": (frequency_90 + 0.25) / (frequency_365 / 4.0 + 0.25),
        }
        for column, values in derived.items():
            out[column] = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in ``bundle.json``."""
        return {"horizon_days": self.horizon_days, "bgnbd": dict(self.bgnbd) if self.bgnbd else None,
                "gamma_gamma": dict(self.gamma_gamma) if self.gamma_gamma else None, "value_fallback": self.value_fallback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HybridFeatures:
        """Return the features stored by :meth:`to_dict`."""
        return cls(float(data["horizon_days"]), data.get("bgnbd"), data.get("gamma_gamma"), float(data.get("value_fallback", 0.0)))


def model_columns(feature_columns: list[str], hybrid: Mapping[str, Any] | None) -> list[str]:
    """Return the columns the head sees: the input features, then the derived ones when ``hybrid``."""
    return [*feature_columns, *DERIVED_COLUMNS] if hybrid else list(feature_columns)
