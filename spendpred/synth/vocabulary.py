"""What the synthetic population is drawn from: categories and prices, words and phrases, rhythms and rates.

The four contract tables' Arrow schemas (``SCHEMAS``), the vocabulary of searches and reviews
(premium words for high purchasing power, budget words for low), the daily and weekly rhythms,
the calibrated rates, and the small Arrow helpers that draw strings from them. Shared by the
population generator (:mod:`spendpred.synth.population`) and the day-by-day appends
(:mod:`spendpred.synth.days`), so both write rows that look alike.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SECONDS_PER_DAY = 86_400

# Arrow schemas of the four source relations (column order = sql/schema/001_source*.sql).
SCHEMAS: dict[str, pa.Schema] = {
    "users": pa.schema(
        [("user_id", pa.string()), ("signup_at", pa.timestamp("us")), ("country", pa.string()), ("segment", pa.string())]
    ),
    "orders": pa.schema(
        [
            ("order_id", pa.string()),
            ("user_id", pa.string()),
            ("ordered_at", pa.timestamp("us")),
            ("amount", pa.float64()),
            ("items", pa.int32()),
            ("category", pa.string()),
            ("status", pa.string()),
        ]
    ),
    "events": pa.schema(
        [
            ("user_id", pa.string()),
            ("occurred_at", pa.timestamp("us")),
            ("event_type", pa.string()),
            ("category", pa.string()),
            ("query", pa.string()),
            ("price", pa.float64()),
        ]
    ),
    "reviews": pa.schema(
        [("user_id", pa.string()), ("created_at", pa.timestamp("us")), ("rating", pa.int32()), ("body", pa.string())]
    ),
}

EVENT_TYPES = ("view", "click", "add_to_cart", "search", "wishlist")
ORDER_STATUSES = ("completed", "cancelled", "refunded")
SEGMENTS = ("budget", "mainstream", "premium")

CATEGORIES = ("electronics", "fashion", "home", "beauty", "books", "sports", "toys", "grocery", "music", "garden")
_CATEGORY_PRICE = np.array([120.0, 45.0, 60.0, 25.0, 15.0, 40.0, 25.0, 12.0, 14.0, 35.0])
_CATEGORY_POPULARITY = np.array([0.14, 0.16, 0.12, 0.10, 0.09, 0.08, 0.07, 0.11, 0.05, 0.08])
_PRODUCTS = np.array(
    [
        ["headphones", "laptop", "smartphone", "tv", "camera"],
        ["sneakers", "jacket", "handbag", "dress", "sunglasses"],
        ["sofa", "lamp", "coffee maker", "bedding", "vacuum cleaner"],
        ["perfume", "face cream", "lipstick", "shampoo", "serum"],
        ["novel", "cookbook", "biography", "comic", "textbook"],
        ["running shoes", "yoga mat", "bike", "tennis racket", "dumbbells"],
        ["lego set", "puzzle", "doll", "board game", "rc car"],
        ["coffee beans", "olive oil", "tea", "chocolate", "snacks"],
        ["vinyl record", "cd box set", "guitar strings", "turntable", "concert dvd"],
        ["lawn mower", "plant pots", "seeds", "garden hose", "bbq grill"],
    ]
)

#: Words a search query or review uses for the expensive end of the market.
PREMIUM_WORDS = (
    "luxury", "premium", "designer", "professional", "high end",
    "handmade", "limited edition", "flagship", "organic", "genuine leather",
)  # fmt: skip
#: Words a search query or review uses for the cheap end of the market.
BUDGET_WORDS = (
    "cheap", "budget", "discount", "sale", "clearance",
    "under 20", "refurbished", "deal", "bargain", "second hand",
)  # fmt: skip
_NEUTRAL_WORDS = ("", "", "", "best", "new", "black", "gift", "small", "wireless", "2 pack")

_COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "JP", "BR", "CA", "AU", "IN")
_COUNTRY_P = np.array([0.30, 0.10, 0.10, 0.08, 0.06, 0.06, 0.04, 0.03, 0.04, 0.05, 0.05, 0.04, 0.03, 0.02])

# Daily rhythm (hour of day) and weekly rhythm (Monday first).
_HOUR_W = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 10, 11, 10, 7, 4], dtype=float)
_HOUR_P = _HOUR_W / _HOUR_W.sum()
_ORDER_WEEKDAY = np.array([1.00, 0.95, 0.95, 0.97, 1.02, 1.10, 1.15])
_EVENT_WEEKDAY = np.array([0.95, 0.92, 0.92, 0.95, 1.00, 1.15, 1.20])

_OPENERS = np.array(
    [
        ["Terrible.", "Very disappointed.", "Awful experience.", "Do not buy."],
        ["Not great.", "Rather disappointing.", "Below expectations.", "Meh, not happy."],
        ["It is okay.", "Average.", "Does the job.", "Fine, nothing special."],
        ["Good purchase.", "Pretty happy with it.", "Nice product.", "Works well."],
        ["Excellent!", "Absolutely love it!", "Fantastic quality!", "Perfect, highly recommend!"],
    ]
)
_PREMIUM_PHRASES = np.array(
    [
        "Premium quality, worth every penny.",
        "Luxury feel and a designer finish.",
        "High end materials, genuine leather details.",
        "Professional grade, the flagship model is worth it.",
    ]
)
_BUDGET_PHRASES = np.array(
    [
        "Cheap but it does the job.",
        "Bought it on sale, good deal for a budget buy.",
        "Great bargain at the discount price.",
        "Clearance price, fine for the money.",
    ]
)
_NEUTRAL_PHRASES = np.array(["", "Arrived on time.", "As described.", "Packaging was fine."])
_CLOSERS = np.array(
    [
        "Probably my last order here.",
        "Not sure I will shop here again.",
        "",
        "Will order again.",
        "Already planning my next order!",
    ]
)
_PII_NAMES = np.array(["jane.doe", "john.smith", "maria.garcia", "li.wei", "anna.k", "tom.b"])

DECLINE_DAYS = 90.0
DEFAULT_DAILY_ACTIVE = 0.05
"""Share of the users signed up by a day who have any order, event or review on that day."""
MAX_DAILY_ACTIVE = 0.5
_VISIT_CAP = 0.9  # no user browses on more than 90% of days in expectation
_SESSION_S = 2 * 3600  # the purchase funnel happens in the two hours before an order
_ORDER_RATE_PER_YEAR = 3.2
_EVENT_RATE_PER_YEAR = 22.0
_REVIEW_PROBABILITY = 0.24
_PII_PROBABILITY = 0.01


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _take(values: np.ndarray | tuple[str, ...], codes: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    """Strings ``values[codes]`` as an Arrow array; null where ``null_mask`` is true."""
    indices = pa.array(codes.astype(np.int32), mask=null_mask) if null_mask is not None else pa.array(codes.astype(np.int32))
    return pc.take(pa.array(list(values), pa.string()), indices)


def _join(*parts: pa.Array | str, sep: str = " ") -> pa.Array:
    """Join string arrays element-wise, dropping empty parts and doubled spaces."""
    joined = pc.binary_join_element_wise(*parts, sep)
    if sep == " ":
        joined = pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, pattern=" {2,}", replacement=" "))
    return joined


def _pick_words(rng: np.random.Generator, z: np.ndarray, slope: float, offset: float) -> np.ndarray:
    """Per row 0 (premium), 1 (budget) or 2 (neutral) vocabulary, premium more likely for high z."""
    r = rng.random(z.size)
    p_premium = _sigmoid(slope * z - offset)
    p_budget = _sigmoid(-slope * z - offset)
    return np.where(r < p_premium, 0, np.where(r < p_premium + p_budget, 1, 2))


def _products(rng: np.random.Generator, category: np.ndarray) -> pa.Array:
    per_category = _PRODUCTS.shape[1]
    return _take(_PRODUCTS.ravel(), category * per_category + rng.integers(0, per_category, size=category.size))


def _personal_data(rng: np.random.Generator, n: int) -> pa.Array:
    """About 1% fictitious e-mail addresses or phone numbers, else empty strings."""
    email = _join(
        "Contact me at ",
        _take(_PII_NAMES, rng.integers(0, _PII_NAMES.size, size=n)),
        pc.cast(pa.array(rng.integers(1, 100, size=n)), pa.string()),
        "@example.com",
        sep="",
    )
    phone = _join(
        "Call me on +1-555-01", pc.utf8_lpad(pc.cast(pa.array(rng.integers(0, 100, size=n)), pa.string()), 2, "0"), sep=""
    )
    text = pc.if_else(pa.array(rng.random(n) < 0.5), email, phone)
    return pc.if_else(pa.array(rng.random(n) < _PII_PROBABILITY), text, pa.scalar("", pa.string()))
