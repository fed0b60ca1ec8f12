"""Synthetic warehouse: a realistic e-commerce population for demos, tests and benchmarks.

Every user gets latent traits drawn once:

- **purchasing power** ``z ~ N(0, 1)``, used on a log scale (lognormal, heavy-tailed spend):
  it drives order frequency (Poisson rate ``∝ exp(0.55 z)``), basket size, item prices,
  the favourite categories (rich users lean to expensive ones), the segment, and the
  vocabulary of searches and reviews (premium words for high ``z``, budget words for low);
- **engagement** (correlated with power) drives browsing volume;
- **satisfaction** drives review ratings and the churn probability.

Timestamps follow weekly and yearly seasonality (a December peak and a Black-Friday spike
for orders, weekend browsing) and a daily rhythm. Signups are spread over the window (a
large share in its first weeks, standing in for long-time customers). Churners stop at a
churn date and their activity declines over the 90 days before it; reviews written shortly
before churning are worse and say so. About a third of users never buy, a few orders are
cancelled or refunded, about 20% of completed or refunded orders get a review, and about
1% of review bodies contain an e-mail address or phone number (fictitious: example.com,
555-01xx) for the scrubbing step to find.

Every timestamp, ``signup_at`` included, lies inside the requested window
``[end_date - days + 1 00:00:00, end_date 23:59:59]`` and is a whole second.

Reproducibility: chunk ``k`` draws from ``SeedSequence(seed, spawn_key=(k,))``, so the same
``(users, days, end_date, seed, chunk_users)`` always gives the same rows. The data does
depend on ``chunk_users`` (users are drawn chunk by chunk), which is why it has a fixed
default; keep it fixed when comparing runs.

Seeding writes everything in **one transaction** (empty the four source tables, then bulk
insert chunk by chunk): readers see the old contents until the new ones are complete, and
a failure leaves the warehouse as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from spendpred import warehouse
from spendpred.errors import ConfigError, DataError
from spendpred.warehouse import SOURCE_TABLES

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_USERS = 100_000
MAX_DAYS = 36_500
MAX_USERS = 50_000_000
"""More synthetic users than a platform plausibly has is a typo (a 14-digit count ran 10 minutes
and grew a 9 GB SQLite WAL before this bound)."""
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
_ORDER_RATE_PER_YEAR = 3.2
_EVENT_RATE_PER_YEAR = 22.0
_REVIEW_PROBABILITY = 0.24
_PII_PROBABILITY = 0.01


@dataclass(frozen=True)
class _Window:
    """The generated time window, as whole seconds from its first midnight."""

    start: np.datetime64  # [s]
    days: int
    order_season: np.ndarray  # per day, in (0, 1]
    event_season: np.ndarray  # per day, in (0, 1]

    @property
    def total_s(self) -> int:
        return self.days * SECONDS_PER_DAY


def _window(end_date: dt.date, days: int) -> _Window:
    start_day = np.datetime64(end_date, "D") - np.timedelta64(days - 1, "D")
    day_dates = start_day + np.arange(days)
    weekday = (day_dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    doy = (day_dates - day_dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
    christmas = 0.25 * np.cos(2 * np.pi * (doy - 352) / 365.25)
    black_friday = 0.6 * np.exp(-(((doy - 330) / 4.0) ** 2))
    order_season = _ORDER_WEEKDAY[weekday] * (1.0 + christmas + black_friday)
    event_season = _EVENT_WEEKDAY[weekday] * (1.0 + 0.5 * christmas + 0.3 * black_friday)
    return _Window(
        start=start_day.astype("datetime64[s]"),
        days=days,
        order_season=order_season / order_season.max(),
        event_season=event_season / event_season.max(),
    )


def _validate(users: int, days: int, end_date: dt.date, seed: int, chunk_users: int) -> dt.date:
    for name, value in (("users", users), ("days", days), ("seed", seed), ("chunk_users", chunk_users)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if users < 1 or users > MAX_USERS:
        raise ConfigError(f"users must be between 1 and {MAX_USERS:,}, got {users:,}")
    if days < 1 or days > MAX_DAYS:
        raise ConfigError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if chunk_users < 1:
        raise ConfigError(f"chunk_users must be at least 1, got {chunk_users}")
    if isinstance(end_date, dt.datetime):
        end_date = end_date.date()
    if not isinstance(end_date, dt.date):
        raise ConfigError(f"end_date must be a date (YYYY-MM-DD), got {end_date!r}")
    if end_date.toordinal() - days + 1 < dt.date(1900, 1, 1).toordinal():
        raise ConfigError(f"end_date {end_date} minus {days} days starts before 1900-01-01: use fewer days")
    return end_date


def generate(
    users: int,
    days: int,
    end_date: dt.date,
    seed: int,
    chunk_users: int = DEFAULT_CHUNK_USERS,
) -> Iterator[dict[str, pa.Table]]:
    """Generate a synthetic population chunk by chunk, without touching any database.

    Yields one dict per chunk of at most ``chunk_users`` users, with keys ``users``,
    ``orders``, ``events`` and ``reviews``; each value is a ``pyarrow.Table`` whose columns
    are exactly those of the contract table (schemas in ``SCHEMAS``). Same arguments, same
    rows. Raises ``ConfigError`` (at call time, not on first iteration) for bad arguments.
    """
    end_date = _validate(users, days, end_date, seed, chunk_users)
    return _generate(users, days, end_date, seed, chunk_users)


def _generate(users: int, days: int, end_date: dt.date, seed: int, chunk_users: int) -> Iterator[dict[str, pa.Table]]:
    window = _window(end_date, days)
    id_width = max(7, len(str(users - 1)))
    for index, first in enumerate(range(0, users, chunk_users)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        yield _chunk(rng, first, min(chunk_users, users - first), window, id_width)


# --------------------------------------------------------------------------------------
# one chunk


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _timestamps(window: _Window, seconds: np.ndarray) -> pa.Array:
    return pa.array((window.start + seconds.astype("timedelta64[s]")).astype("datetime64[us]"), pa.timestamp("us"))


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


def _arrivals(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    rate_per_day: np.ndarray,
    season: np.ndarray,
    churn_at: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal Poisson arrivals per user in ``[lo, hi)`` seconds, thinned before churn.

    Returns ``(owner, seconds)``: the user index and the time of each arrival.
    """
    duration = hi - lo
    counts = rng.poisson(rate_per_day * duration / SECONDS_PER_DAY)
    owner = np.repeat(np.arange(lo.size), counts)
    t = lo[owner] + (rng.random(owner.size) * duration[owner]).astype(np.int64)
    day = t // SECONDS_PER_DAY
    days_to_churn = (churn_at[owner] - t) / SECONDS_PER_DAY
    decline = np.where(days_to_churn < DECLINE_DAYS, 0.3 + 0.7 * np.clip(days_to_churn, 0, None) / DECLINE_DAYS, 1.0)
    keep = rng.random(owner.size) < season[day] * decline
    owner, day = owner[keep], day[keep]
    tod = rng.choice(24, size=owner.size, p=_HOUR_P) * 3600 + rng.integers(0, 3600, size=owner.size)
    t = np.clip(day * SECONDS_PER_DAY + tod, lo[owner], hi[owner] - 1)
    return owner, t


