"""Rendering one user's behaviour as text: the versioned templates, the token budget, the behaviour records.

:func:`render` writes a :class:`UserBehaviour` with template ``v1`` or ``v2`` (the package
docstring, :mod:`spendpred.textify`, says what each holds), dropping the oldest recent items
until the text fits the token budget (:func:`estimate_tokens`, or a real tokenizer through
:func:`tokenizer_counter`); free text goes through :func:`spendpred.textify.pii.scrub`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from spendpred.errors import ConfigError, DataError
from spendpred.params import TEMPLATE_VERSIONS  # every template this module renders (``render(..., template=...)``)
from spendpred.textify.pii import scrub

DEFAULT_TEMPLATE = "v2"
"""The template of the ``text_template`` setting's default: the text changes only when the user acts."""
TEMPLATE_VERSION = DEFAULT_TEMPLATE
"""The default template version (an alias of ``DEFAULT_TEMPLATE``)."""
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


def _days(n: int, unit: str = "day") -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _day(at: datetime | date) -> date:
    return at.date() if isinstance(at, datetime) else at


def _check_point_in_time(as_of: date, at: datetime | date) -> int:
    """Return the whole days from ``at`` to ``as_of``; ``DataError`` when ``at`` is after ``as_of``."""
    n = (as_of - _day(at)).days
    if n < 0:
        raise DataError(
            f"behaviour item dated {at.isoformat()} is after the as-of date {as_of.isoformat()}: "
            "only rows before the end of the as-of date may be rendered (point-in-time rule)"
        )
    return n


def _ago(as_of: date, at: datetime | date) -> str:
    n = _check_point_in_time(as_of, at)
    if n == 0:
        return "today"
    return f"{_days(n)} ago"


def _earlier(newer: Any | None, item: Any) -> str:
    """How long before ``newer`` (the item before it in its list) ``item`` happened; "" for the first."""
    if newer is None:
        return ""
    n = (_day(newer.at) - _day(item.at)).days
    if n <= 0:
        return "same day "
    return f"{_days(n)} earlier "


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
    at = item.at if isinstance(item.at, datetime) else datetime.combine(item.at, datetime.min.time())
    return (at, -_KIND_RANK[kind], content)


def _totals_sentence(b: UserBehaviour) -> str:
    """The lifetime totals: ``4 completed orders, 94.75 spent.`` or ``no completed orders.``"""
    n = int(b.completed_orders)
    if n == 0:
        return "no completed orders."
    return f"{n} completed {'order' if n == 1 else 'orders'}, {_money(b.completed_spend)} spent."


def _fixed_sentences(b: UserBehaviour) -> list[str]:
    """Template v1: tenure, totals and event summary, most essential first."""
    tenure = "joined today." if b.tenure_days <= 0 else f"member for {_days(int(b.tenure_days))}."
    sentences = [tenure, _totals_sentence(b)]
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


def _content(kind: str, item: Any, forbidden: Sequence[str]) -> str:
    """What one recent item was, e.g. ``12.50 books (cancelled)``, ``"running shoes"``, ``5/5 "great"``."""
    if kind == "order":
        text = _money(item.amount)
        category = _word(item.category, forbidden)
        if category:
            text += f" {category}"
        status = _word(item.status, forbidden)
        if status and status != "completed":
            text += f" ({status})"
        return text
    if kind == "search":
        return f'"{_word(item.query, forbidden)}"'
    snippet = _snippet(item.body, forbidden)
    text = f"{int(item.rating)}/5"
    return f'{text} "{snippet}"' if snippet else text


def _fragment(as_of: date, kind: str, item: Any, forbidden: Sequence[str]) -> str:
    """Template v1: one recent item, e.g. ``3 days ago 12.50 books (cancelled)``."""
    return f"{_ago(as_of, item.at)} {_content(kind, item, forbidden)}"


def _fragment_v2(kind: str, item: Any, newer: Any | None, forbidden: Sequence[str]) -> str:
    """Template v2: one recent item, e.g. ``3 days earlier 12.50 books (cancelled)`` (no as-of date)."""
    return f"{_earlier(newer, item)}{_content(kind, item, forbidden)}"


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


