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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from spendpred.errors import ConfigError, DataError
from spendpred.params import TEMPLATE_VERSIONS  # every template this module renders (``render(..., template=...)``)
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

# --------------------------------------------------------------------------- scrubbing

_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S*[^\s.,;:!?)\]\"']")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HANDLE = re.compile(r"(?<![\w@])@\w{2,}")
_LONG_NUMBER = re.compile(r"(?<![\w])\+?\d(?:[\s().\-/]{0,2}\d){6,}(?![\w])")
_SPACE = re.compile(r"\s+")

# obfuscated e-mail addresses: "john at example dot com", "john [at] example [dot] com",
# "john(at)example.com", "john @ example dot com". A plain " at " needs at least one spelled-out
# or bracketed "dot" (so "bought it at walmart.com" stays); a bracketed "at" or "@" does not.
_LOCAL = r"[\w+\-]+(?:\.[\w+\-]+)*"
_LABEL = r"[\w\-]+"
_TLD = r"[A-Za-z]{2,12}\b"
_BRACKET_AT = r"\s*(?:@|[\[({<]\s*at\s*[\])}>])\s*"
_WORD_DOT = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+)"
_ANY_DOT = rf"(?:\.(?=\w)|{_WORD_DOT})"
_OBFUSCATED_EMAIL = re.compile(
    rf"(?i)(?<![\w.+\-]){_LOCAL}(?:"
    rf"{_BRACKET_AT}{_LABEL}(?:{_ANY_DOT}{_LABEL})*{_ANY_DOT}{_TLD}"
    rf"|\s+at\s+{_LABEL}(?:{_ANY_DOT}{_LABEL})*{_WORD_DOT}{_LABEL}(?:{_ANY_DOT}{_LABEL})*"
    r")(?<=[A-Za-z])\b"
)
_MAYBE_OBFUSCATED = re.compile(r"(?i)@|[\[({<]\s*at\s*[\])}>]|\sat\s")

# street addresses: a house number (221B, 12, 12-14) then up to 3 name words and a street
# type, optionally a compass direction ("1600 Pennsylvania Avenue NW"). Lower-case name words
# are accepted only before an unambiguous street type and when they are not ordinary words
# ("3 days by road" stays).
_STREET_TYPES = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|sq|"
    "terrace|terr|way|close|crescent|cres|highway|hwy|parkway|pkwy|alley|circle|cir|row|strasse|straße"
)
_STRONG_STREET_TYPES = frozenset(
    "street st avenue ave road rd boulevard blvd lane ln drive highway hwy parkway pkwy strasse straße".split()
)
_STREET_ABBREVIATIONS = frozenset("st ave av rd blvd ln dr ct pl sq terr cres hwy pkwy cir".split())
_NOT_STREET_NAMES = frozenset("The A An And Or Of On In At By For To With".split())
_ADDRESS = re.compile(
    r"(?<![\w.,])(?P<number>\d{1,5}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?)"
    r"(?P<names>(?:\s+(?:\d{1,3}(?:st|nd|rd|th)|[^\W\d_][\w'’\-]*)){1,3}?)"
    rf"\s+(?P<kind>(?i:{_STREET_TYPES}))\b\.?"
    r"(?P<direction>\s+(?:NW|NE|SW|SE|N|S|E|W)\b\.?)?"
)

