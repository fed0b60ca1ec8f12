"""publish_scores on SQLite and PostgreSQL: round trip (read back through ``spendpred.report``),
idempotence, atomicity, bad input."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import publish, report, warehouse
from spendpred.errors import DataError, PublishError
from spendpred.tiers import Threshold, assign_tiers

D1 = dt.date(2024, 6, 1)
D2 = dt.date(2024, 6, 2)
D3 = dt.date(2024, 6, 3)
STAMP = dt.datetime(2024, 6, 2, 3, 4, 5)


def _run(n: int, seed: int, prefix: str = "u") -> tuple[pa.Table, list[Threshold]]:
    """A run of ``n`` users with gamma-distributed scores and their tiers."""
    spend = np.round(np.random.default_rng(seed).gamma(0.7, 150.0, n), 6)
    tiers, thresholds = assign_tiers(spend)
    table = pa.table({"user_id": [f"{prefix}{i:04d}" for i in range(n)], "predicted_spend": spend, "tier": tiers})
    return table, thresholds


def _snapshot(engine: sa.Engine, as_of: dt.date) -> tuple[list[dict[str, Any]], list[Threshold]]:
    return report.read_scores(engine, as_of).to_pylist(), report.read_thresholds(engine, as_of)


def _count(engine: sa.Engine, table: str = "user_spend_scores") -> int:
    return warehouse.table_counts(engine, [table])[table]


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    engine = warehouse.get_engine(warehouse_url)
    warehouse.init_db(engine)
    return engine


def test_publish_round_trips_scores_and_thresholds(engine: sa.Engine) -> None:
    spend = np.array([0.0, 12.5, 1234.5678901234567, 1e-9, 88.0, 3.3333333333333335])
    tiers, thresholds = assign_tiers(spend)
    user_ids = ["plain", 'with,comma and "quotes"', "ünïcödé-用户", "tab\tinside", "7", "line\nbreak"]
    table = pa.table({"user_id": user_ids, "predicted_spend": spend, "tier": tiers})

    assert publish.publish_scores(engine, D1, table, thresholds, "spendpred-regressor", "3", scored_at=STAMP) == 6

    got = report.read_scores(engine, D1)
    assert got.num_rows == 6
    by_user = {r["user_id"]: r for r in got.to_pylist()}
    assert set(by_user) == set(user_ids)
    for user, score, tier in zip(user_ids, spend, tiers):
        row = by_user[user]
        assert row["predicted_spend"] == score  # exact: COPY keeps every digit
        assert row["tier"] == tier
        assert row["as_of"] == D1
        assert (row["model_name"], row["model_version"], row["scored_at"]) == ("spendpred-regressor", "3", STAMP)
    assert report.read_thresholds(engine, D1) == thresholds
    assert report.read_scores(engine, D2).num_rows == 0


def test_same_date_twice_leaves_exactly_one_set_and_other_dates_alone(engine: sa.Engine) -> None:
    first, first_thresholds = _run(40, seed=1)
    other, other_thresholds = _run(25, seed=2, prefix="o")
    publish.publish_scores(engine, D1, first, first_thresholds, "m", "1", scored_at=STAMP)
    publish.publish_scores(engine, D2, other, other_thresholds, "m", "1", scored_at=STAMP)
    kept = _snapshot(engine, D2)

    publish.publish_scores(engine, D1, first, first_thresholds, "m", "1", scored_at=STAMP)
    assert report.read_scores(engine, D1).num_rows == 40
    assert _count(engine) == 65
    assert _count(engine, "tier_thresholds") == 6

    # a rerun with another model and fewer users replaces the whole partition
    second, second_thresholds = _run(30, seed=9, prefix="n")
    assert publish.publish_scores(engine, D1, second, second_thresholds, "m", "2", chunk_rows=7) == 30
    got = report.read_scores(engine, D1)
    assert got.column("user_id").to_pylist() == second.column("user_id").to_pylist()
    assert got.column("predicted_spend").to_pylist() == second.column("predicted_spend").to_pylist()
    assert set(got.column("model_version").to_pylist()) == {"2"}
    assert report.read_thresholds(engine, D1) == second_thresholds
    assert _count(engine) == 55
    assert _snapshot(engine, D2) == kept


def _fail_before(name: str) -> Callable[..., Any]:
    def injected(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"injected failure instead of {name}")

    return injected


def _fail_after(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    def injected(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise RuntimeError(f"injected failure after {name}")

    return injected


@pytest.mark.parametrize(
    "fault",
    [
        "before _insert_partition",  # the old partition is already deleted
        "after _insert_partition",  # the new rows are in, thresholds not yet replaced
        "after _replace_thresholds",  # everything written, just before commit
    ],
)
def test_failure_half_way_keeps_the_previous_contents(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    old, old_thresholds = _run(50, seed=4)
    neighbour, neighbour_thresholds = _run(10, seed=5, prefix="x")
    publish.publish_scores(engine, D1, old, old_thresholds, "m", "1", scored_at=STAMP)
    publish.publish_scores(engine, D2, neighbour, neighbour_thresholds, "m", "1", scored_at=STAMP)
    before = {D1: _snapshot(engine, D1), D2: _snapshot(engine, D2)}

    when, name = fault.split(" ")
    original = getattr(publish, name)
    monkeypatch.setattr(publish, name, _fail_before(name) if when == "before" else _fail_after(original, name))
    new, new_thresholds = _run(80, seed=6, prefix="n")
    with pytest.raises(RuntimeError, match="injected failure"):
        publish.publish_scores(engine, D1, new, new_thresholds, "m", "2")

    assert {D1: _snapshot(engine, D1), D2: _snapshot(engine, D2)} == before
    assert _count(engine) == 60

    # the connection the failure happened on is healthy: the next publish works
    monkeypatch.setattr(publish, name, original)
    assert publish.publish_scores(engine, D1, new, new_thresholds, "m", "2") == 80
    assert report.read_scores(engine, D1).num_rows == 80


def test_database_refusing_a_row_rolls_back_and_raises_publish_error(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, old_thresholds = _run(20, seed=8)
    publish.publish_scores(engine, D1, old, old_thresholds, "m", "1", scored_at=STAMP)
    before = _snapshot(engine, D1)

    # skip the Python checks so that the CHECK (predicted_spend >= 0) of the table fires
    # in the INSERT, after the DELETE of the old partition
    monkeypatch.setattr(publish, "validate_scores", lambda table: table)
    bad = pa.table({"user_id": ["a", "b"], "predicted_spend": [5.0, -1.0], "tier": ["high", "low"]})
    thresholds = [Threshold("high", 5.0, None), Threshold("medium", 1.0, 5.0), Threshold("low", None, 1.0)]
    with pytest.raises(PublishError, match="rolled back; the previous contents are kept"):
        publish.publish_scores(engine, D1, bad, thresholds, "m", "2")
    assert _snapshot(engine, D1) == before


def test_readers_see_the_previous_partition_until_commit(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    old, old_thresholds = _run(15, seed=10)
    publish.publish_scores(engine, D1, old, old_thresholds, "m", "1", scored_at=STAMP)
    seen: list[int] = []
    original = publish._replace_thresholds

    def peek(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        reader = warehouse.get_engine(engine.url.render_as_string(hide_password=False))
        try:
            seen.append(report.read_scores(reader, D1).num_rows)
        finally:
            reader.dispose()

    monkeypatch.setattr(publish, "_replace_thresholds", peek)
    new, new_thresholds = _run(33, seed=11, prefix="n")
    publish.publish_scores(engine, D1, new, new_thresholds, "m", "2")
    assert seen == [15]  # inside the transaction another connection still sees the old rows
    assert report.read_scores(engine, D1).num_rows == 33


def _with(table: pa.Table, column: str, values: list[Any]) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


BASE = pa.table(
    {
        "user_id": ["a", "b", "c", "d"],
        "predicted_spend": [40.0, 30.0, 20.0, 10.0],
        "tier": ["high", "medium", "low", "low"],
    }
)
BASE_THRESHOLDS = [Threshold("high", 40.0, None), Threshold("medium", 30.0, 40.0), Threshold("low", None, 30.0)]


@pytest.mark.parametrize(
    ("scores", "thresholds", "error", "message"),
    [
        (BASE.slice(0, 0), BASE_THRESHOLDS, DataError, "no scores to publish"),
        (BASE.drop_columns(["tier"]), BASE_THRESHOLDS, DataError, r"lacks column\(s\) \['tier'\]"),
        (_with(BASE, "user_id", ["a", None, "c", "d"]), BASE_THRESHOLDS, DataError, "user_id is null in row 1"),
        (_with(BASE, "user_id", ["a", "", "c", "d"]), BASE_THRESHOLDS, DataError, "empty string in row 1"),
        (_with(BASE, "user_id", ["a", "b", "a", "d"]), BASE_THRESHOLDS, DataError, "more than once.*'a'"),
        (_with(BASE, "user_id", ["a", "b", "c\x00", "d"]), BASE_THRESHOLDS, DataError, "row 2 contains a NUL"),
        (_with(BASE, "predicted_spend", [40.0, None, 20.0, 10.0]), BASE_THRESHOLDS, DataError, "null for user 'b'"),
        (_with(BASE, "predicted_spend", [40.0, 30.0, float("nan"), 10.0]), BASE_THRESHOLDS, DataError, "'c'.*finite"),
        (_with(BASE, "predicted_spend", [40.0, 30.0, 20.0, float("inf")]), BASE_THRESHOLDS, DataError, "'d'.*finite"),
        (_with(BASE, "predicted_spend", [40.0, 30.0, 20.0, -0.5]), BASE_THRESHOLDS, DataError, "'d'.*>= 0"),
        (_with(BASE, "predicted_spend", ["40", "30", "20", "10"]), BASE_THRESHOLDS, DataError, "must be numeric"),
        (_with(BASE, "tier", ["high", "gold", "low", "low"]), BASE_THRESHOLDS, DataError, "tier is 'gold' for user 'b'"),
        (_with(BASE, "tier", ["high", "medium", None, "low"]), BASE_THRESHOLDS, DataError, "tier is None for user 'c'"),
        (_with(BASE, "tier", ["high", "high", "low", "low"]), BASE_THRESHOLDS, DataError, "user 'b'.*outside"),
        (BASE, BASE_THRESHOLDS[:2], DataError, r"lack tier\(s\) \['low'\]"),
        (BASE, [*BASE_THRESHOLDS, BASE_THRESHOLDS[0]], DataError, "given twice"),
        (BASE, [Threshold("top", 1.0, None)], DataError, "'top' is not one of"),
        (BASE, [{"tier": "high", "lower_bound": float("nan")}], DataError, "finite"),
        ("not a table", BASE_THRESHOLDS, DataError, "must be a pyarrow.Table"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    engine: sa.Engine, scores: Any, thresholds: list[Any], error: type[Exception], message: str
) -> None:
    previous, previous_thresholds = _run(12, seed=12)
    publish.publish_scores(engine, D1, previous, previous_thresholds, "m", "1", scored_at=STAMP)
    before = _snapshot(engine, D1)
    with pytest.raises(error, match=message):
        publish.publish_scores(engine, D1, scores, thresholds, "m", "2")
    assert _snapshot(engine, D1) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_version": ""}, "model_version must be a non-empty string"),
        ({"model_name": None}, "model_name must be a non-empty string"),
        ({"as_of": "June 1st"}, "as_of must be a date"),
        ({"as_of": "2024-06-01"}, "as_of must be a date"),  # text is parsed at the front ends, not here
        ({"scored_at": "now"}, "scored_at must be a datetime"),
        ({"chunk_rows": -5}, "chunk_rows must be positive"),
    ],
)
def test_bad_arguments_raise_publish_error(sqlite_url: str, kwargs: dict[str, Any], message: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    warehouse.init_db(engine)
    args: dict[str, Any] = {"as_of": D1, "model_name": "m", "model_version": "1"} | kwargs
    with pytest.raises(PublishError, match=message):
        publish.publish_scores(engine, scores=BASE, thresholds=BASE_THRESHOLDS, **args)
    assert _count(engine) == 0


def test_pandas_input_and_aware_timestamp_are_accepted(sqlite_url: str) -> None:
    engine = warehouse.get_engine(sqlite_url)
    warehouse.init_db(engine)
    frame = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "predicted_spend": [40, 30, 20, 10], "tier": BASE.column("tier").to_pylist(), "extra": 1})
    aware = dt.datetime(2024, 6, 2, 5, 4, 5, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert publish.publish_scores(engine, D1, frame, BASE_THRESHOLDS, "m", "1", scored_at=aware) == 4
    got = report.read_scores(engine, D1)
    assert set(got.column("scored_at").to_pylist()) == {STAMP}  # UTC, whole seconds
    assert got.column("predicted_spend").to_pylist() == [40.0, 30.0, 20.0, 10.0]


def test_publishing_into_an_uninitialised_warehouse_says_what_to_do(warehouse_url: str) -> None:
    engine = warehouse.get_engine(warehouse_url)
    with pytest.raises(PublishError, match="spendpred db init"):
        publish.publish_scores(engine, D1, BASE, BASE_THRESHOLDS, "m", "1")
    # the failed attempt left the connection usable
    warehouse.init_db(engine)
    assert publish.publish_scores(engine, D1, BASE, BASE_THRESHOLDS, "m", "1") == 4


def test_validate_scores_sorts_by_user_and_keeps_rows_together() -> None:
    table = pa.table(
        {
            "user_id": ["c", "a", "b"],
            "predicted_spend": pa.array([3, 1, 2], pa.int32()),
            "tier": ["high", "low", "medium"],
            "ignored": [0, 0, 0],
        }
    )
    got = publish.validate_scores(table)
    assert got.schema == pa.schema([("user_id", pa.string()), ("predicted_spend", pa.float64()), ("tier", pa.string())])
    assert got.to_pylist() == [
        {"user_id": "a", "predicted_spend": 1.0, "tier": "low"},
        {"user_id": "b", "predicted_spend": 2.0, "tier": "medium"},
        {"user_id": "c", "predicted_spend": 3.0, "tier": "high"},
    ]
    with pytest.raises(DataError, match=r"2 user_id value\(s\) appear more than once \(e.g. 'a', 3 times\)"):
        publish.validate_scores(pa.table({"user_id": ["a", "b", "a", "b", "a"], "predicted_spend": [1.0] * 5, "tier": ["low"] * 5}))
