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

Realistic nights: on a given day only a small share of the users does anything. The
**daily-active share** ``daily_active`` (default ``DEFAULT_DAILY_ACTIVE`` = 5%) is the share
of the users signed up by the end of a day who have any order, event or review on that day;
it follows the weekly rhythm (weekends about 15% above the mean, early weekdays about 10%
below) and is the same in every week of the window, whatever the churn and signups. Orders
and reviews come first (their own rates); browsing happens on *visit days*, drawn per day so
that the expected count of active users is exactly the share (engaged users visit more
often, churners less and less, then never), and a user's browsing volume is spread over
their visit days; the purchase funnel (search, views, add_to_cart) happens in the two hours
before each order. Measured (``tests/unit/test_synth.py``, 20,000 users over a year, the
last 60 days): 5.04% of the signed-up users act on an average day for the default (4.35% to
6.17% by day), 2.00% for 0.02, 10.0% for 0.10; 100,000 users over two years: 5.00%.
:func:`append_day` adds one more day of activity at the same share to an existing warehouse.

Every timestamp, ``signup_at`` included, lies inside the requested window
``[end_date - days + 1 00:00:00, end_date 23:59:59]`` and is a whole second.

Reproducibility: chunk ``k`` draws from ``SeedSequence(seed, spawn_key=(k,))``, so the same
``(users, days, end_date, seed, chunk_users, daily_active)`` always gives the same rows. The
data does depend on ``chunk_users`` (users are drawn chunk by chunk), which is why it has a
fixed default; keep it fixed when comparing runs.

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
DEFAULT_DAILY_ACTIVE = 0.05
"""Share of the users signed up by a day who have any order, event or review on that day."""
MAX_DAILY_ACTIVE = 0.5
_VISIT_CAP = 0.9  # no user browses on more than 90% of days in expectation
_SESSION_S = 2 * 3600  # the purchase funnel happens in the two hours before an order
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
    visit_rhythm: np.ndarray  # per day: the weekly rhythm of the daily-active share, mean 1 over the window

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
    visit_rhythm = _EVENT_WEEKDAY[weekday]
    return _Window(
        start=start_day.astype("datetime64[s]"),
        days=days,
        order_season=order_season / order_season.max(),
        visit_rhythm=visit_rhythm / visit_rhythm.mean(),
    )


def _check_daily_active(daily_active: float) -> float:
    """Return the daily-active share as a float; ``ConfigError`` outside ``(0, MAX_DAILY_ACTIVE]``."""
    if isinstance(daily_active, bool) or not isinstance(daily_active, (int, float, np.integer, np.floating)):
        raise ConfigError(f"daily_active must be a number (a share of users, e.g. 0.05), got {daily_active!r}")
    value = float(daily_active)
    if not 0.0 < value <= MAX_DAILY_ACTIVE:
        raise ConfigError(
            f"daily_active must be a share of users in (0, {MAX_DAILY_ACTIVE}], got {daily_active!r} "
            "(0.05: about 5% of the users act on a given day)"
        )
    return value


