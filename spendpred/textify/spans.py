"""Reading a rendered text back: which span of it stands for which fact (:func:`segments`).

Reason codes (:mod:`spendpred.explain`) attribute a model's prediction to the parts of the
text it read: the fixed sentences, each recent order (and its category), search and review.
Parses both templates of :func:`spendpred.textify.templates.render`; never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
