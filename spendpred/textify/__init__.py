"""Behaviour → text: a deterministic, versioned serialisation of one user for the encoder.

Two templates are available (``TEMPLATE_VERSIONS``); the ``text_template`` setting
(``SPENDPRED_TEXT_TEMPLATE``, default ``DEFAULT_TEMPLATE`` = ``v2``) chooses the one a snapshot
is extracted with, and the version is written into each snapshot manifest and each model.

Template ``v2`` (the default) changes **only when the user acts**: it holds no fact that
depends on the as-of date, so the text of a user without new rows is the same night after
night (an encoder cache keyed by the text then hits). It renders, in this order::

    12 completed orders, 830.50 spent.
    orders: 45.00 electronics; 3 days earlier 12.50 books (cancelled).
    searches: "running shoes"; 19 days earlier "trail shoes". reviews: 5/5 "great shoes fast delivery".

* The lifetime totals (completed orders and spend) change only with a new or changed order.
* Each list is most recent first; every item after the first says how many days before the
  item before it (in the same list) it happened ("same day", "1 day earlier", "N days
  earlier"): whole calendar days between two rows, which do not move with the calendar.
* Tenure, recency, "N days ago" and the 30/90-day event counts are left out: they change
  every night, and the numeric features of the snapshot already carry them.

Template ``v1`` (kept byte for byte for models trained on it) renders relative-time facts::

    member for 412 days. 12 completed orders, 830.50 spent. last 30 days: 5 views, 2 clicks,
    1 search. last 90 days: 14 views, 3 clicks, 2 searches. last active 2 days ago.
    orders: today 45.00 electronics; 3 days ago 12.50 books (cancelled).
    searches: 1 day ago "running shoes". reviews: 20 days ago 5/5 "great shoes fast delivery".

  Its dates are relative to the as-of date ("today", "1 day ago", "3 days ago"), so the
  same behaviour gives the same text whatever the calendar date, but a user's text changes
  every night.

Both templates:

* The first sentences (v2: the totals; v1: tenure, lifetime totals, event summary) are
  always kept; the recent items (up to ``MAX_RECENT_ORDERS`` orders, ``MAX_RECENT_SEARCHES``
  searches and ``MAX_RECENT_REVIEWS`` reviews, each list most recent first) are dropped
  **oldest first** until the text fits the token budget. Words are never cut.
* Point in time: an item dated after the as-of date raises ``DataError``.
* No personal data: user ids are never rendered, and free text (search queries, review
  bodies, categories) is scrubbed of e-mail addresses (also obfuscated ones), phone and other
  long numbers, street addresses, URLs, @handles, whole names after an honorific or an
  introduction / sign-off phrase, and the user's own id (:func:`scrub`).

Changing anything that alters a template's output for the same input requires a new
version in ``TEMPLATE_VERSIONS``: the version is written into each snapshot manifest and each
model, and scoring refuses a model trained on another template than the snapshot's.

Modules: :mod:`~spendpred.textify.pii` (:func:`scrub`), :mod:`~spendpred.textify.templates`
(the behaviour records, :func:`render`, token counting) and :mod:`~spendpred.textify.spans`
(:func:`segments`: which span of a rendered text stands for which fact). Every public name is
importable from ``spendpred.textify``.
"""

from __future__ import annotations

from spendpred.textify.pii import scrub
from spendpred.textify.spans import SEGMENT_KINDS, Segment, segments
from spendpred.textify.templates import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPLATE,
    EVENT_TYPES,
    MAX_RECENT_ORDERS,
    MAX_RECENT_REVIEWS,
    MAX_RECENT_SEARCHES,
    SNIPPET_WORDS,
    TEMPLATE_VERSION,
    TEMPLATE_VERSIONS,
    OrderItem,
    ReviewItem,
    SearchItem,
    TokenCounter,
    UserBehaviour,
    check_template,
    estimate_tokens,
    render,
    tokenizer_counter,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPLATE",
    "EVENT_TYPES",
    "MAX_RECENT_ORDERS",
    "MAX_RECENT_REVIEWS",
    "MAX_RECENT_SEARCHES",
    "SEGMENT_KINDS",
    "SNIPPET_WORDS",
    "TEMPLATE_VERSION",
    "TEMPLATE_VERSIONS",
    "OrderItem",
    "ReviewItem",
    "SearchItem",
    "Segment",
    "TokenCounter",
    "UserBehaviour",
    "check_template",
    "estimate_tokens",
    "render",
    "scrub",
    "segments",
    "tokenizer_counter",
]