# names: after an honorific or an introduction / sign-off phrase (any case)
_NAME_PHRASE = re.compile(
    r"(?i)\b(?:(?P<honorific>mr|mrs|ms|miss|mx|dr|prof|sir|madam)\b(?P<dot>\.)?"
    r"|(?P<intro>my\s+name\s+is|i\s+am|i['’]m|this\s+is)\b"
    r"|(?P<signoff>signed|regards|thanks)\b)(?P<comma>[,:])?(?=\s)"
)
_NAME_WORD = re.compile(r"\s+(?P<word>[^\W\d_]\.(?!\w)|[^\W\d_][\w'’\-]*)")
_PARTICLES = frozenset("van von der den de la le du da di del bin al".split())
# ordinary words that end (or stop) a name: function words, common verbs and adjectives of
# reviews, so "I am happy", "this is great", "thanks for ...", "signed up" keep their text
_NOT_NAMES = frozenset(
    """
    a about after again all also always am an and any are as at away back be because been before being
    best both but by can cannot could did do does done each either else enough even ever every for from
    further had has have having he her here hers him his how however i if in into is it its just least
    less like lot lots many may me might mine more most much must my myself neither never no nor not now
    of off often on once only or other our ours out over own please quite rather really same she should
    since so some still such than that the their them then there these they this those though through
    thus to too under until up upon us very was we well were what when where whether which while who
    whom whose why will with within without would yet you your yours
    happy glad sure sorry satisfied pleased disappointed unhappy great good bad fine nice ok okay
    excellent perfect terrible awful amazing love loving like liking hate hating new old big small fast
    slow late early cheap expensive free busy ready able unable going getting trying looking waiting
    writing buying ordering returning using still again already afraid impressed confused done
    everyone everybody anyone guys team folks man mate buddy dear all y'all ya
    product item items order orders delivery shipping seller store shop service support price quality
    size colour color shoes phone copy receipt
    said says told tells asked asks helped helps sent sends delivered delivers called calls came comes
    gave gives got gets made makes took takes went goes replied replies answered answers wrote writes
    yes yeah yep nope hi hello hey
    """.split()
)
_MAX_LOWER_NAME = {"honorific": 2, "intro": 3, "signoff": 3}


def _is_capitalised(word: str) -> bool:
    return word[0].isupper()


def _particle_then_name(words: Sequence[tuple[int, str]]) -> bool:
    """Whether ``words`` are name particles ("van der") followed by a capitalised word."""
    for _, word in words:
        if word.lower() not in _PARTICLES:
            return _is_capitalised(word) and word.lower() not in _NOT_NAMES
    return False


def _take_name(text: str, pos: int, kind: str, lower_ok: bool) -> int:
    """Return the end of the name that starts after ``pos`` (``pos`` when there is none)."""
    end = pos
    words: list[tuple[int, str]] = []
    cursor = pos
    while len(words) < 6:
        m = _NAME_WORD.match(text, cursor)
        if not m:
            break
        words.append((m.end(), m.group("word")))
        cursor = m.end()
    if not words:
        return pos
    first = words[0][1]
    if _is_capitalised(first):
        # every following capitalised word (initials, particles between capitalised words)
        for i, (stop, word) in enumerate(words):
            if word.lower() in _NOT_NAMES:
                break
            if _is_capitalised(word):
                end = stop
            elif word.lower() in _PARTICLES and _particle_then_name(words[i:]):
                continue
            else:
                break
        return end
    if not lower_ok:
        return pos
    count = 0
    for stop, word in words:
        if count >= _MAX_LOWER_NAME[kind] or _is_capitalised(word) or word.lower() in _NOT_NAMES or "." in word:
            break
        end = stop
        count += 1
    return end


def _replace_names(text: str) -> str:
    out: list[str] = []
    last = 0
    for m in _NAME_PHRASE.finditer(text):
        if m.start() < last:
            continue
        kind = "honorific" if m.group("honorific") else "intro" if m.group("intro") else "signoff"
        phrase = m.group(0)
        if kind == "honorific":
            # a lower-case honorific without its dot ("ms office") only takes capitalised names
            lower_ok = bool(m.group("dot")) or _is_capitalised(phrase)
        elif kind == "intro":
            # "i am happy", "this is great": only "my name is" takes lower-case names
            lower_ok = m.group("intro").lower().startswith("my")
        else:
            # a sign-off ("thanks john", "regards, maria garcia") starts the text, a sentence or
            # a clause, and its lower-case name ends the text or a clause
            before = text[: m.start()].rstrip()
            lower_ok = not before or before[-1] in ".!?,;:-\n"
        end = _take_name(text, m.end(), kind, lower_ok)
        if kind == "signoff" and end > m.end() and not _is_capitalised(_NAME_WORD.match(text, m.end()).group("word")):
            rest = text[end:].lstrip(" \t")
            if rest and rest[0] not in ".!?,;:)\n":
                end = m.end()
        if end == m.end():
            continue
        if kind == "honorific":
            out.append(text[last : m.start()] + "[name]")
        else:
            out.append(text[last : m.end()] + " [name]")
        last = end
    out.append(text[last:])
    return "".join(out)


