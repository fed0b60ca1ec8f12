"""Test helpers shared by several test files: a tiny random BERT checkpoint and synthetic users.

``make_tiny_bert(path)`` (from ``spendpred.model.tiny``) writes a tiny random BERT checkpoint
that loads offline in well under a second. ``make_synthetic_users(n)`` returns a
snapshot-like frame whose text and numeric features both carry signal about the label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spendpred import snapshot
from spendpred.model.tiny import make_tiny_bert, tiny_vocab

__all__ = ["FEATURE_COLUMNS", "make_synthetic_users", "make_tiny_bert", "tiny_vocab"]

FEATURE_COLUMNS: list[str] = list(snapshot.FEATURE_COLUMNS)
"""The snapshot's numeric feature columns (``spendpred.snapshot``), as the list a bundle records."""

# single tokens in the tiny vocabulary (spendpred.model.tiny)
RICH_WORDS = ("premium", "luxury", "designer")
POOR_WORDS = ("budget", "cheap", "discount")
CATEGORIES = ("electronics", "books", "toys", "fashion", "home", "beauty", "sports", "grocery")


def make_synthetic_users(n: int = 300, seed: int = 0, zero_share: float = 0.4) -> pd.DataFrame:
    """Return ``n`` synthetic users shaped like a labelled snapshot (user_id, text, features, past_spend, label).

    A latent wealth drives the label (zero for about ``zero_share`` of users, lognormal
    otherwise), the words in the text (premium/luxury/designer vs budget/cheap/discount)
    and the monetary and frequency features, so both text and features carry signal.
    """
    rng = np.random.default_rng(seed)
    wealth = rng.normal(size=n)
    buy_logit = 1.5 * wealth + np.log((1 - zero_share) / zero_share)
    buys = rng.random(n) < 1.0 / (1.0 + np.exp(-buy_logit))
    label = np.where(buys, np.exp(3.5 + 0.9 * wealth + rng.normal(scale=0.3, size=n)), 0.0)
    past = np.where(rng.random(n) < 0.7, np.exp(3.5 + 0.9 * wealth + rng.normal(scale=0.5, size=n)), 0.0)
    frequency = rng.poisson(np.exp(0.6 * wealth + 0.5))
    texts = []
    for i in range(n):
        if wealth[i] > 0.3:
            tone = rng.choice(RICH_WORDS, size=2)
        elif wealth[i] < -0.3:
            tone = rng.choice(POOR_WORDS, size=2)
        else:
            tone = np.array(["items", "items"])
        category = rng.choice(CATEGORIES)
        texts.append(
            f"user orders {frequency[i]} {tone[0]} {category} views {rng.integers(0, 40)} "
            f"clicks {rng.integers(0, 10)} {tone[1]} rating {rng.integers(1, 6)}"
        )
    data: dict[str, object] = {"user_id": [f"u{i:05d}" for i in range(n)], "text": texts}
    for column in FEATURE_COLUMNS:
        data[column] = rng.gamma(2.0, 5.0, size=n)
    data["frequency_90d"] = frequency.astype(np.float64)
    data["monetary_90d"] = past
    data["monetary_365d"] = past * rng.uniform(1.0, 3.0, size=n)
    data["avg_basket"] = np.where(frequency > 0, past / np.maximum(frequency, 1), 0.0)
    data["mean_rating"] = rng.uniform(1.0, 5.0, size=n)
    data["past_spend"] = past
    data["label"] = label
    return pd.DataFrame(data)