@dataclass(frozen=True)
class _People:
    """Latent traits and lifetimes of one chunk's users (arrays of length n)."""

    numbers: pa.Array  # zero-padded user numbers, "0000123"
    user_ids: pa.Array  # "u0000123"
    z: np.ndarray  # log purchasing power, N(0, 1)
    engagement: np.ndarray  # browsing multiplier, mean 1, correlated with z
    satisfaction: np.ndarray  # N(0, 1): ratings, refunds, churn
    buyer: np.ndarray  # False for users who never buy
    favourite: np.ndarray  # favourite category index
    signup: np.ndarray  # seconds from the window start
    churn_at: np.ndarray  # seconds; _NEVER when the user does not churn inside the window
    stop: np.ndarray  # end of activity: churn_at or the window end

    @property
    def churner(self) -> np.ndarray:
        return self.churn_at != _NEVER


_NEVER = np.int64(1) << 62


def _people(rng: np.random.Generator, first: int, n: int, window: _Window, id_width: int) -> _People:
    total = window.total_s
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(first, first + n, dtype=np.int64)), pa.string()), id_width, "0")
    z = rng.standard_normal(n)
    engagement = np.exp(0.7 * (0.4 * z + np.sqrt(1 - 0.16) * rng.standard_normal(n)) - 0.245)
    satisfaction = rng.standard_normal(n)
    buyer = rng.random(n) >= _sigmoid(-0.8 - 0.8 * z)
    # favourite category: popular ones, the expensive ones for rich users (Gumbel-max draw)
    taste = np.log(_CATEGORY_POPULARITY)[None, :] + 0.6 * z[:, None] * np.log(_CATEGORY_PRICE / _CATEGORY_PRICE.mean())
    favourite = np.argmax(taste + rng.gumbel(size=(n, len(CATEGORIES))), axis=1)
    # signups: 40% in the first weeks (long-time customers), the rest spread evenly
    early = rng.random(n) < 0.4
    signup_frac = np.where(early, rng.beta(1.0, 12.0, size=n), rng.random(n))
    signup = np.minimum((signup_frac * total).astype(np.int64), total - 1)
    # churn: more likely for unhappy and for poorer users; a date after signup
    churns = rng.random(n) < _sigmoid(-1.0 - 1.2 * satisfaction - 0.3 * z)
    churn_at = signup + (rng.random(n) * (total - signup)).astype(np.int64) + 1
    churn_at = np.where(churns & (churn_at < total), churn_at, _NEVER)
    return _People(
        numbers=numbers,
        user_ids=_join("u", numbers, sep=""),
        z=z,
        engagement=engagement,
        satisfaction=satisfaction,
        buyer=buyer,
        favourite=favourite,
        signup=signup,
        churn_at=churn_at,
        stop=np.minimum(churn_at, total),
    )


