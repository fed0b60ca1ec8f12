"""The synthetic population, chunk by chunk and without a database: :func:`generate`.

Each user's latent traits (purchasing power, engagement, satisfaction) are drawn once and
drive orders, browsing on visit days calibrated to the daily-active share, the purchase
funnel and reviews (the package docstring, :mod:`spendpred.synth`, says how). Chunk ``k``
draws from ``SeedSequence(seed, spawn_key=(k,))``: the same arguments give the same rows.
The argument checks here (``ConfigError``) serve seeding and the day-by-day appends too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendpred.errors import ConfigError
from spendpred.synth.vocabulary import (
    BUDGET_WORDS,
    CATEGORIES,
    DECLINE_DAYS,
    DEFAULT_DAILY_ACTIVE,
    EVENT_TYPES,
    MAX_DAILY_ACTIVE,
    ORDER_STATUSES,
    PREMIUM_WORDS,
    SCHEMAS,
    SECONDS_PER_DAY,
    SEGMENTS,
    _BUDGET_PHRASES,
    _CATEGORY_POPULARITY,
    _CATEGORY_PRICE,
    _CLOSERS,
    _COUNTRIES,
    _COUNTRY_P,
    _EVENT_RATE_PER_YEAR,
    _EVENT_WEEKDAY,
    _HOUR_P,
    _NEUTRAL_PHRASES,
    _NEUTRAL_WORDS,
    _OPENERS,
    _ORDER_RATE_PER_YEAR,
    _ORDER_WEEKDAY,
    _PREMIUM_PHRASES,
    _REVIEW_PROBABILITY,
    _SESSION_S,
    _VISIT_CAP,
    _join,
    _personal_data,
    _pick_words,
    _products,
    _sigmoid,
    _take,
)

DEFAULT_CHUNK_USERS = 100_000
MAX_DAYS = 36_500
MAX_USERS = 50_000_000
"""More synthetic users than a platform plausibly has is a typo (a 14-digit count ran 10 minutes
and grew a 9 GB SQLite WAL before this bound)."""


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


def _timestamps(window: _Window, seconds: np.ndarray) -> pa.Array:
    return pa.array((window.start + seconds.astype("timedelta64[s]")).astype("datetime64[us]"), pa.timestamp("us"))


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
