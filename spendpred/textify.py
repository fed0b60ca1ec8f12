"""Behaviour → text: a deterministic, versioned serialisation of one user for the encoder.

Template ``v1`` (``TEMPLATE_VERSION``) renders, in this order::

    member for 412 days. 12 completed orders, 830.50 spent. last 30 days: 5 views, 2 clicks,
    1 search. last 90 days: 14 views, 3 clicks, 2 searches. last active 2 days ago.
    orders: today 45.00 electronics; 3 days ago 12.50 books (cancelled).
    searches: 1 day ago "running shoes". reviews: 20 days ago 5/5 "great shoes fast delivery".

* The first sentences (tenure, lifetime totals, event summary) are always kept; the recent
  items (up to ``MAX_RECENT_ORDERS`` orders, ``MAX_RECENT_SEARCHES`` searches and
  ``MAX_RECENT_REVIEWS`` reviews, each list most recent first) are dropped **oldest first**
  until the text fits the token budget. Words are never cut.
* Dates are relative to the as-of date ("today", "1 day ago", "3 days ago"), so the same
  behaviour gives the same text whatever the calendar date.
* No personal data: user ids are never rendered, and free text (search queries, review
  bodies, categories) is scrubbed of e-mail addresses, phone and other long numbers, URLs,
  @handles, honorific + name, and the user's own id (:func:`scrub`).

Changing anything that alters the output for the same input requires a new
``TEMPLATE_VERSION``: the version is written into each snapshot manifest and each model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from spendpred.errors import ConfigError, DataError

TEMPLATE_VERSION = "v1"
DEFAULT_MAX_TOKENS = 128
MAX_RECENT_ORDERS = 10
MAX_RECENT_SEARCHES = 5
MAX_RECENT_REVIEWS = 3
SNIPPET_WORDS = 12
EVENT_TYPES = ("view", "click", "add_to_cart", "search", "wishlist")
_EVENT_NOUNS = {
    "view": ("view", "views"),
    "click": ("click", "clicks"),
    "add_to_cart": ("add to cart", "adds to cart"),
    "search": ("search", "searches"),
    "wishlist": ("wishlist add", "wishlist adds"),
}

TokenCounter = Callable[[str], int]

# --------------------------------------------------------------------------- scrubbing

_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S*[^\s.,;:!?)\]\"']")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HANDLE = re.compile(r"(?<![\w@])@\w{2,}")
_LONG_NUMBER = re.compile(r"(?<![\w])\+?\d(?:[\s().\-/]{0,2}\d){6,}(?![\w])")
_HONORIFIC_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam)\.?\s+[A-Z][\w'\-]*")
_MY_NAME = re.compile(r"\b((?i:my name is|i am|i'm|this is|signed|regards,?|thanks,?))\s+[A-Z][a-z'\-]+\b")
_SPACE = re.compile(r"\s+")


def scrub(text: str | None, forbidden: Sequence[str] = ()) -> str:
    """Return ``text`` with personal data replaced by placeholders, whitespace collapsed.

    Replaces URLs (``[url]``), e-mail addresses (``[email]``), @handles (``[handle]``),
    each string in ``forbidden`` (e.g. the user's own id, matched case-insensitively) by
    ``[user]``, phone numbers and other numbers of 7+ digits (``[number]``), and an
    honorific followed by a name or "my name is X" (``[name]``). ``None`` gives ``""``.
    Never raises.
    """
    if not text:
        return ""
    out = _scrub_links(str(text))
    for secret in forbidden:
        if secret and len(secret) >= 3 and secret.lower() in out.lower():
            out = re.sub(re.escape(secret), "[user]", out, flags=re.IGNORECASE)
    return _scrub_numbers_names(out)


@lru_cache(maxsize=4_096)
def _scrub_links(text: str) -> str:
    if "://" in text or "www." in text.lower():
        text = _URL.sub("[url]", text)
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
        text = _HANDLE.sub("[handle]", text)
    return text


@lru_cache(maxsize=4_096)
def _scrub_numbers_names(text: str) -> str:
    text = _LONG_NUMBER.sub("[number]", text)
    text = _HONORIFIC_NAME.sub("[name]", text)
    text = _MY_NAME.sub(lambda m: f"{m.group(1)} [name]", text)
    return _SPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------- token counting

# a letter run costs one token per 4 letters, a digit run one per 3, anything else
# (punctuation, each non-ASCII character) one: counting these pieces is the estimate
_PIECE = re.compile(r"[A-Za-z]{1,4}|[0-9]{1,3}|[^\sA-Za-z0-9]")


def estimate_tokens(text: str) -> int:
    """Return a conservative estimate of the WordPiece tokens of ``text``, with [CLS]/[SEP].

    Letters count one token per 4 characters of a run (rounded up), digits one per 3,
    every other non-space character (punctuation, each non-ASCII letter) one. This
    over-counts English WordPiece (BERT, MiniLM) vocabularies; pass a real tokenizer via
    :func:`tokenizer_counter` for exact budgets.
    """
    return 2 + len(_PIECE.findall(text))  # 2: [CLS] and [SEP]


def tokenizer_counter(tokenizer: Any) -> TokenCounter:
    """Return a counter that gives the exact token count of a Hugging Face tokenizer.

    The count includes the special tokens the model sees ([CLS]/[SEP]).
    """

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    return count


# --------------------------------------------------------------------------- behaviour


@dataclass(frozen=True)
class OrderItem:
    """One recent order (any status) placed before the end of the as-of date."""

    at: datetime
    amount: float
    category: str | None = None
    status: str = "completed"


@dataclass(frozen=True)
class SearchItem:
    """One recent search query."""

    at: datetime
    query: str


@dataclass(frozen=True)
class ReviewItem:
    """One recent review: rating 1..5 and free-text body (scrubbed when rendered)."""

    at: datetime
    rating: int
    body: str | None = None


@dataclass(frozen=True)
class UserBehaviour:
    """Everything :func:`render` needs for one user as of ``as_of``.

    ``events_30d`` / ``events_90d`` map event types (``EVENT_TYPES``) to counts;
    ``days_since_last_event`` is ``None`` when the user has no event. ``user_id`` is never
    rendered: it is only used to scrub the id out of free text.
    """

    as_of: date
    tenure_days: int
    completed_orders: int = 0
    completed_spend: float = 0.0
    events_30d: Mapping[str, int] = field(default_factory=dict)
    events_90d: Mapping[str, int] = field(default_factory=dict)
    days_since_last_event: int | None = None
    orders: Sequence[OrderItem] = ()
    searches: Sequence[SearchItem] = ()
    reviews: Sequence[ReviewItem] = ()
    user_id: str | None = None


# --------------------------------------------------------------------------- rendering


def _days(n: int, unit: str = "day") -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _ago(as_of: date, at: datetime | date) -> str:
    day = at.date() if isinstance(at, datetime) else at
    n = (as_of - day).days
    if n < 0:
        raise DataError(
            f"behaviour item dated {at.isoformat()} is after the as-of date {as_of.isoformat()}: "
            "only rows before the end of the as-of date may be rendered (point-in-time rule)"
        )
    if n == 0:
        return "today"
    return f"{_days(n)} ago"


def _money(value: float) -> str:
    return f"{float(value):.2f}"


def _event_summary(counts: Mapping[str, int]) -> str:
    parts = []
    for kind in EVENT_TYPES:
        n = int(counts.get(kind, 0) or 0)
        if n > 0:
            singular, plural = _EVENT_NOUNS[kind]
            parts.append(f"{n} {singular if n == 1 else plural}")
    return ", ".join(parts)


def _snippet(body: str | None, forbidden: Sequence[str]) -> str:
    words = scrub(body, forbidden).split(" ")
    words = [w for w in words if w]
    if not words:
        return ""
    if len(words) > SNIPPET_WORDS:
        return " ".join(words[:SNIPPET_WORDS]) + " ..."
    return " ".join(words)


def _word(value: str | None, forbidden: Sequence[str]) -> str:
    return scrub(value, forbidden)


_KIND_RANK = {"order": 0, "review": 1, "search": 2}


def _item_key(kind: str, item: Any) -> tuple[Any, ...]:
    """Newest first; ties broken by kind, then content, so the order is total."""
    if kind == "order":
        content: tuple[Any, ...] = (float(item.amount), item.category or "", item.status or "")
    elif kind == "search":
        content = (item.query or "",)
    else:
        content = (int(item.rating), item.body or "")
    return (item.at, -_KIND_RANK[kind], content)


def _fixed_sentences(b: UserBehaviour) -> list[str]:
    """Tenure, totals and event summary, most essential first."""
    tenure = "joined today." if b.tenure_days <= 0 else f"member for {_days(int(b.tenure_days))}."
    n = int(b.completed_orders)
    if n == 0:
        totals = "no completed orders."
    else:
        totals = f"{n} completed {'order' if n == 1 else 'orders'}, {_money(b.completed_spend)} spent."
    sentences = [tenure, totals]
    last30, last90 = _event_summary(b.events_30d), _event_summary(b.events_90d)
    if last30:
        sentences.append(f"last 30 days: {last30}.")
    if last90:
        sentences.append(f"last 90 days: {last90}.")
    if not last30 and not last90:
        sentences.append("no browsing events in the last 90 days.")
    if b.days_since_last_event is not None:
        n_days = int(b.days_since_last_event)
        sentences.append("last active today." if n_days <= 0 else f"last active {_days(n_days)} ago.")
    return sentences


def _fragment(as_of: date, kind: str, item: Any, forbidden: Sequence[str]) -> str:
    """The text of one recent item, e.g. ``3 days ago 12.50 books (cancelled)``."""
    when = _ago(as_of, item.at)
    if kind == "order":
        text = f"{when} {_money(item.amount)}"
        category = _word(item.category, forbidden)
        if category:
            text += f" {category}"
        status = _word(item.status, forbidden)
        if status and status != "completed":
            text += f" ({status})"
        return text
    if kind == "search":
        return f'{when} "{_word(item.query, forbidden)}"'
    snippet = _snippet(item.body, forbidden)
    text = f"{when} {int(item.rating)}/5"
    return f'{text} "{snippet}"' if snippet else text


def _item_sentences(fragments: Sequence[tuple[str, str]]) -> list[str]:
    """Group item fragments (newest first) into the orders / searches / reviews sentences."""
    groups: dict[str, list[str]] = {"order": [], "search": [], "review": []}
    for kind, text in fragments:
        groups[kind].append(text)
    return [
        f"{label}: " + "; ".join(groups[kind]) + "."
        for kind, label in (("order", "orders"), ("search", "searches"), ("review", "reviews"))
        if groups[kind]
    ]


def render(
    user_behaviour: UserBehaviour,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    count_tokens: TokenCounter | None = None,
) -> str:
    """Return the template-``v1`` text of one user, fitting ``max_tokens``.

    ``count_tokens`` defaults to :func:`estimate_tokens`; pass :func:`tokenizer_counter` of
    the encoder's tokenizer for exact budgets. Recent items are dropped oldest first until
    the text fits; if it still does not fit, the last-active sentence, the 90-day summary,
    the 30-day summary and the totals are dropped in turn (tenure always stays).
    Deterministic: the same behaviour gives the same text whatever the order of the input
    lists.

    Raises ``ConfigError`` when even the tenure sentence exceeds ``max_tokens``, and
    ``DataError`` when an item is dated after ``as_of``.
    """
    count = count_tokens or estimate_tokens
    b = user_behaviour
    forbidden = (b.user_id,) if b.user_id else ()
    items: list[tuple[str, Any]] = []
    items += [("order", o) for o in b.orders]
    items += [("search", s) for s in b.searches if s.query and s.query.strip()]
    items += [("review", r) for r in b.reviews]
    items.sort(key=lambda kv: _item_key(*kv), reverse=True)
    # per-kind caps of the template, newest kept; each item rendered once
    caps = {"order": MAX_RECENT_ORDERS, "search": MAX_RECENT_SEARCHES, "review": MAX_RECENT_REVIEWS}
    seen: dict[str, int] = {k: 0 for k in caps}
    fragments: list[tuple[str, str]] = []
    for kind, item in items:
        if seen[kind] < caps[kind]:
            seen[kind] += 1
            fragments.append((kind, _fragment(b.as_of, kind, item, forbidden)))

    fixed = _fixed_sentences(b)

    def text_for(n_items: int, sentences: list[str]) -> str:
        return " ".join(sentences + _item_sentences(fragments[:n_items]))

    full = text_for(len(fragments), fixed)
    if count(full) <= max_tokens:
        return full
    # largest number of newest items that fits (dropping items only shrinks the text)
    lo, hi = 0, len(fragments) - 1
    if count(text_for(0, fixed)) <= max_tokens:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text_for(mid, fixed)) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return text_for(lo, fixed)
    # even without items: drop summary sentences, least essential (last) first, keep tenure
    sentences = list(fixed)
    while len(sentences) > 1:
        sentences.pop()
        text = " ".join(sentences)
        if count(text) <= max_tokens:
            return text
    raise ConfigError(
        f"max_tokens={max_tokens} is too small for the text template {TEMPLATE_VERSION}: "
        f"the tenure sentence alone needs {count(sentences[0])} tokens; raise the budget"
    )