def _users_table(rng: np.random.Generator, people: _People, window: _Window) -> pa.Table:
    n = people.z.size
    segment = np.digitize(people.z + 0.5 * rng.standard_normal(n), [-0.6, 1.0])
    country = rng.choice(len(_COUNTRIES), size=n, p=_COUNTRY_P)
    return pa.Table.from_arrays(
        [
            people.user_ids,
            _timestamps(window, people.signup),
            _take(_COUNTRIES, country, rng.random(n) < 0.03),
            _take(SEGMENTS, segment, rng.random(n) < 0.02),
        ],
        schema=SCHEMAS["users"],
    )


@dataclass(frozen=True)
class _Orders:
    owner: np.ndarray  # user index, sorted
    t: np.ndarray  # seconds
    category: np.ndarray
    status: np.ndarray  # index into ORDER_STATUSES
    table: pa.Table


def _orders(rng: np.random.Generator, people: _People, window: _Window) -> _Orders:
    z, satisfaction = people.z, people.satisfaction
    yearly = _ORDER_RATE_PER_YEAR * np.exp(0.55 * z + 0.25 * satisfaction - 0.03)
    rate = people.buyer * yearly / 365.0 / window.order_season.mean()
    owner, t = _arrivals(rng, people.signup, people.stop, rate, window.order_season, people.churn_at)
    by_user = np.lexsort((t, owner))
    owner, t = owner[by_user], t[by_user]
    n = owner.size
    category = np.where(
        rng.random(n) < 0.6, people.favourite[owner], rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_POPULARITY)
    )
    items = 1 + rng.poisson(0.35 * np.exp(0.3 * z[owner]))
    unit_price = _CATEGORY_PRICE[category] * np.exp(0.45 * z[owner] + 0.35 * rng.standard_normal(n) - 0.06)
    amount = np.round(np.clip(items * unit_price, 0.5, 99_999.0), 2)
    p_refund = 0.02 + 0.03 * _sigmoid(-2.0 * satisfaction[owner])
    u = rng.random(n)
    status = np.where(u < 0.04, 1, np.where(u < 0.04 + p_refund, 2, 0))  # cancelled 4%, refunded 2-5%
    seq = np.arange(n) - np.searchsorted(owner, owner, side="left") + 1  # 1, 2, ... per user
    order_ids = _join("o", pc.take(people.numbers, pa.array(owner)), "-", pc.cast(pa.array(seq), pa.string()), sep="")
    table = pa.Table.from_arrays(
        [
            order_ids,
            pc.take(people.user_ids, pa.array(owner)),
            _timestamps(window, t),
            pa.array(amount, pa.float64()),
            pa.array(items.astype(np.int32), pa.int32()),
            _take(CATEGORIES, category),
            _take(ORDER_STATUSES, status),
        ],
        schema=SCHEMAS["orders"],
    )
    return _Orders(owner=owner, t=t, category=category, status=status, table=table)


