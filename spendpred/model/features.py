"""Numeric feature normalisation and input checks for the spend regressor.

Features are heavy-tailed counts and amounts, so each value ``x`` is first squashed with a
signed log1p, ``sign(x) * log1p(|x|)`` (equal to ``log1p(x)`` for the non-negative features
of a snapshot, and still finite for a negative sentinel), then z-scored with the mean and
standard deviation fitted on the training users. A constant column gets std 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spendpred.errors import DataError, ModelError

TEXT_COLUMN = "text"
LABEL_COLUMN = "label"


def _row_name(df: pd.DataFrame, position: int) -> str:
    """Return a human name for row ``position`` (its user_id when the frame has one)."""
    if "user_id" in df.columns:
        return f"row {position} (user_id={df['user_id'].iloc[position]!r})"
    return f"row {position}"


def check_texts(df: pd.DataFrame, what: str) -> list[str]:
    """Return the ``text`` column of ``df`` as a list of str.

    Raises ``DataError`` naming the frame (``what``) when the column is missing or a
    value is not a string.
    """
    if TEXT_COLUMN not in df.columns:
        raise DataError(f"{what} has no {TEXT_COLUMN!r} column: pass a snapshot frame (see contracts)")
    texts = df[TEXT_COLUMN].tolist()
    for position, value in enumerate(texts):
        if not isinstance(value, str):
            raise DataError(
                f"{what} {_row_name(df, position)}: column {TEXT_COLUMN!r} must be a string, got {value!r}; "
                "re-run textify for this snapshot"
            )
    return texts


def check_labels(df: pd.DataFrame, what: str) -> np.ndarray:
    """Return the ``label`` column as float64 (spend >= 0, finite).

    Raises ``DataError`` naming the frame and the first bad row when the column is missing,
    null, negative or not finite.
    """
    if LABEL_COLUMN not in df.columns:
        raise DataError(
            f"{what} has no {LABEL_COLUMN!r} column: extract the snapshot with labels to train on it"
        )
    try:
        labels = pd.to_numeric(df[LABEL_COLUMN], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: column {LABEL_COLUMN!r} must be numeric spend ({exc})") from exc
    bad = np.flatnonzero(~np.isfinite(labels) | (labels < 0))
    if bad.size:
        position = int(bad[0])
        raise DataError(
            f"{what} {_row_name(df, position)}: {LABEL_COLUMN!r}={float(labels[position])!r} is not a finite "
            f"spend >= 0 ({bad.size} bad rows in all); fix the label extraction"
        )
    return labels


def feature_matrix(df: pd.DataFrame, columns: Sequence[str], what: str) -> np.ndarray:
    """Return ``df[columns]`` as a float64 matrix of shape (n, len(columns)).

    Raises ``DataError`` naming the column (and first bad row) when a column is missing or
    holds a null, non-numeric or infinite value.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what} lacks feature columns {missing}: use the snapshot the model was trained for")
    if not columns:
        return np.zeros((len(df), 0), dtype=np.float64)
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        try:
            values = pd.to_numeric(df[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what}: feature column {column!r} must be numeric ({exc})") from exc
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            position = int(bad[0])
            raise DataError(
                f"{what} {_row_name(df, position)}: feature {column!r}={float(values[position])!r} is null or infinite "
                f"({bad.size} bad rows in all); snapshots must have no nulls in numeric features"
            )
        out[:, j] = values
    return out


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """Return ``sign(x) * log1p(|x|)`` elementwise (``log1p(x)`` for x >= 0)."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass(frozen=True)
class FeatureNormaliser:
    """Signed-log1p then z-score for a fixed list of feature columns (fitted on train)."""

    columns: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    transform_name: str = field(default="signed_log1p_zscore")

    @classmethod
    def fit(cls, df: pd.DataFrame, columns: Sequence[str], what: str = "train data") -> FeatureNormaliser:
        """Return a normaliser fitted on ``df[columns]``; raises ``DataError`` on bad values."""
        logged = signed_log1p(feature_matrix(df, columns, what))
        if len(logged) == 0:
            return cls(tuple(columns), tuple(0.0 for _ in columns), tuple(1.0 for _ in columns))
        mean = logged.mean(axis=0)
        std = logged.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(tuple(columns), tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def transform(self, df: pd.DataFrame, what: str = "input data") -> np.ndarray:
        """Return the normalised float32 matrix (n, len(columns)); raises ``DataError`` on bad values."""
        logged = signed_log1p(feature_matrix(df, self.columns, what))
        if not self.columns:
            return logged.astype(np.float32)
        return ((logged - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form stored in ``bundle.json`` under ``normaliser``."""
        return {"transform": self.transform_name, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, columns: Sequence[str], data: dict[str, Any]) -> FeatureNormaliser:
        """Return the normaliser stored in ``bundle.json``; raises ``ModelError`` when inconsistent."""
        try:
            mean = tuple(float(v) for v in data["mean"])
            std = tuple(float(v) for v in data["std"])
            transform_name = str(data.get("transform", "signed_log1p_zscore"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bundle.json: normaliser is malformed ({exc!r}); retrain the model") from exc
        if len(mean) != len(columns) or len(std) != len(columns):
            raise ModelError(
                f"bundle.json: normaliser has {len(mean)} means and {len(std)} stds for {len(columns)} "
                "feature columns; the bundle is corrupt: retrain the model or pick another version"
            )
        if transform_name != "signed_log1p_zscore":
            raise ModelError(f"bundle.json: unknown feature transform {transform_name!r}; upgrade spendpred")
        if any(not np.isfinite(s) or s <= 0 for s in std) or any(not np.isfinite(m) for m in mean):
            raise ModelError("bundle.json: normaliser has a non-finite mean or a non-positive std; retrain the model")
        return cls(tuple(columns), mean, std, transform_name)
