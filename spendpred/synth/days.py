"""One more day of activity after the newest row of an existing warehouse: :func:`append_day`.

For benchmarks of consecutive nights: what each user does on the day follows from what the
warehouse already holds about them (recent order rate, active days, segment, mean basket,
favourite category), at the daily-active share of :func:`spendpred.synth.generate`, in rows
that look like the generator's (:mod:`spendpred.synth.vocabulary`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from spendpred import warehouse
from spendpred.errors import ConfigError, DataError
from spendpred.synth.population import MAX_USERS, _check_daily_active, _check_not_in_the_future
from spendpred.synth.vocabulary import (
    BUDGET_WORDS,
    CATEGORIES,
    DEFAULT_DAILY_ACTIVE,
    EVENT_TYPES,
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
    _EVENT_WEEKDAY,
    _HOUR_P,
    _NEUTRAL_PHRASES,
    _NEUTRAL_WORDS,
    _OPENERS,
    _PREMIUM_PHRASES,
    _REVIEW_PROBABILITY,
    _SESSION_S,
    _VISIT_CAP,
    _join,
    _personal_data,
    _pick_words,
    _products,
    _take,
)
from spendpred.warehouse import SOURCE_TABLES

logger = logging.getLogger(__name__)

_APPEND_STREAM = 0x61707064  # "appd": the random stream of append_day, apart from the chunks' streams
_REVIEW_PER_DAY = 1.0 - (1.0 - _REVIEW_PROBABILITY) ** (1.0 / 21.0)  # over the 21 days after an order: ~24%
_SEGMENT_POWER = {"budget": -1.1, "mainstream": 0.1, "premium": 1.4}  # mean z of each segment
_TYPICAL_BASKET = 50.0  # completed-order amount of a user with z = 0, roughly
_DORMANT_DAYS = 0.25  # activity weight of a user without an active day in the last 90 days
_NEW_USER_ACTIVE = 0.6  # share of the day's new users who browse on their signup day
_MAX_EVENTS_PER_DAY = 40

SHIFT_KINDS: tuple[str, ...] = ("cents", "price", "rename")
"""The injected shifts of :func:`append_day` (``Shift``): see :func:`parse_shift`."""
_MAX_PRICE_FACTOR = 1000.0


@dataclass(frozen=True)
class Shift:
    """A change of the world from day ``since`` on, injected by :func:`append_day` (for drift evidence).

    ``cents``: the source reloads its money columns in cents: on ``since`` every stored order amount
    and event price is restated x100, and every day's new rows from then on are in cents.
    ``price``: the price level of new rows is ``factor`` times what it was, from ``since`` on
    (history untouched: the shift shows up gradually). ``rename``: the source calls category
    ``old`` ``new`` from ``since`` on: stored rows are renamed on ``since`` and new rows use the new name.
    """

    kind: str
    since: dt.date
    factor: float = 1.0
    old: str | None = None
    new: str | None = None

    def active(self, day: dt.date) -> bool:
        """Whether ``day``'s rows are written in the shifted world."""
        return day >= self.since

    def restates(self, day: dt.date) -> bool:
        """Whether the stored rows are restated on ``day`` (a reload: ``cents`` and ``rename``, on ``since`` only)."""
        return day == self.since and self.kind in ("cents", "rename")

    @property
    def money_factor(self) -> float:
        """The factor on amounts and prices of shifted rows (1 for a rename)."""
        return self.factor if self.kind in ("cents", "price") else 1.0


def parse_shift(spec: str, since: dt.date) -> Shift:
    """Parse a shift ``spec`` starting on ``since``: ``cents``, ``price=K`` (0 < K <= 1000, K != 1) or
    ``rename=OLD:NEW`` (OLD one of :data:`~spendpred.synth.vocabulary.CATEGORIES`, NEW a new name).

    Returns a :class:`Shift`. Raises ``ConfigError`` naming what is wrong and the accepted forms.
    """
    if isinstance(since, dt.datetime):
        since = since.date()
    if not isinstance(since, dt.date):
        raise ConfigError(f"the shift's first day must be a date (YYYY-MM-DD), got {since!r}")
    forms = "use cents, price=K (e.g. price=1.5) or rename=OLD:NEW (e.g. rename=books:literature)"
    text = str(spec).strip()
    kind, _, value = text.partition("=")
    kind = kind.strip().lower()
    if kind == "cents" and not value:
        return Shift("cents", since, 100.0)
    if kind == "price" and value:
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not (math.isfinite(factor) and 0.0 < factor <= _MAX_PRICE_FACTOR and factor != 1.0):
            raise ConfigError(f"shift price factor {value.strip()!r} is not a number in (0, {_MAX_PRICE_FACTOR:g}] other than 1: {forms}")
        return Shift("price", since, factor)
    if kind == "rename" and value:
        old, _, new = (part.strip() for part in value.partition(":"))
        if old not in CATEGORIES:
            raise ConfigError(f"shift rename: {old!r} is not a category of the synthetic world (one of {', '.join(CATEGORIES)}): {forms}")
        if not new or new in CATEGORIES or len(new) > 64 or not new.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"shift rename: the new name {new!r} must be a new category name (letters, digits, - or _, at most 64): {forms}"
            )
        return Shift("rename", since, 1.0, old, new)
    raise ConfigError(f"unknown shift {text[:40]!r}: {forms}")