def _pick_words(rng: np.random.Generator, z: np.ndarray, slope: float, offset: float) -> np.ndarray:
    """Per row 0 (premium), 1 (budget) or 2 (neutral) vocabulary, premium more likely for high z."""
    r = rng.random(z.size)
    p_premium = _sigmoid(slope * z - offset)
    p_budget = _sigmoid(-slope * z - offset)
    return np.where(r < p_premium, 0, np.where(r < p_premium + p_budget, 1, 2))


def _products(rng: np.random.Generator, category: np.ndarray) -> pa.Array:
    per_category = _PRODUCTS.shape[1]
    return _take(_PRODUCTS.ravel(), category * per_category + rng.integers(0, per_category, size=category.size))


def _events_table(rng: np.random.Generator, people: _People, orders: _Orders, window: _Window) -> pa.Table:
    # free browsing, proportional to engagement
    rate = _EVENT_RATE_PER_YEAR * people.engagement / 365.0 / window.event_season.mean()
    b_owner, b_t = _arrivals(rng, people.signup, people.stop, rate, window.event_season, people.churn_at)
    b_type = rng.choice(len(EVENT_TYPES), size=b_owner.size, p=[0.55, 0.20, 0.06, 0.12, 0.07])
    b_cat = np.where(
        rng.random(b_owner.size) < 0.5,
        people.favourite[b_owner],
        rng.choice(len(CATEGORIES), size=b_owner.size, p=_CATEGORY_POPULARITY),
    )
    # purchase funnel before each order: a search (half the time), 1-3 views, an add_to_cart
    n_orders = orders.owner.size
    s_idx = np.flatnonzero(rng.random(n_orders) < 0.5)
    v_idx = np.repeat(np.arange(n_orders), 1 + rng.binomial(2, 0.5, size=n_orders))
    a_idx = np.arange(n_orders)
    f_order = np.concatenate([s_idx, v_idx, a_idx])
    f_lag = np.concatenate(
        [
            rng.integers(1800, 3 * SECONDS_PER_DAY, size=s_idx.size),
            rng.integers(600, 3 * SECONDS_PER_DAY, size=v_idx.size),
            rng.integers(60, 6 * 3600, size=a_idx.size),
        ]
    )
    f_type = np.concatenate([np.full(s_idx.size, 3), np.zeros(v_idx.size, dtype=np.int64), np.full(a_idx.size, 2)])
    f_owner = orders.owner[f_order]
    f_t = np.maximum(orders.t[f_order] - f_lag, people.signup[f_owner])

    by_user = np.lexsort((np.concatenate([b_t, f_t]), np.concatenate([b_owner, f_owner])))
    owner = np.concatenate([b_owner, f_owner])[by_user]
    t = np.concatenate([b_t, f_t])[by_user]
    kind = np.concatenate([b_type, f_type])[by_user]
    category = np.concatenate([b_cat, orders.category[f_order]])[by_user]
    n = owner.size
    is_search = kind == 3
    price = np.round(_CATEGORY_PRICE[category] * np.exp(0.45 * people.z[owner] + 0.5 * rng.standard_normal(n)), 2)
    # search queries: "<adjective> <product>", the adjective premium/budget/neutral by power
    s_pos = np.flatnonzero(is_search)
    vocabulary = np.array(PREMIUM_WORDS + BUDGET_WORDS + _NEUTRAL_WORDS)
    words = _pick_words(rng, people.z[owner[s_pos]], 1.6, 1.6) * 10 + rng.integers(0, 10, size=s_pos.size)
    queries = _join(_take(vocabulary, words), _products(rng, category[s_pos]))
    query_index = np.zeros(n, dtype=np.int32)
    query_index[s_pos] = np.arange(s_pos.size, dtype=np.int32)
    return pa.Table.from_arrays(
        [
            pc.take(people.user_ids, pa.array(owner)),
            _timestamps(window, t),
            _take(EVENT_TYPES, kind),
            _take(CATEGORIES, category, is_search),
            pc.take(queries, pa.array(query_index, mask=~is_search)),
            pa.array(price, pa.float64(), mask=is_search),
        ],
        schema=SCHEMAS["events"],
    )


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