def _replace_addresses(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        names = m.group("names").split()
        kind = m.group("kind").lower()
        capitalised = all(w[0].isupper() or w[0].isdigit() for w in names)
        if not capitalised:
            lower = [w for w in names if not (w[0].isupper() or w[0].isdigit())]
            if kind not in _STRONG_STREET_TYPES or any(w.lower() in _NOT_NAMES for w in lower):
                return m.group(0)
        if any(w in _NOT_STREET_NAMES for w in names):
            return m.group(0)
        # the dot after a full street type ("Street.") ends the sentence: keep it
        keep_dot = m.group(0).endswith(".") and kind not in _STREET_ABBREVIATIONS and not m.group("direction")
        return "[address]." if keep_dot else "[address]"

    return _ADDRESS.sub(replace, text)


def scrub(text: str | None, forbidden: Sequence[str] = ()) -> str:
    """Return ``text`` with personal data replaced by placeholders, whitespace collapsed.

    Replaces URLs (``[url]``), e-mail addresses, also obfuscated ones ("john at example dot
    com", "john [at] example [dot] com", "john(at)example.com") (``[email]``), @handles
    (``[handle]``), each string in ``forbidden`` (e.g. the user's own id, matched
    case-insensitively) by ``[user]``, phone numbers and other numbers of 7+ digits
    (``[number]``), street addresses ("221B Baker Street", "12 Main St.", "1600 Pennsylvania
    Avenue NW") (``[address]``) and names (``[name]``): an honorific (Mr, Mrs, Ms, Miss, Mx,
    Dr, Prof, Sir, Madam) with the whole name after it, and the whole name after "my name
    is", "I am", "I'm", "this is", "signed", "regards", "thanks", in any case. A name is every
    following capitalised word (initials and particles such as "van der" included); a
    lower-case name (up to 3 words, 2 after an honorific) is taken only after "my name is", an
    honorific written with its dot or capitalised, or a sign-off that starts a sentence or
    clause and whose name ends one; ordinary words ("I am happy", "this is great", "thanks for
    ...") are never taken. ``None`` gives ``""``. Never raises.
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
    if _MAYBE_OBFUSCATED.search(text):
        text = _OBFUSCATED_EMAIL.sub("[email]", text)
    if "@" in text:
        text = _HANDLE.sub("[handle]", text)
    return text


@lru_cache(maxsize=4_096)
def _scrub_numbers_names(text: str) -> str:
    text = _LONG_NUMBER.sub("[number]", text)
    text = _replace_addresses(text)
    text = _replace_names(text)
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


# --------------------------------------------------------------------------- segments (reading a text back)

SEGMENT_KINDS: tuple[str, ...] = ("tenure", "totals", "events", "order", "category", "search", "review", "other")
"""What a part of a rendered text stands for (:func:`segments`): the fixed sentences (``tenure``
and ``events`` in v1 only, ``totals`` in both), one recent item (``order``, ``search``,
``review``; a section's ``orders:`` header is an item with index -1), the category word(s) of
an order (``category``, inside its order's span), and ``other`` for what could not be read."""

_SECTIONS = (("order", "orders: "), ("search", "searches: "), ("review", "reviews: "))
_WHEN = r"(?:same day |\d+ days? earlier |today |\d+ days? ago )?"
_ORDER_ITEM = re.compile(rf"^{_WHEN}(?P<amount>\d+\.\d{{2}})(?: (?P<category>.+?))?(?: \((?P<status>[^()]*)\))?$")
_SEARCH_START = re.compile(rf"(?:^|(?<=; )){_WHEN}\"")
_REVIEW_START = re.compile(rf"(?:^|(?<=; )){_WHEN}(?P<rating>[1-5])/5(?= \"|;|$)")


@dataclass(frozen=True)
class Segment:
    """A span ``text[start:end]`` of a rendered text and what it stands for.

    ``kind`` is one of ``SEGMENT_KINDS``; ``index`` the item's place in its list (0: newest;
    -1: the section header; 0 for the fixed sentences); ``value`` what a reason may show of it:
    the order's amount, its category, the search query (all scrubbed when rendered), the review's
    rating (never its body), the fixed sentence itself.
    """

    kind: str
    start: int
    end: int
    index: int = 0
    value: str = ""


def _fixed_kind(sentence: str) -> str:
    if sentence.startswith(("member for", "joined today")):
        return "tenure"
    if "completed order" in sentence:
        return "totals"
    if sentence.startswith(("last 30 days", "last 90 days", "no browsing events", "last active")):
        return "events"
    return "other"


def _item_spans(body: str, starts: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of each item of a section body, given where items start (each ends before the next's ``"; "``)."""
    spans = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 2 if i + 1 < len(starts) else len(body)
        spans.append((start, end))
    return spans


def segments(text: str) -> list[Segment]:
    """Return the segments of a text :func:`render` wrote (v1 or v2), in text order; never raises.

    The fixed sentences, then per section (``orders:``, ``searches:``, ``reviews:``) a header
    segment and one segment per item; an order's category is a ``category`` segment nested in
    its order. A part that does not parse (free text that happens to look like the template's
    punctuation) is left out, so its tokens count as ``other``.
    """
    out: list[Segment] = []
    starts: list[tuple[int, str, str]] = []
    cursor = 0
    for kind, header in _SECTIONS:
        position = 0 if text.startswith(header) and cursor == 0 else text.find(" " + header, cursor)
        if position < 0:
            continue
        begin = position if position == 0 else position + 1
        starts.append((begin, kind, header))
        cursor = begin + len(header)
    fixed_end = starts[0][0] if starts else len(text)
    for sentence in re.finditer(r"[^.]*(?:\.\d[^.]*)*\.?", text[:fixed_end]):
        chunk = sentence.group(0)
        stripped = chunk.strip()
        if stripped:
            lead = len(chunk) - len(chunk.lstrip())
            begin = sentence.start() + lead
            out.append(Segment(_fixed_kind(stripped), begin, begin + len(stripped), 0, stripped.rstrip(".")))
    for i, (begin, kind, header) in enumerate(starts):
        end = starts[i + 1][0] - 1 if i + 1 < len(starts) else len(text)
        body_start = begin + len(header)
        body = text[body_start:end]
        if body.endswith("."):
            body = body[:-1]
        out.append(Segment(kind, begin, body_start, -1, ""))
        if kind == "order":
            item_starts = [0] + [m.end() for m in re.finditer(r"; ", body)]
        elif kind == "search":
            item_starts = [m.start() for m in _SEARCH_START.finditer(body)]
        else:
            item_starts = [m.start() for m in _REVIEW_START.finditer(body)]
        for index, (a, b) in enumerate(_item_spans(body, item_starts)):
            item = body[a:b]
            s, e = body_start + a, body_start + b
            if kind == "order":
                m = _ORDER_ITEM.match(item)
                out.append(Segment("order", s, e, index, m.group("amount") if m else ""))
                if m and m.group("category"):
                    out.append(Segment("category", s + m.start("category"), s + m.end("category"), index, m.group("category")))
            elif kind == "search":
                quoted = re.search(r"\"(.*)\"$", item)
                out.append(Segment("search", s, e, index, quoted.group(1) if quoted else ""))
            else:
                m = _REVIEW_START.match(item)
                out.append(Segment("review", s, e, index, m.group("rating") if m else ""))
    return out
