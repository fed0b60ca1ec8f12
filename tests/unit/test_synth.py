"""Synthetic population generator (pure: no database)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from spendpred import synth
from spendpred.errors import ConfigError

END = dt.date(2024, 12, 31)
DAYS = 365
WINDOW_START = pd.Timestamp("2024-01-02 00:00:00")  # 2024 is a leap year: 366 days
WINDOW_END = pd.Timestamp("2024-12-31 23:59:59")
TIME_COLUMNS = {"users": "signup_at", "orders": "ordered_at", "events": "occurred_at", "reviews": "created_at"}


def _frames(users: int, seed: int, days: int = DAYS, chunk_users: int = synth.DEFAULT_CHUNK_USERS) -> dict[str, pd.DataFrame]:
    chunks = list(synth.generate(users, days, END, seed, chunk_users=chunk_users))
    return {t: pa.concat_tables([c[t] for c in chunks]).to_pandas() for t in synth.SOURCE_TABLES}


@pytest.fixture(scope="module")
def population() -> dict[str, pd.DataFrame]:
    return _frames(4000, seed=11)


def _rank_corr(a: pd.Series, b: pd.Series) -> float:
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


def test_columns_and_types_match_the_contract_tables() -> None:
    chunks = list(synth.generate(50, 30, END, seed=1))
    assert len(chunks) == 1
    expected_columns = {
        "users": ["user_id", "signup_at", "country", "segment"],
        "orders": ["order_id", "user_id", "ordered_at", "amount", "items", "category", "status"],
        "events": ["user_id", "occurred_at", "event_type", "category", "query", "price"],
        "reviews": ["user_id", "created_at", "rating", "body"],
    }
    for table, columns in expected_columns.items():
        assert chunks[0][table].column_names == columns
        assert chunks[0][table].schema == synth.SCHEMAS[table]
    assert chunks[0]["orders"].schema.field("ordered_at").type == pa.timestamp("us")
    assert chunks[0]["orders"].schema.field("amount").type == pa.float64()


def test_invariants(population: dict[str, pd.DataFrame]) -> None:
    users, orders, events, reviews = (population[t] for t in synth.SOURCE_TABLES)
    assert len(users) == 4000 and users.user_id.is_unique
    assert users.user_id.str.fullmatch(r"u\d{7}").all()
    assert orders.order_id.is_unique
    assert (orders.amount >= 0).all() and (orders["items"] >= 1).all()
    assert np.allclose(orders.amount, orders.amount.round(2))
    assert set(orders.status) == {"completed", "cancelled", "refunded"}
    assert set(events.event_type) == set(synth.EVENT_TYPES)
    assert reviews.rating.between(1, 5).all() and set(reviews.rating) == {1, 2, 3, 4, 5}
    known = set(users.user_id)
    for table in (orders, events, reviews):
        assert set(table.user_id) <= known
    searches = events.event_type == "search"
    assert events.loc[searches, "query"].notna().all() and (events.loc[searches, "query"].str.len() > 0).all()
    assert events.loc[~searches, "query"].isna().all()
    assert events.loc[~searches, "price"].notna().all() and (events.loc[~searches, "price"] >= 0).all()
    for table, column in TIME_COLUMNS.items():
        stamps = population[table][column]
        assert stamps.min() >= WINDOW_START and stamps.max() <= WINDOW_END, table
        assert (stamps.dt.microsecond == 0).all()  # whole seconds: identical on SQLite and PostgreSQL
    # nothing happens before the user signed up
    signup = users.set_index("user_id").signup_at
    for table, column in TIME_COLUMNS.items():
        if table != "users":
            frame = population[table]
            assert (frame[column].to_numpy() >= signup.loc[frame.user_id].to_numpy()).all(), table


def test_timestamps_stay_inside_a_one_day_window() -> None:
    frames = _frames(200, seed=3, days=1)
    for table, column in TIME_COLUMNS.items():
        stamps = frames[table][column]
        assert (stamps >= pd.Timestamp("2024-12-31")).all() and (stamps <= WINDOW_END).all(), table


def test_volumes_are_realistic(population: dict[str, pd.DataFrame]) -> None:
    users, orders, events, reviews = (population[t] for t in synth.SOURCE_TABLES)
    assert 10 <= len(events) / len(users) <= 30
    assert 2 <= orders.groupby("user_id").size().mean() <= 6
    assert 0.15 <= len(reviews) / len(orders) <= 0.3
    assert 0.02 <= (orders.status != "completed").mean() <= 0.15
    recent = orders[(orders.ordered_at > WINDOW_END - pd.Timedelta(days=90)) & (orders.status == "completed")]
    assert recent.user_id.nunique() < 0.6 * len(users)  # many users buy nothing in a 90-day window
    # signups spread over the window, a good share in its first weeks
    early = (users.signup_at < WINDOW_START + pd.Timedelta(days=30)).mean()
    assert 0.3 <= early <= 0.7 and (users.signup_at > WINDOW_START + pd.Timedelta(days=180)).mean() > 0.2
    # spend is heavy-tailed: the top 10% of buyers hold a large share
    spend = orders[orders.status == "completed"].groupby("user_id").amount.sum().sort_values(ascending=False)
    assert spend.head(len(spend) // 10).sum() / spend.sum() > 0.3
    assert set(users.segment.dropna()) == set(synth.SEGMENTS)


def test_churners_go_quiet_before_the_end(population: dict[str, pd.DataFrame]) -> None:
    events = population["events"]
    last = events.groupby("user_id").occurred_at.max()
    first = events.groupby("user_id").occurred_at.min()
    long_silent = (last < WINDOW_END - pd.Timedelta(days=120)) & (first < WINDOW_START + pd.Timedelta(days=60))
    assert long_silent.mean() > 0.05


def test_search_vocabulary_carries_purchasing_power(population: dict[str, pd.DataFrame]) -> None:
    users, orders, events = population["users"], population["orders"], population["events"]
    searches = events[events.event_type == "search"].copy()
    searches["premium"] = searches["query"].str.contains("|".join(synth.PREMIUM_WORDS))
    searches["budget"] = searches["query"].str.contains("|".join(synth.BUDGET_WORDS))
    per_user = searches.groupby("user_id")[["premium", "budget"]].mean()
    spend = orders[orders.status == "completed"].groupby("user_id").amount.sum()
    frame = per_user.join(spend.rename("spend")).fillna({"spend": 0.0})
    assert _rank_corr(frame.premium, frame.spend) > 0.2
    assert _rank_corr(frame.budget, frame.spend) < -0.2
    # segments agree with spend
    seg_spend = users.set_index("user_id").join(spend.rename("spend")).fillna({"spend": 0.0}).groupby("segment").spend.mean()
    assert seg_spend["premium"] > seg_spend["mainstream"] > seg_spend["budget"]


def test_reviews_carry_future_activity(population: dict[str, pd.DataFrame]) -> None:
    orders, reviews = population["orders"], population["reviews"]
    reviews = reviews[reviews.created_at < WINDOW_END - pd.Timedelta(days=120)]
    merged = reviews.merge(orders[["user_id", "ordered_at"]], on="user_id", how="left")
    later = (merged.ordered_at > merged.created_at) & (merged.ordered_at <= merged.created_at + pd.Timedelta(days=120))
    merged["later"] = later
    future = merged.groupby(["user_id", "created_at", "rating"]).later.sum().reset_index()
    happy = future[future.rating >= 4].later.mean()
    unhappy = future[future.rating <= 2].later.mean()
    assert happy > 1.2 * unhappy
    intent = reviews.body.str.contains("Will order again|planning my next order")
    leaving = reviews.body.str.contains("last order here|Not sure I will shop")
    assert reviews[intent].rating.mean() > reviews[leaving].rating.mean()


def test_weekly_and_daily_rhythm(population: dict[str, pd.DataFrame]) -> None:
    events = population["events"]
    weekday = events.occurred_at.dt.weekday
    assert (weekday >= 5).mean() / 2 > (weekday.isin([1, 2])).mean() / 2
    hour = events.occurred_at.dt.hour
    assert hour.between(19, 21).mean() > 3 * hour.between(2, 4).mean()


def test_yearly_seasonality_peaks_before_christmas() -> None:
    orders = _frames(3000, seed=5, days=730)["orders"]
    orders = orders[orders.ordered_at >= pd.Timestamp("2024-01-01")]  # second year: population settled
    per_month = orders.groupby(orders.ordered_at.dt.month).size()
    assert per_month[12] > per_month[[3, 4, 5]].mean() * 1.2
    late_nov = orders[(orders.ordered_at >= "2024-11-26") & (orders.ordered_at < "2024-12-03")]
    early_nov = orders[(orders.ordered_at >= "2024-11-05") & (orders.ordered_at < "2024-11-12")]
    assert len(late_nov) > 1.2 * len(early_nov)  # Black Friday week


def test_some_review_bodies_contain_personal_data(population: dict[str, pd.DataFrame]) -> None:
    bodies = population["reviews"].body
    pii = bodies.str.contains(r"[\w.]+@example\.com|\+1-555-01\d\d", regex=True)
    assert 0.002 <= pii.mean() <= 0.03
    assert bodies.str.contains("@example.com").any() and bodies.str.contains("555-01").any()


def test_same_seed_same_data_and_different_seed_different_data() -> None:
    first = list(synth.generate(500, 120, END, seed=7, chunk_users=200))
    again = list(synth.generate(500, 120, END, seed=7, chunk_users=200))
    other = list(synth.generate(500, 120, END, seed=8, chunk_users=200))
    for a, b, c in zip(first, again, other):
        for table in synth.SOURCE_TABLES:
            assert a[table].equals(b[table]), table
        assert not a["orders"].equals(c["orders"])
        assert not a["users"].column("signup_at").equals(c["users"].column("signup_at"))


def test_chunks_continue_ids_and_cover_every_user() -> None:
    chunks = list(synth.generate(25, 60, END, seed=2, chunk_users=10))
    assert [c["users"].num_rows for c in chunks] == [10, 10, 5]
    ids = [uid for c in chunks for uid in c["users"].column("user_id").to_pylist()]
    assert ids == [f"u{i:07d}" for i in range(25)]
    order_ids = [oid for c in chunks for oid in c["orders"].column("order_id").to_pylist()]
    assert len(order_ids) == len(set(order_ids))


def test_wide_ids_for_large_populations() -> None:
    # the id width follows the population size; only the first chunk is generated
    first = next(synth.generate(12_000_000, 1, END, seed=1, chunk_users=3))
    assert first["users"].column("user_id").to_pylist() == ["u00000000", "u00000001", "u00000002"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "users must be between 1 and"),
        ({"days": 0}, "days must be between 1"),
        ({"days": 10**6}, "days must be between 1"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"chunk_users": 0}, "chunk_users must be at least 1"),
        ({"users": 2.5}, "users must be an integer"),
        ({"end_date": "2024-12-31"}, "end_date must be a date"),
        ({"end_date": dt.date(1900, 1, 5), "days": 30}, "before 1900-01-01"),
        ({"daily_active": 0}, r"daily_active must be a share of users in \(0, 0.5\]"),
        ({"daily_active": 0.51}, r"daily_active must be a share of users in \(0, 0.5\]"),
        ({"daily_active": "5%"}, "daily_active must be a number"),
    ],
)
def test_bad_arguments_raise_config_error_at_call_time(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"users": 10, "days": 30, "end_date": END, "seed": 1, "chunk_users": 100}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        synth.generate(**args)  # type: ignore[arg-type]  # no iteration needed: checked eagerly


def _daily_active_share(frames: dict[str, pd.DataFrame], last_days: int) -> pd.Series:
    """Per day of the last ``last_days``: users with any order, event or review / users signed up by its end."""
    days = pd.concat(
        [frames[t][["user_id", c]].rename(columns={c: "at"}) for t, c in TIME_COLUMNS.items() if t != "users"]
    )
    days["day"] = days["at"].dt.normalize()
    active = days.drop_duplicates(["user_id", "day"]).groupby("day").size()
    signup_day = frames["users"].signup_at.dt.normalize().value_counts().sort_index().cumsum()
    window = pd.date_range(WINDOW_END.normalize() - pd.Timedelta(days=last_days - 1), WINDOW_END.normalize())
    signed_up = signup_day.reindex(signup_day.index.union(window)).ffill().reindex(window)
    return active.reindex(window, fill_value=0) / signed_up


@pytest.mark.parametrize("share", [0.02, synth.DEFAULT_DAILY_ACTIVE, 0.10])
def test_daily_active_share_is_the_configured_share(share: float) -> None:
    """On a given day about ``daily_active`` of the users act (measured: within 5% on average, 30% any day)."""
    chunks = list(synth.generate(20_000, DAYS, END, seed=13, daily_active=share))
    frames = {t: pa.concat_tables([c[t] for c in chunks]).to_pandas() for t in synth.SOURCE_TABLES}
    daily = _daily_active_share(frames, 60)
    assert daily.mean() == pytest.approx(share, rel=0.05), daily.describe()
    assert daily.between(0.7 * share, 1.35 * share).all(), daily[~daily.between(0.7 * share, 1.35 * share)]
    weekend = daily[daily.index.weekday >= 5].mean()
    assert weekend > 1.1 * daily[daily.index.weekday.isin([1, 2])].mean()  # the weekly rhythm
    # early in the window too (few users, hardly any churned yet)
    start = _daily_active_share(frames, DAYS).iloc[30:90]
    assert start.mean() == pytest.approx(share, rel=0.08)


def test_default_daily_active_share_is_five_percent() -> None:
    assert synth.DEFAULT_DAILY_ACTIVE == 0.05
    first = next(synth.generate(300, 60, END, seed=4))
    again = next(synth.generate(300, 60, END, seed=4, daily_active=0.05))
    for table in synth.SOURCE_TABLES:
        assert first[table].equals(again[table]), table


def test_the_share_changes_browsing_only() -> None:
    """Orders, reviews and users do not depend on the share: only the browsing (visit days) does."""
    quiet = next(synth.generate(2000, 120, END, seed=6, daily_active=0.02))
    busy = next(synth.generate(2000, 120, END, seed=6, daily_active=0.2))
    for table in ("users", "orders", "reviews"):
        assert quiet[table].equals(busy[table]), table
    assert busy["events"].num_rows > 2 * quiet["events"].num_rows
    # every order keeps its funnel: an add_to_cart the same day, before it
    events = quiet["events"].to_pandas()
    orders = quiet["orders"].to_pandas()
    carts = events[events.event_type == "add_to_cart"]
    funnel = orders.merge(carts, on="user_id")
    funnel = funnel[(funnel.occurred_at <= funnel.ordered_at) & (funnel.ordered_at - funnel.occurred_at <= pd.Timedelta(hours=2))]
    assert funnel.order_id.nunique() == len(orders)