def _reviews_table(rng: np.random.Generator, people: _People, orders: _Orders, window: _Window) -> pa.Table:
    # ~24% of completed or refunded orders, written 1-21 days later (if still active)
    picked = np.flatnonzero((orders.status != 1) & (rng.random(orders.owner.size) < _REVIEW_PROBABILITY))
    t = orders.t[picked] + rng.integers(SECONDS_PER_DAY, 21 * SECONDS_PER_DAY, size=picked.size)
    written = t < people.stop[orders.owner[picked]]
    picked, t = picked[written], t[written]
    owner = orders.owner[picked]
    n = owner.size
    satisfaction = people.satisfaction[owner]
    near_churn = people.churner[owner] & ((people.churn_at[owner] - t) < DECLINE_DAYS * SECONDS_PER_DAY)
    refunded = orders.status[picked] == 2
    mood = 0.55 + 0.9 * satisfaction + 0.6 * rng.standard_normal(n) - 1.3 * near_churn - 1.6 * refunded
    rating = 1 + np.digitize(mood, [-1.2, -0.5, 0.2, 0.9])
    per_rating = _OPENERS.shape[1]
    opener = _take(_OPENERS.ravel(), (rating - 1) * per_rating + rng.integers(0, per_rating, size=n))
    phrases = np.concatenate([_PREMIUM_PHRASES, _BUDGET_PHRASES, _NEUTRAL_PHRASES])
    price_phrase = _take(phrases, _pick_words(rng, people.z[owner], 1.8, 1.2) * 4 + rng.integers(0, 4, size=n))
    intent = 0.5 * (rating - 3) + 0.6 * satisfaction - 2.0 * near_churn + 0.7 * rng.standard_normal(n)
    closer = _take(_CLOSERS, np.digitize(intent, [-1.5, -0.6, 0.3, 1.3]))
    product = _join("The", _products(rng, orders.category[picked]), "arrived.")
    body = _join(opener, product, price_phrase, closer, _personal_data(rng, n))
    by_user = np.lexsort((t, owner))
    return pa.Table.from_arrays(
        [
            pc.take(people.user_ids, pa.array(owner)),
            _timestamps(window, t),
            pa.array(rating.astype(np.int32), pa.int32()),
            body,
        ],
        schema=SCHEMAS["reviews"],
    ).take(pa.array(by_user))


def _chunk(rng: np.random.Generator, first: int, n: int, window: _Window, id_width: int) -> dict[str, pa.Table]:
    """Generate users ``first .. first + n - 1``: a dict of the four contract tables."""
    people = _people(rng, first, n, window, id_width)
    users = _users_table(rng, people, window)
    orders = _orders(rng, people, window)
    events = _events_table(rng, people, orders, window)
    reviews = _reviews_table(rng, people, orders, window)
    return {"users": users, "orders": orders.table, "events": events, "reviews": reviews}


# --------------------------------------------------------------------------------------
# writing into the warehouse


