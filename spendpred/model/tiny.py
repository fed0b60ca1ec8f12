"""A tiny random BERT checkpoint for smoke runs: the test suite, benchmarks of the plumbing.

``make_tiny_bert(path)`` writes a complete Hugging Face checkpoint directory (config.json,
model.safetensors, vocab.txt and the fast tokenizer files) that ``AutoModel`` and
``AutoTokenizer`` load offline in well under a second. It predicts nothing useful: it stands
in for the real encoder where only the pipeline around the model is being exercised
(``SPENDPRED_ENCODER_DIR=<path>``), e.g. ``bench/nightly_e2e.py --encoder tiny``.
"""

from __future__ import annotations

import string
from pathlib import Path

# Shopping words of the synthetic texts (the test suite's rich/poor words and categories
# among them), so they are single tokens; anything else falls back to characters.
_WORDS = (
    "user", "users", "order", "orders", "spent", "total", "items", "item", "category", "categories",
    "view", "views", "viewed", "click", "clicks", "clicked", "search", "searches", "searched", "cart",
    "add", "to", "wishlist", "wishlists", "review", "reviews", "rating", "days", "day", "since", "last",
    "first", "signup", "tenure", "recent", "recency", "in", "on", "of", "and", "the", "a", "for", "no",
    "none", "with", "avg", "average", "basket", "price", "query", "bought", "event", "events", "past",
    "month", "months", "year", "segment", "country", "new", "loyal", "high", "low", "medium",
    "premium", "luxury", "designer", "budget", "cheap", "discount",
    "electronics", "books", "toys", "fashion", "home", "beauty", "sports", "grocery",
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