def _restate(conn: sa.Connection, shift: Shift) -> dict[str, int]:
    """Restate the stored rows as the shifted source reloads them (``cents``: money x100; ``rename``: the category)."""
    if shift.kind == "cents":
        statements = {"orders": "UPDATE orders SET amount = amount * 100",
                      "events": "UPDATE events SET price = price * 100 WHERE price IS NOT NULL"}  # fmt: skip
        params: dict[str, object] = {}
    else:
        statements = {table: f"UPDATE {table} SET category = :new WHERE category = :old" for table in ("orders", "events")}
        params = {"old": shift.old, "new": shift.new}
    return {table: int(conn.execute(sa.text(sql), params).rowcount or 0) for table, sql in statements.items()}


def _shifted(tables: dict[str, pa.Table], shift: Shift) -> dict[str, pa.Table]:
    """The day's tables written in the shifted world: money times the factor, or the category renamed."""
    out = dict(tables)
    if shift.money_factor != 1.0:
        for table, column in (("orders", "amount"), ("events", "price")):
            t = out[table]
            index = t.schema.get_field_index(column)
            scaled = pc.round(pc.multiply(t.column(column), shift.money_factor), 2)
            out[table] = t.set_column(index, t.schema.field(column), scaled)
    if shift.kind == "rename":
        for table in ("orders", "events"):
            t = out[table]
            index = t.schema.get_field_index("category")
            column = t.column("category")
            renamed = pc.if_else(pc.equal(column, shift.old), pa.scalar(shift.new, pa.string()), column)
            out[table] = t.set_column(index, t.schema.field("category"), renamed)
    return out


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


def _day_state(conn: sa.Connection, params: dict[str, object], chunk_rows: int, categories: tuple[str, ...] = CATEGORIES) -> _DayState:
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
        code = _indices(counts.column("category"), pa.array(list(categories)))  # as the source spells them
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
    shift: Shift | None = None,
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

    ``shift`` (:func:`parse_shift`) injects a change of the world for drift evidence: from its
    ``since`` day on the day's rows are written in the shifted world (amounts in cents, a price
    level, a renamed category), and on ``since`` itself a reloading shift (``cents``, ``rename``)
    restates the stored rows too, in the same transaction (deliberately not point in time: that
    is what a reloaded upstream table does). Before ``since`` it changes nothing.

    Returns ``{"day", "users", "orders", "events", "reviews", "signed_up", "active_users",
    "active_share"}`` (rows written per table; users signed up by the end of the day; users
    with any row that day, and their share), with ``shift`` (kind, since, restated rows) when
    the day is shifted. Raises ``ConfigError`` for bad arguments.
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
    if shift is not None and not isinstance(shift, Shift):
        raise ConfigError(f"shift must come from parse_shift (cents, price=K or rename=OLD:NEW), got {shift!r}")
    shifted = shift is not None and shift.active(day)
    categories = CATEGORIES
    if shifted and shift.kind == "rename":
        categories = tuple(shift.new if c == shift.old else c for c in CATEGORIES)
    restated: dict[str, int] = {}
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
            if shifted and shift.restates(day):
                restated = _restate(conn, shift)
            state = _day_state(conn, params, chunk_rows, categories)
            if shifted and shift.kind == "cents":  # the stored history is in cents now: baskets drawn in currency
                state = dataclasses.replace(state, mean_amount=state.mean_amount / shift.factor)
            schema = pa.schema([("user_id", pa.string()), ("category", pa.string()), ("status", pa.string())])
            recent = _read(conn, _day_sql("reviewable", dialect), params, chunk_rows, schema)
            r_owner = _indices(recent.column("user_id"), state.user_ids)
            found = r_owner >= 0  # an orphan order (no user) gets no review
            r_owner = r_owner[found]
            r_code = _indices(recent.column("category"), pa.array(list(categories)))[found]
            r_code = np.where(r_code < 0, state.favourite[r_owner], r_code)  # another category: the user's favourite
            r_code = np.where(r_code < 0, rng.integers(0, len(CATEGORIES), size=r_code.size), r_code)
            r_refunded = pc.equal(recent.column("status"), "refunded").to_numpy(zero_copy_only=False)[found]
            count = rng.poisson(int(head["recent_signups"]) / 28.0) if new_users is None else int(new_users)
            tables, active = _day_tables(rng, state, (r_owner, r_code, r_refunded), day, daily_active, count)
            if shifted:
                tables = _shifted(tables, shift)
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
    if shifted:
        result["shift"] = {"kind": shift.kind, "since": shift.since.isoformat(), "restated": restated}
    logger.info("appended %s in %.1fs: %s", day, time.perf_counter() - began, result)
    return result