def seed_warehouse(
    engine: sa.Engine,
    users: int,
    days: int,
    end_date: dt.date,
    seed: int,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    replace: bool = True,
    *,
    timings: dict[str, float] | None = None,
) -> dict[str, int]:
    """Create the schema if needed and fill the source relations with a synthetic population.

    With ``replace`` (the default) the four source tables are emptied first; without it the
    rows are appended (user and order ids then must not exist yet). Everything happens in
    one transaction, so a failure leaves the warehouse unchanged. Returns the number of rows
    written per table (``users``, ``orders``, ``events``, ``reviews``). When ``timings`` is
    given it receives seconds spent per table writing, ``generate`` (waiting for the next
    chunk; generation overlaps writing), ``replace``, ``commit`` and ``analyze``.

    Raises ``ConfigError`` for bad arguments and ``DataError`` when appended rows collide
    with existing ids.
    """
    end_date = _validate(users, days, end_date, seed, chunk_users)
    warehouse.init_db(engine)
    chunks = -(-users // chunk_users)
    start = end_date - dt.timedelta(days=days - 1)
    logger.info(
        "seeding %d users over %s..%s (%d days), seed %d, %d chunk(s) of %d users, replace=%s",
        users, start, end_date, days, seed, chunks, chunk_users, replace,
    )  # fmt: skip
    counts = dict.fromkeys(SOURCE_TABLES, 0)
    spent = dict.fromkeys((*SOURCE_TABLES, "generate", "replace", "commit", "analyze"), 0.0)
    began = time.perf_counter()
    dbapi = engine.dialect.loaded_dbapi
    try:
        with engine.begin() as conn, contextlib.ExitStack() as cleanup:
            if replace:
                tick = time.perf_counter()
                _empty_source_tables(conn)
                spent["replace"] += time.perf_counter() - tick
            chunk_iter = cleanup.enter_context(
                contextlib.closing(_prefetched(_generate(users, days, end_date, seed, chunk_users)))
            )
            index = 0
            while True:  # chunk_iter is closed (worker thread joined) when this block exits
                tick = time.perf_counter()
                chunk = next(chunk_iter, None)
                spent["generate"] += time.perf_counter() - tick
                if chunk is None:
                    break
                index += 1
                for table in SOURCE_TABLES:
                    tick = time.perf_counter()
                    counts[table] += warehouse.bulk_insert(conn, table, chunk[table])
                    spent[table] += time.perf_counter() - tick
                elapsed = time.perf_counter() - began
                logger.info(
                    "chunk %d/%d written: %d users, %d orders, %d events, %d reviews so far (%.1fs, %.0f rows/s)",
                    index, chunks, counts["users"], counts["orders"], counts["events"], counts["reviews"],
                    elapsed, sum(counts.values()) / max(elapsed, 1e-9),
                )  # fmt: skip
            commit_tick = time.perf_counter()
        spent["commit"] += time.perf_counter() - commit_tick
    except (dbapi.IntegrityError, sa.exc.IntegrityError) as exc:
        raise DataError(
            f"seeding failed on a duplicate or invalid row, nothing was written: {str(exc).splitlines()[0]} "
            "(appending with replace=False needs ids that do not exist yet; seed with replace=True)"
        ) from exc
    if engine.dialect.name == "postgresql":
        tick = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            warehouse.run_script(conn, warehouse.load_sql("load/analyze_sources", "postgresql"))
        spent["analyze"] += time.perf_counter() - tick
    if timings is not None:
        timings.update(spent)
    logger.info("seeded %s in %.1fs", ", ".join(f"{n:,} {table}" for table, n in counts.items()), time.perf_counter() - began)
    return counts


def _prefetched(chunks: Iterator[dict[str, pa.Table]]) -> Iterator[dict[str, pa.Table]]:
    """Yield the chunks of ``chunks`` while the next one is generated in a worker thread.

    Generation (numpy, Arrow) and COPY (waiting on the server) overlap; order and content are
    unchanged, and at most two chunks are held in memory.
    """
    sentinel: dict[str, pa.Table] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth") as pool:
        pending = pool.submit(next, chunks, sentinel)
        while True:
            chunk = pending.result()
            if chunk is sentinel:
                return
            pending = pool.submit(next, chunks, sentinel)
            yield chunk


def _empty_source_tables(conn: sa.Connection) -> None:
    """Delete every row of the four source tables inside the caller's transaction."""
    warehouse.run_script(conn, warehouse.load_sql("load/empty_sources", conn.dialect.name))