def check_template(version: str | None) -> str:
    """Return ``version`` (``DEFAULT_TEMPLATE`` for ``None``) if this spendpred renders it.

    Raises ``ConfigError`` naming the available versions otherwise.
    """
    if version is None:
        return DEFAULT_TEMPLATE
    if version not in TEMPLATE_VERSIONS:
        raise ConfigError(
            f"text template {version!r} is not available: use one of {', '.join(TEMPLATE_VERSIONS)} "
            "(setting SPENDPRED_TEXT_TEMPLATE)"
        )
    return version


def _recent_items(b: UserBehaviour) -> list[tuple[str, Any]]:
    """The items a template renders: newest first, at most the per-kind caps (newest kept)."""
    items: list[tuple[str, Any]] = []
    items += [("order", o) for o in b.orders]
    items += [("search", s) for s in b.searches if s.query and s.query.strip()]
    items += [("review", r) for r in b.reviews]
    items.sort(key=lambda kv: _item_key(*kv), reverse=True)
    caps = {"order": MAX_RECENT_ORDERS, "search": MAX_RECENT_SEARCHES, "review": MAX_RECENT_REVIEWS}
    seen: dict[str, int] = {k: 0 for k in caps}
    kept: list[tuple[str, Any]] = []
    for kind, item in items:
        if seen[kind] < caps[kind]:
            seen[kind] += 1
            kept.append((kind, item))
    return kept


def _fit(
    fixed: list[str],
    fragments: list[tuple[str, str]],
    count: TokenCounter,
    max_tokens: int,
    template: str,
    first_label: str,
) -> str:
    """The longest text of ``fixed`` sentences and the newest ``fragments`` that fits ``max_tokens``.

    Items are dropped oldest first; then the fixed sentences from the last, the first always kept.
    """

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
    # even without items: drop summary sentences, least essential (last) first, keep the first
    sentences = list(fixed)
    while len(sentences) > 1:
        sentences.pop()
        text = " ".join(sentences)
        if count(text) <= max_tokens:
            return text
    raise ConfigError(
        f"max_tokens={max_tokens} is too small for the text template {template}: "
        f"the {first_label} sentence alone needs {count(sentences[0])} tokens; raise the budget"
    )


def render(
    user_behaviour: UserBehaviour,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    count_tokens: TokenCounter | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> str:
    """Return the text of one user in ``template`` (``v1`` or ``v2``), fitting ``max_tokens``.

    ``count_tokens`` defaults to :func:`estimate_tokens`; pass :func:`tokenizer_counter` of
    the encoder's tokenizer for exact budgets. Recent items are dropped oldest first until
    the text fits. In ``v1``, if it still does not fit, the last-active sentence, the 90-day
    summary, the 30-day summary and the totals are dropped in turn (tenure always stays); in
    ``v2`` the totals sentence always stays. Deterministic: the same behaviour gives the same
    text whatever the order of the input lists; in ``v2`` also whatever the as-of date.

    Raises ``ConfigError`` for an unknown template or when even the first sentence exceeds
    ``max_tokens``, and ``DataError`` when an item is dated after ``as_of``.
    """
    template = check_template(template)
    count = count_tokens or estimate_tokens
    b = user_behaviour
    forbidden = (b.user_id,) if b.user_id else ()
    items = _recent_items(b)
    if template == "v1":
        fragments = [(kind, _fragment(b.as_of, kind, item, forbidden)) for kind, item in items]
        return _fit(_fixed_sentences(b), fragments, count, max_tokens, "v1", "tenure")
    newest: dict[str, Any] = {}
    fragments = []
    for kind, item in items:  # newest first: the item before this one in its list is newest[kind]
        _check_point_in_time(b.as_of, item.at)
        fragments.append((kind, _fragment_v2(kind, item, newest.get(kind), forbidden)))
        newest[kind] = item
    return _fit([_totals_sentence(b)], fragments, count, max_tokens, "v2", "totals")