def _validate(users: int, days: int, end_date: dt.date, seed: int, chunk_users: int, daily_active: float) -> dt.date:
    for name, value in (("users", users), ("days", days), ("seed", seed), ("chunk_users", chunk_users)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    _check_daily_active(daily_active)
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
    _check_not_in_the_future("end_date", end_date)
    return end_date


def _check_not_in_the_future(name: str, day: dt.date) -> None:
    """Refuse a day after tomorrow (UTC): the source contract counts such rows as dated in the future."""
    latest = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
    if day > latest:
        raise ConfigError(
            f"{name} {day} is in the future (the latest plausible day is {latest}, tomorrow): the warehouse contract "
            "refuses rows dated after it; use a date up to today"
        )


def generate(
    users: int,
    days: int,
    end_date: dt.date,
    seed: int,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    daily_active: float = DEFAULT_DAILY_ACTIVE,
) -> Iterator[dict[str, pa.Table]]:
    """Generate a synthetic population chunk by chunk, without touching any database.

    Yields one dict per chunk of at most ``chunk_users`` users, with keys ``users``,
    ``orders``, ``events`` and ``reviews``; each value is a ``pyarrow.Table`` whose columns
    are exactly those of the contract table (schemas in ``SCHEMAS``). ``daily_active`` is the
    share of the users signed up by a day who have any order, event or review on that day
    (see the module docstring). Same arguments, same rows. Raises ``ConfigError`` (at call
    time, not on first iteration) for bad arguments.
    """
    end_date = _validate(users, days, end_date, seed, chunk_users, daily_active)
    return _generate(users, days, end_date, seed, chunk_users, float(daily_active))


def _generate(
    users: int, days: int, end_date: dt.date, seed: int, chunk_users: int, daily_active: float
) -> Iterator[dict[str, pa.Table]]:
    window = _window(end_date, days)
    id_width = max(7, len(str(users - 1)))
    for index, first in enumerate(range(0, users, chunk_users)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        yield _chunk(rng, first, min(chunk_users, users - first), window, id_width, daily_active)


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


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of int64 keys by one sort (numpy's hash-based unique is several times slower here)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys


def _decline(people: _People, owner: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The activity factor of ``owner`` on ``day`` (whole days from the window start): 1, falling
    linearly to 0.3 over the ``DECLINE_DAYS`` before a churn date."""
    days_to_churn = (people.churn_at[owner] - (day + 0.5) * SECONDS_PER_DAY) / SECONDS_PER_DAY
    return np.where(days_to_churn < DECLINE_DAYS, 0.3 + 0.7 * np.clip(days_to_churn, 0, None) / DECLINE_DAYS, 1.0)


def _visit_rates(
    people: _People, window: _Window, daily_active: float, w: np.ndarray, busy_owner: np.ndarray, busy_day: np.ndarray
) -> np.ndarray:
    """``λ(d)`` of :func:`_visit_days` for every day of the window (0 where nobody needs to browse)."""
    days = window.days
    sday = people.signup // SECONDS_PER_DAY
    eday = (people.stop - 1) // SECONDS_PER_DAY + 1  # alive days: [sday, eday)
    churn = people.churn_at / SECONDS_PER_DAY
    # alive weight A(d) = sum of w·decline over alive users, from difference arrays: a constant
    # part until the decline starts, then a + b·d (the linear decline of _decline) until eday
    ds = np.where(people.churner, np.clip(np.ceil(churn - DECLINE_DAYS - 0.5), sday, eday), eday).astype(np.int64)
    a = np.where(people.churner, 0.3 + 0.7 * (churn - 0.5) / DECLINE_DAYS, 0.0)
    b = np.where(people.churner, -0.7 / DECLINE_DAYS, 0.0)
    size = days + 1
    flat = np.bincount(sday, w, size) - np.bincount(ds, w, size)
    lin_a = np.bincount(ds, w * a, size) - np.bincount(eday, w * a, size)
    lin_b = np.bincount(ds, w * b, size) - np.bincount(eday, w * b, size)
    d = np.arange(days)
    alive_weight = (np.cumsum(flat) + np.cumsum(lin_a))[:days] + d * np.cumsum(lin_b)[:days]
    busy_weight = np.bincount(busy_day, w[busy_owner] * _decline(people, busy_owner, busy_day), days)
    signed_up = np.cumsum(np.bincount(sday, minlength=days))[:days]
    wanted = daily_active * signed_up * window.visit_rhythm - np.bincount(busy_day, minlength=days)
    free = alive_weight - busy_weight
    lam = np.where((free > 1e-9) & (wanted > 0), np.maximum(wanted, 0) / np.maximum(free, 1e-9), 0.0)
    # a day whose few alive users cannot reach the share (a tiny population) must not inflate
    # the proposals of every day: λ stays within 10x its median (measured max/median: 1.4)
    positive = lam[lam > 0]
    return np.minimum(lam, 10.0 * np.median(positive)) if positive.size else lam


def _visit_days(
    rng: np.random.Generator,
    people: _People,
    window: _Window,
    daily_active: float,
    busy_owner: np.ndarray,
    busy_day: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The days each user browses, as ``(owner, day)`` sorted by owner then day, one per user and day.

    User u browses on day d (alive: after signup, before churn) with probability
    ``p = min(_VISIT_CAP, λ(d) · w_u · decline_u(d))``, ``w_u = sqrt(engagement)``. ``λ(d)`` is
    set so that the expected number of users with any row on day d, counting the ``busy``
    ``(owner, day)`` pairs that already have an order or review, is ``daily_active × N(d) ×
    rhythm(d)`` (``N(d)``: users signed up by the end of d; ``rhythm``: the weekly rhythm,
    mean 1). Sampled as seasonal Poisson proposals of rate ``-log(1 - p)`` per day, thinned
    and merged per day, so a day is active with probability exactly ``p``.
    """
    n, days = people.z.size, window.days
    w = np.sqrt(people.engagement)
    lam = _visit_rates(people, window, daily_active, w, busy_owner, busy_day)
    if not lam.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rho_max = -np.log1p(-np.minimum(_VISIT_CAP, lam.max() * w))
    alive_s = people.stop - people.signup
    owner = np.repeat(np.arange(n), rng.poisson(rho_max * alive_s / SECONDS_PER_DAY))
    t = people.signup[owner] + (rng.random(owner.size) * alive_s[owner]).astype(np.int64)
    day = t // SECONDS_PER_DAY
    rho = -np.log1p(-np.minimum(_VISIT_CAP, lam[day] * w[owner] * _decline(people, owner, day)))
    keep = rng.random(owner.size) * rho_max[owner] < rho
    key = _sorted_unique(owner[keep] * days + day[keep])
    return key // days, key % days


def _events_table(
    rng: np.random.Generator,
    people: _People,
    orders: _Orders,
    reviews: _Reviews,
    window: _Window,
    daily_active: float,
) -> pa.Table:
    # browsing: every visit day has a first event; the user's remaining browsing volume
    # (proportional to engagement) is spread over their visit days
    busy = _sorted_unique(np.concatenate([orders.owner * window.days + orders.t // SECONDS_PER_DAY,
                                     reviews.owner * window.days + reviews.t // SECONDS_PER_DAY]))
    v_owner, v_day = _visit_days(rng, people, window, daily_active, busy // window.days, busy % window.days)
    n_people = people.z.size
    per_user = np.bincount(v_owner, minlength=n_people)
    first_visit = np.cumsum(per_user) - per_user
    volume = rng.poisson(_EVENT_RATE_PER_YEAR / 365.0 * people.engagement * (people.stop - people.signup) / SECONDS_PER_DAY)
    extra = np.repeat(np.arange(n_people), np.where(per_user > 0, np.maximum(volume - per_user, 0), 0))
    visit = np.concatenate([np.arange(v_owner.size), first_visit[extra] + (rng.random(extra.size) * per_user[extra]).astype(np.int64)])
    b_owner, b_day = v_owner[visit], v_day[visit]
    lo = np.maximum(b_day * SECONDS_PER_DAY, people.signup[b_owner])
    hi = np.minimum((b_day + 1) * SECONDS_PER_DAY, people.stop[b_owner])
    b_t = b_day * SECONDS_PER_DAY + rng.choice(24, size=b_owner.size, p=_HOUR_P) * 3600 + rng.integers(0, 3600, size=b_owner.size)
    outside = (b_t < lo) | (b_t >= hi)  # the signup or churn day: anywhere in the part the user was there
    b_t = np.where(outside, lo + (rng.random(b_owner.size) * (hi - lo)).astype(np.int64), b_t)
    b_type = rng.choice(len(EVENT_TYPES), size=b_owner.size, p=[0.55, 0.20, 0.06, 0.12, 0.07])
    b_cat = np.where(
        rng.random(b_owner.size) < 0.5,
        people.favourite[b_owner],
        rng.choice(len(CATEGORIES), size=b_owner.size, p=_CATEGORY_POPULARITY),
    )
    # purchase funnel in the session before each order, on its day (at most _SESSION_S before it):
    # a search (half the time), 1-3 views, an add_to_cart (the search early, the add_to_cart late)
    n_orders = orders.owner.size
    s_idx = np.flatnonzero(rng.random(n_orders) < 0.5)
    v_idx = np.repeat(np.arange(n_orders), 1 + rng.binomial(2, 0.5, size=n_orders))
    a_idx = np.arange(n_orders)
    f_order = np.concatenate([s_idx, v_idx, a_idx])
    f_share = np.concatenate(
        [0.5 * rng.random(s_idx.size), rng.random(v_idx.size), 0.5 + 0.5 * rng.random(a_idx.size)]
    )
    f_type = np.concatenate([np.full(s_idx.size, 3), np.zeros(v_idx.size, dtype=np.int64), np.full(a_idx.size, 2)])
    f_owner = orders.owner[f_order]
    o_t = orders.t[f_order]
    f_lo = np.maximum(np.maximum(o_t // SECONDS_PER_DAY * SECONDS_PER_DAY, o_t - _SESSION_S), people.signup[f_owner])
    f_t = f_lo + (f_share * (o_t - f_lo)).astype(np.int64)

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


@dataclass(frozen=True)
class _Reviews:
    owner: np.ndarray  # user index, sorted
    t: np.ndarray  # seconds
    table: pa.Table


def _reviews_table(rng: np.random.Generator, people: _People, orders: _Orders, window: _Window) -> _Reviews:
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
    table = pa.Table.from_arrays(
        [
            pc.take(people.user_ids, pa.array(owner)),
            _timestamps(window, t),
            pa.array(rating.astype(np.int32), pa.int32()),
            body,
        ],
        schema=SCHEMAS["reviews"],
    ).take(pa.array(by_user))
    return _Reviews(owner=owner[by_user], t=t[by_user], table=table)


def _chunk(
    rng: np.random.Generator, first: int, n: int, window: _Window, id_width: int, daily_active: float
) -> dict[str, pa.Table]:
    """Generate users ``first .. first + n - 1``: a dict of the four contract tables."""
    people = _people(rng, first, n, window, id_width)
    users = _users_table(rng, people, window)
    orders = _orders(rng, people, window)
    reviews = _reviews_table(rng, people, orders, window)
    events = _events_table(rng, people, orders, reviews, window, daily_active)
    return {"users": users, "orders": orders.table, "events": events, "reviews": reviews.table}


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
    daily_active: float = DEFAULT_DAILY_ACTIVE,
    timings: dict[str, float] | None = None,
) -> dict[str, int]:
    """Create the schema if needed and fill the source relations with a synthetic population.

    With ``replace`` (the default) the four source tables are emptied first; without it the
    rows are appended (user and order ids then must not exist yet). Everything happens in
    one transaction, so a failure leaves the warehouse unchanged. Returns the number of rows
    written per table (``users``, ``orders``, ``events``, ``reviews``). ``daily_active`` is the
    share of users acting on a given day (``generate``). When ``timings`` is
    given it receives seconds spent per table writing, ``generate`` (waiting for the next
    chunk; generation overlaps writing), ``replace``, ``commit`` and ``analyze``.

    Raises ``ConfigError`` for bad arguments and ``DataError`` when appended rows collide
    with existing ids.
    """
    end_date = _validate(users, days, end_date, seed, chunk_users, daily_active)
    warehouse.init_db(engine)
    chunks = -(-users // chunk_users)
    start = end_date - dt.timedelta(days=days - 1)
    logger.info(
        "seeding %d users over %s..%s (%d days), seed %d, daily-active share %g, %d chunk(s) of %d users, replace=%s",
        users, start, end_date, days, seed, daily_active, chunks, chunk_users, replace,
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
                contextlib.closing(_prefetched(_generate(users, days, end_date, seed, chunk_users, float(daily_active))))
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


# --------------------------------------------------------------------------------------
# one more day of activity

_APPEND_STREAM = 0x61707064  # "appd": the random stream of append_day, apart from the chunks' streams
_REVIEW_PER_DAY = 1.0 - (1.0 - _REVIEW_PROBABILITY) ** (1.0 / 21.0)  # over the 21 days after an order: ~24%
_SEGMENT_POWER = {"budget": -1.1, "mainstream": 0.1, "premium": 1.4}  # mean z of each segment
_TYPICAL_BASKET = 50.0  # completed-order amount of a user with z = 0, roughly
_DORMANT_DAYS = 0.25  # activity weight of a user without an active day in the last 90 days
_NEW_USER_ACTIVE = 0.6  # share of the day's new users who browse on their signup day
_MAX_EVENTS_PER_DAY = 40


@dataclass(frozen=True)
class _DayState:
    """What append_day knows of each user before the day (arrays in byte order of user_id)."""

    user_ids: pa.Array
    tenure_days: np.ndarray  # float, from signup to the start of the day
    segment: np.ndarray  # object: str or None
    active_days_90d: np.ndarray
    events_90d: np.ndarray
    orders_90d: np.ndarray
    orders_365d: np.ndarray
    mean_amount: np.ndarray  # nan without completed orders
    mean_rating: np.ndarray  # nan without reviews
    favourite: np.ndarray  # index into CATEGORIES, -1 when unknown


def _as_datetime(value: object) -> dt.datetime | None:
    """A timestamp from either dialect (datetime or ISO text) as a naive datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    return dt.datetime.fromisoformat(str(value).strip()).replace(tzinfo=None)


def _day_sql(name: str, dialect: str) -> str:
    """A ``sql/load/synth_day_*`` query without its comment lines."""
    text = warehouse.load_sql(f"load/synth_day_{name}", dialect)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


_STATE_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("tenure_days", pa.float64()), ("segment", pa.string())]
    + [(name, pa.float64()) for name in ("active_days_90d", "events_90d", "orders_90d", "orders_365d", "mean_amount", "mean_rating")]
)


def _read(conn: sa.Connection, sql: str, params: dict[str, object], chunk_rows: int, schema: pa.Schema) -> pa.Table:
    """A query's rows as an Arrow table of ``schema``, converted ``chunk_rows`` rows at a time."""
    result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(sa.text(sql), params)
    parts = []
    for rows in result.partitions(chunk_rows):
        columns = list(zip(*rows))
        parts.append(pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in zip(columns, schema)], schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _indices(values: pa.Array, universe: pa.Array) -> np.ndarray:
    """Positions of ``values`` in ``universe`` as int64, -1 where absent (or null)."""
    return pc.fill_null(pc.index_in(values, universe), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _day_state(conn: sa.Connection, params: dict[str, object], chunk_rows: int) -> _DayState:
    dialect = conn.dialect.name
    table = _read(conn, _day_sql("users", dialect), params, chunk_rows, _STATE_SCHEMA)

    def numbers(name: str, fill: float = 0.0) -> np.ndarray:
        return pc.fill_null(table.column(name), fill).to_numpy().astype(np.float64)

    user_ids = table.column("user_id").combine_chunks() if table.num_rows else pa.array([], pa.string())
    favourite = np.full(table.num_rows, -1, dtype=np.int64)
    schema = pa.schema([("user_id", pa.string()), ("category", pa.string()), ("n", pa.int64())])
    counts = _read(conn, _day_sql("categories", dialect), params, chunk_rows, schema)
    if counts.num_rows:  # rows per user, most ordered first: the first known category of each user
        index = _indices(counts.column("user_id"), user_ids)
        code = _indices(counts.column("category"), pa.array(list(CATEGORIES)))
        known = (index >= 0) & (code >= 0)
        index, code = index[known], code[known]
        first = np.unique(index, return_index=True)[1]
        favourite[index[first]] = code[first]
    return _DayState(
        user_ids=user_ids,
        tenure_days=np.maximum(numbers("tenure_days"), 0.0),
        segment=np.array(table.column("segment").to_pylist(), dtype=object),
        active_days_90d=numbers("active_days_90d"),
        events_90d=numbers("events_90d"),
        orders_90d=numbers("orders_90d"),
        orders_365d=numbers("orders_365d"),
        mean_amount=numbers("mean_amount", np.nan),
        mean_rating=numbers("mean_rating", np.nan),
        favourite=favourite,
    )


def _solve_rate(weight: np.ndarray, wanted: float) -> float:
    """The λ with ``sum(min(_VISIT_CAP, λ·weight)) = wanted`` (bisection; 0 when nothing is wanted)."""
    if wanted <= 0 or weight.size == 0 or not weight.any():
        return 0.0
    low, high = 0.0, 1.0
    while np.minimum(_VISIT_CAP, high * weight).sum() < wanted and high < 1e12:
        high *= 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if np.minimum(_VISIT_CAP, mid * weight).sum() < wanted:
            low = mid
        else:
            high = mid
    return high


def _day_seconds(rng: np.random.Generator, lo: np.ndarray) -> np.ndarray:
    """Seconds into the day with the daily rhythm, at or after ``lo`` (a new user's signup)."""
    t = rng.choice(24, size=lo.size, p=_HOUR_P) * 3600 + rng.integers(0, 3600, size=lo.size)
    late = rng.random(lo.size)
    return np.where(t < lo, lo + (late * (SECONDS_PER_DAY - lo)).astype(np.int64), t)


def _day_tables(
    rng: np.random.Generator,
    state: _DayState,
    reviewable: tuple[np.ndarray, np.ndarray, np.ndarray],
    day: dt.date,
    daily_active: float,
    new_users: int,
) -> tuple[dict[str, pa.Table], int]:
    """The four tables of one day's rows and the number of users with any row on the day."""
    n_old = len(state.user_ids)
    day_start = np.datetime64(day, "s")
    stamp = day.strftime("%Y%m%d")

    # existing users: orders at their recent rate, reviews of the last 21 days' orders
    win90, win365 = np.clip(state.tenure_days, 7, 90), np.clip(state.tenure_days, 7, 365)
    n_orders = rng.poisson(0.7 * state.orders_90d / win90 + 0.3 * state.orders_365d / win365)
    r_owner, r_category, r_refunded = reviewable
    picked = rng.random(r_owner.size) < _REVIEW_PER_DAY
    r_owner, r_category, r_refunded = r_owner[picked], r_category[picked], r_refunded[picked]
    busy = n_orders > 0
    busy[r_owner] = True
    # browsing: the calibrated share of everyone else, weighted by their recent active days
    weight = (state.active_days_90d + _DORMANT_DAYS) / win90
    share = daily_active * _EVENT_WEEKDAY[day.weekday()] / _EVENT_WEEKDAY.mean()  # the weekly rhythm, as in generate
    wanted = share * (n_old + new_users) - busy.sum() - _NEW_USER_ACTIVE * new_users
    lam = _solve_rate(weight[~busy], wanted)
    browses = rng.random(n_old) < np.minimum(_VISIT_CAP, lam * weight)
    per_day = np.where(state.active_days_90d > 0, state.events_90d / np.maximum(state.active_days_90d, 1), 1.5)
    n_events = np.where(browses, 1 + rng.poisson(np.clip(per_day, 1, _MAX_EVENTS_PER_DAY) - 1), 0)
    power = np.array([_SEGMENT_POWER.get(s, 0.0) if isinstance(s, str) else 0.0 for s in state.segment])
    basket = np.clip((np.log(np.where(state.mean_amount > 0, state.mean_amount, 1.0)) - np.log(_TYPICAL_BASKET)) / 0.6, -3, 3)
    z = np.where(state.mean_amount > 0, 0.5 * power + 0.5 * basket, power) + 0.3 * rng.standard_normal(n_old)
    favourite = np.where(
        state.favourite >= 0, state.favourite, rng.choice(len(CATEGORIES), size=n_old, p=_CATEGORY_POPULARITY)
    )
    lo = np.zeros(n_old, dtype=np.int64)

    # the day's new users: signed up during the day, most of them browse right away
    new_z = rng.standard_normal(new_users)
    new_ids = _join(f"u{stamp}-", pc.utf8_lpad(pc.cast(pa.array(np.arange(1, new_users + 1)), pa.string()), 6, "0"), sep="")
    new_signup = _day_seconds(rng, np.zeros(new_users, dtype=np.int64))
    taste = np.log(_CATEGORY_POPULARITY)[None, :] + 0.6 * new_z[:, None] * np.log(_CATEGORY_PRICE / _CATEGORY_PRICE.mean())
    new_favourite = np.argmax(taste + rng.gumbel(size=(new_users, len(CATEGORIES))), axis=1)
    new_events = np.where(rng.random(new_users) < _NEW_USER_ACTIVE, 1 + rng.poisson(0.5, size=new_users), 0)
    segment = np.digitize(new_z + 0.5 * rng.standard_normal(new_users), [-0.6, 1.0])
    country = rng.choice(len(_COUNTRIES), size=new_users, p=_COUNTRY_P)
    users = pa.Table.from_arrays(
        [
            new_ids,
            pa.array((day_start + new_signup.astype("timedelta64[s]")).astype("datetime64[us]"), pa.timestamp("us")),
            _take(_COUNTRIES, country, rng.random(new_users) < 0.03),
            _take(SEGMENTS, segment, rng.random(new_users) < 0.02),
        ],
        schema=SCHEMAS["users"],
    )

    everyone = pa.concat_arrays([state.user_ids, new_ids.cast(pa.string())])
    z = np.concatenate([z, new_z])
    favourite = np.concatenate([favourite, new_favourite])
    lo = np.concatenate([lo, new_signup])
    n_orders = np.concatenate([n_orders, np.zeros(new_users, dtype=np.int64)])
    n_events = np.concatenate([n_events, new_events])
    active = int(np.count_nonzero(busy | browses) + np.count_nonzero(new_events))

    # orders
    o_owner = np.repeat(np.arange(len(everyone)), n_orders)
    o_t = _day_seconds(rng, lo[o_owner])
    n = o_owner.size
    o_category = np.where(rng.random(n) < 0.6, favourite[o_owner], rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_POPULARITY))
    items = 1 + rng.poisson(0.35 * np.exp(0.3 * z[o_owner]))
    unit_price = _CATEGORY_PRICE[o_category] * np.exp(0.45 * z[o_owner] + 0.35 * rng.standard_normal(n) - 0.06)
    amount = np.round(np.clip(items * unit_price, 0.5, 99_999.0), 2)
    u = rng.random(n)
    status = np.where(u < 0.04, 1, np.where(u < 0.07, 2, 0))
    by_user = np.lexsort((o_t, o_owner))
    o_owner, o_t, o_category, items, amount, status = (a[by_user] for a in (o_owner, o_t, o_category, items, amount, status))
    seq = np.arange(n) - np.searchsorted(o_owner, o_owner, side="left") + 1
    o_users = pc.take(everyone, pa.array(o_owner))
    orders = pa.Table.from_arrays(
        [
            _join(f"o{stamp}-", o_users, "-", pc.cast(pa.array(seq), pa.string()), sep=""),
            o_users,
            pa.array((day_start + o_t.astype("timedelta64[s]")).astype("datetime64[us]"), pa.timestamp("us")),
            pa.array(amount, pa.float64()),
            pa.array(items.astype(np.int32), pa.int32()),
            _take(CATEGORIES, o_category),
            _take(ORDER_STATUSES, status),
        ],
        schema=SCHEMAS["orders"],
    )

    # events: browsing, then the funnel in the two hours before each order
    b_owner = np.repeat(np.arange(len(everyone)), n_events)
    b_t = _day_seconds(rng, lo[b_owner])
    b_type = rng.choice(len(EVENT_TYPES), size=b_owner.size, p=[0.55, 0.20, 0.06, 0.12, 0.07])
    b_cat = np.where(
        rng.random(b_owner.size) < 0.5, favourite[b_owner], rng.choice(len(CATEGORIES), size=b_owner.size, p=_CATEGORY_POPULARITY)
    )
    s_idx = np.flatnonzero(rng.random(n) < 0.5)
    v_idx = np.repeat(np.arange(n), 1 + rng.binomial(2, 0.5, size=n))
    a_idx = np.arange(n)
    f_order = np.concatenate([s_idx, v_idx, a_idx])
    f_share = np.concatenate([0.5 * rng.random(s_idx.size), rng.random(v_idx.size), 0.5 + 0.5 * rng.random(a_idx.size)])
    f_lo = np.maximum(o_t[f_order] - _SESSION_S, lo[o_owner[f_order]])
    f_lo = np.minimum(np.maximum(f_lo, 0), o_t[f_order])
    f_t = f_lo + (f_share * (o_t[f_order] - f_lo)).astype(np.int64)
    f_type = np.concatenate([np.full(s_idx.size, 3), np.zeros(v_idx.size, dtype=np.int64), np.full(a_idx.size, 2)])
    e_owner = np.concatenate([b_owner, o_owner[f_order]])
    e_t = np.concatenate([b_t, f_t])
    order = np.lexsort((e_t, e_owner))
    e_owner, e_t = e_owner[order], e_t[order]
    kind = np.concatenate([b_type, f_type])[order]
    category = np.concatenate([b_cat, o_category[f_order]])[order]
    is_search = kind == 3
    n_ev = e_owner.size
    price = np.round(_CATEGORY_PRICE[category] * np.exp(0.45 * z[e_owner] + 0.5 * rng.standard_normal(n_ev)), 2)
    s_pos = np.flatnonzero(is_search)
    vocabulary = np.array(PREMIUM_WORDS + BUDGET_WORDS + _NEUTRAL_WORDS)
    words = _pick_words(rng, z[e_owner[s_pos]], 1.6, 1.6) * 10 + rng.integers(0, 10, size=s_pos.size)
    queries = _join(_take(vocabulary, words), _products(rng, category[s_pos]))
    query_index = np.zeros(n_ev, dtype=np.int32)
    query_index[s_pos] = np.arange(s_pos.size, dtype=np.int32)
    events = pa.Table.from_arrays(
        [
            pc.take(everyone, pa.array(e_owner)),
            pa.array((day_start + e_t.astype("timedelta64[s]")).astype("datetime64[us]"), pa.timestamp("us")),
            _take(EVENT_TYPES, kind),
            _take(CATEGORIES, category, is_search),
            pc.take(queries, pa.array(query_index, mask=~is_search)),
            pa.array(price, pa.float64(), mask=is_search),
        ],
        schema=SCHEMAS["events"],
    )

    # reviews of the picked orders, in the mood of the user's earlier reviews when there are any
    m = r_owner.size
    known = ~np.isnan(state.mean_rating[r_owner])
    mood = np.where(
        known,
        np.nan_to_num(state.mean_rating[r_owner]) + 0.8 * rng.standard_normal(m) - 1.5 * r_refunded - 0.5,
        0.55 + 0.9 * rng.standard_normal(m) + 0.6 * rng.standard_normal(m) - 1.6 * r_refunded,
    )
    rating = np.where(known, np.clip(np.round(mood + 0.5), 1, 5), 1 + np.digitize(mood, [-1.2, -0.5, 0.2, 0.9])).astype(np.int64)
    per_rating = _OPENERS.shape[1]
    opener = _take(_OPENERS.ravel(), (rating - 1) * per_rating + rng.integers(0, per_rating, size=m))
    phrases = np.concatenate([_PREMIUM_PHRASES, _BUDGET_PHRASES, _NEUTRAL_PHRASES])
    price_phrase = _take(phrases, _pick_words(rng, z[r_owner], 1.8, 1.2) * 4 + rng.integers(0, 4, size=m))
    closer = _take(_CLOSERS, np.digitize(0.5 * (rating - 3) + 0.7 * rng.standard_normal(m), [-1.5, -0.6, 0.3, 1.3]))
    product = _join("The", _products(rng, r_category), "arrived.")
    body = _join(opener, product, price_phrase, closer, _personal_data(rng, m))
    r_t = _day_seconds(rng, lo[r_owner])
    order = np.lexsort((r_t, r_owner))
    reviews = pa.Table.from_arrays(
        [
            pc.take(everyone, pa.array(r_owner)),
            pa.array((day_start + r_t.astype("timedelta64[s]")).astype("datetime64[us]"), pa.timestamp("us")),
            pa.array(rating.astype(np.int32), pa.int32()),
            body,
        ],
        schema=SCHEMAS["reviews"],
    ).take(pa.array(order))
    return {"users": users, "orders": orders, "events": events, "reviews": reviews}, active


def append_day(
    engine: sa.Engine,
    day: dt.date,
    seed: int,
    *,
    daily_active: float = DEFAULT_DAILY_ACTIVE,
    new_users: int | None = None,
    chunk_rows: int = 50_000,
) -> dict[str, object]:
    """Add one day of synthetic activity after the newest row of an existing warehouse.

    For a benchmark of consecutive nights: seed up to night D, score D, ``append_day(D + 1)``,
    score D + 1. Every row written is dated inside ``day`` (``[day 00:00:00, day 23:59:59]``):

    - about ``daily_active`` of the users signed up by the end of ``day`` act (have an order,
      event or review that day; times the weekly rhythm of ``generate``, weekends busier):
      orders at each user's rate of the last 90 and 365 days,
      reviews of the completed or refunded orders of the 21 days before (about 24% of them get
      one within 21 days, as in ``generate``), and browsing by the others, calibrated to the
      share and more likely for users with more active days in the last 90 days;
    - the rows look like ``generate``'s: the purchase funnel (search, views, add_to_cart) in
      the two hours before an order, the daily rhythm, search and review vocabulary and basket
      sizes by purchasing power (guessed from the segment and the mean basket, since the
      generator's latent traits are not stored), the favourite category (most ordered);
    - ``new_users`` users sign up during the day (default: the mean daily signups of the 28
      days before, drawn Poisson), ids ``u<YYYYMMDD>-000001``...; most browse right away.
      Order ids are ``o<YYYYMMDD>-<user_id>-<n>``.

    Works on any warehouse of the contract (also a CDNOW import). Deterministic: the same
    warehouse, ``day``, ``seed`` and settings give the same rows. Point in time: refuses (a
    ``DataError``, nothing written) when any source row is dated on or after ``day`` (the day
    was appended already, or the warehouse runs past it), so no snapshot as of an earlier day
    changes; an empty warehouse is refused too. Everything is written in one transaction.

    Returns ``{"day", "users", "orders", "events", "reviews", "signed_up", "active_users",
    "active_share"}`` (rows written per table; users signed up by the end of the day; users
    with any row that day, and their share). Raises ``ConfigError`` for bad arguments.
    """
    if isinstance(day, dt.datetime):
        day = day.date()
    if not isinstance(day, dt.date):
        raise ConfigError(f"day must be a date (YYYY-MM-DD), got {day!r}")
    _check_not_in_the_future("day", day)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    daily_active = _check_daily_active(daily_active)
    if new_users is not None and (
        isinstance(new_users, bool) or not isinstance(new_users, (int, np.integer)) or not 0 <= new_users <= MAX_USERS
    ):
        raise ConfigError(f"new_users must be a whole number between 0 and {MAX_USERS:,}, got {new_users!r}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    began = time.perf_counter()
    day_start = dt.datetime.combine(day, dt.time())
    dialect = engine.dialect.name
    params = warehouse.bind_values(
        dialect,
        {
            "day_start": day_start,
            "start_21d": day_start - dt.timedelta(days=21),
            "start_28d": day_start - dt.timedelta(days=28),
            "start_90d": day_start - dt.timedelta(days=90),
            "start_365d": day_start - dt.timedelta(days=365),
        },
    )
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_APPEND_STREAM, day.toordinal())))
    dbapi = engine.dialect.loaded_dbapi
    try:
        with engine.begin() as conn:
            head = conn.execute(sa.text(_day_sql("newest", dialect)), params).mappings().one()
            if int(head["users_count"]) == 0:
                raise DataError(
                    "the warehouse holds no users: seed it first (`spendpred seed`), then append days; nothing was written"
                )
            stamps = [_as_datetime(head[f"{t}_max"]) for t in SOURCE_TABLES]
            newest = max(s for s in stamps if s is not None)
            if newest >= day_start:
                raise DataError(
                    f"the warehouse already holds rows dated {newest.isoformat(sep=' ')}, on or after {day}: "
                    f"append_day only adds a day after the newest row (point in time: snapshots as of earlier days "
                    f"must not change), nothing was written; append {newest.date() + dt.timedelta(days=1)} or later"
                )
            state = _day_state(conn, params, chunk_rows)
            schema = pa.schema([("user_id", pa.string()), ("category", pa.string()), ("status", pa.string())])
            recent = _read(conn, _day_sql("reviewable", dialect), params, chunk_rows, schema)
            r_owner = _indices(recent.column("user_id"), state.user_ids)
            found = r_owner >= 0  # an orphan order (no user) gets no review
            r_owner = r_owner[found]
            r_code = _indices(recent.column("category"), pa.array(list(CATEGORIES)))[found]
            r_code = np.where(r_code < 0, state.favourite[r_owner], r_code)  # another category: the user's favourite
            r_code = np.where(r_code < 0, rng.integers(0, len(CATEGORIES), size=r_code.size), r_code)
            r_refunded = pc.equal(recent.column("status"), "refunded").to_numpy(zero_copy_only=False)[found]
            count = rng.poisson(int(head["recent_signups"]) / 28.0) if new_users is None else int(new_users)
            tables, active = _day_tables(rng, state, (r_owner, r_code, r_refunded), day, daily_active, count)
            written = {table: warehouse.bulk_insert(conn, table, tables[table]) for table in SOURCE_TABLES}
    except (dbapi.IntegrityError, sa.exc.IntegrityError) as exc:
        raise DataError(
            f"appending {day} failed on a duplicate or invalid row, nothing was written: {str(exc).splitlines()[0]}"
        ) from exc
    signed_up = len(state.user_ids) + written["users"]
    result: dict[str, object] = {
        "day": day.isoformat(),
        **written,
        "signed_up": signed_up,
        "active_users": active,
        "active_share": round(active / signed_up, 5),
    }
    logger.info("appended %s in %.1fs: %s", day, time.perf_counter() - began, result)
    return result
