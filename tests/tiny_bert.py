"""Test helpers shared by several test files: a tiny random BERT checkpoint and synthetic users.

``make_tiny_bert(path)`` writes a complete Hugging Face checkpoint directory (config.json,
model.safetensors, vocab.txt and the fast tokenizer files) that ``AutoModel`` and
``AutoTokenizer`` load offline in well under a second. ``make_synthetic_users(n)`` returns
a snapshot-like frame whose text and numeric features both carry signal about the label.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pandas as pd

FEATURE_COLUMNS: list[str] = [
    "recency_days", "tenure_days", "frequency_30d", "frequency_90d", "frequency_365d", "frequency_all",
    "monetary_30d", "monetary_90d", "monetary_365d", "monetary_all", "avg_basket", "category_diversity",
    "views_30d", "views_90d", "clicks_30d", "clicks_90d", "add_to_carts_30d", "add_to_carts_90d",
    "searches_30d", "searches_90d", "wishlists_30d", "wishlists_90d", "review_count", "mean_rating",
    "days_since_last_event",
]  # fmt: skip
"""The snapshot's numeric feature columns (contracts.md), in order."""

RICH_WORDS = ("premium", "luxury", "designer")
POOR_WORDS = ("budget", "cheap", "discount")
CATEGORIES = ("electronics", "books", "toys", "fashion", "home", "beauty", "sports", "grocery")

_WORDS = (
    "user", "users", "order", "orders", "spent", "total", "items", "item", "category", "categories",
    "view", "views", "viewed", "click", "clicks", "clicked", "search", "searches", "searched", "cart",
    "add", "to", "wishlist", "wishlists", "review", "reviews", "rating", "days", "day", "since", "last",
    "first", "signup", "tenure", "recent", "recency", "in", "on", "of", "and", "the", "a", "for", "no",
    "none", "with", "avg", "average", "basket", "price", "query", "bought", "event", "events", "past",
    "month", "months", "year", "segment", "country", "new", "loyal", "high", "low", "medium",
    *RICH_WORDS, *POOR_WORDS, *CATEGORIES,
)  # fmt: skip


def tiny_vocab() -> list[str]:
    """Return the tiny WordPiece vocabulary: specials, words, and single characters with ``##`` forms."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits)
    punctuation = list(".,:;-_/()=$%+'\"!?&*#@[]{}<>|")
    vocab = specials + list(_WORDS) + chars + [f"##{c}" for c in chars] + punctuation + ["##s", "##ed", "##ing"]
    seen: set[str] = set()
    return [t for t in vocab if not (t in seen or seen.add(t))]


def make_tiny_bert(
    path: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT checkpoint (config, weights, vocab.txt, fast tokenizer) into ``path``; return it.

    The weights depend only on ``seed``; the caller's torch random state is left untouched.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), model_max_length=max_position_embeddings)
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(str(folder))
    return folder


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
