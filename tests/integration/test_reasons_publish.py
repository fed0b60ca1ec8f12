"""Reason codes published with the scores (SQLite and PostgreSQL): same transaction, same partition,
a failed publish keeps the previous reasons, a rerun replaces them, the current view."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import publish, warehouse
from spendpred.errors import DataError, PublishError
from spendpred.tiers import assign_tiers

D1 = dt.date(2024, 6, 1)
D2 = dt.date(2024, 6, 2)


def _scores(n: int, seed: int) -> tuple[pa.Table, list]:
    spend = np.round(np.random.default_rng(seed).gamma(0.7, 150.0, n), 2)
    tiers, thresholds = assign_tiers(spend)
    return pa.table({"user_id": [f"u{i:03d}" for i in range(n)], "predicted_spend": spend, "tier": tiers}), thresholds


def _reasons(users: list[str], tag: str) -> pa.Table:
    rows = [(u, r, f"{tag} reason {r} (+{10 * (4 - r)})", float(10 * (4 - r)), f"feature_{r}") for u in users for r in (1, 2, 3)]
    return pa.table({name: [row[i] for row in rows] for i, name in enumerate(publish.REASON_COLUMNS)})


def _read(engine: sa.Engine, relation: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {relation} ORDER BY as_of, user_id, rank"))]


@pytest.fixture
def engine(warehouse_url: str) -> sa.Engine:
    engine = warehouse.get_engine(warehouse_url)
    warehouse.init_db(engine)
    return engine


def test_reasons_swap_with_their_partition_and_the_view_shows_the_current_ones(engine: sa.Engine) -> None:
    scores, thresholds = _scores(20, 1)
    publish.publish_scores(engine, D1, scores, thresholds, "m", "1", reasons=_reasons(["u001", "u002"], "first"))
    publish.publish_scores(engine, D1, scores, thresholds, "m", "1", reasons=_reasons(["u003"], "rerun"))
    rows = _read(engine, "user_spend_reasons")
    assert {r[1] for r in rows} == {"u003"} and len(rows) == 3  # a rerun replaces the partition's reasons
    assert rows[0][3] == "rerun reason 1 (+30)" and rows[0][6:] == ("v1", "1")
    publish.publish_scores(engine, D2, scores.slice(0, 10), thresholds, "m", "2", reasons=_reasons(["u004"], "next"))
    current = _read(engine, "current_user_spend_reasons")
    # u004 is explained in its latest partition; u003's latest score (D2) has no reasons, so its D1 reasons are not current
    assert {(r[0], r[1].isoformat() if hasattr(r[1], "isoformat") else str(r[1])) for r in current} == {("u004", "2024-06-02")}
    publish.publish_scores(engine, D2, scores.slice(0, 10), thresholds, "m", "2")  # no reasons: the old ones go with the old scores
    assert {r[1] for r in _read(engine, "user_spend_reasons")} == {"u003"}


def test_a_failed_publish_keeps_the_previous_reasons(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    scores, thresholds = _scores(20, 2)
    publish.publish_scores(engine, D1, scores, thresholds, "m", "1", reasons=_reasons(["u001"], "kept"))
    before = _read(engine, "user_spend_reasons")
    original = publish._replace_reasons

    def fail_after(conn, params, reasons, chunk):  # noqa: ANN001, ANN202
        original(conn, params, reasons, chunk)
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(publish, "_replace_reasons", fail_after)
    with pytest.raises(PublishError, match="rolled back"):
        publish.publish_scores(engine, D1, scores, thresholds, "m", "2", reasons=_reasons(["u005"], "lost"))
    assert _read(engine, "user_spend_reasons") == before


def test_bad_reasons_are_refused_before_anything_is_written(engine: sa.Engine) -> None:
    scores, thresholds = _scores(20, 3)
    with pytest.raises(DataError, match="has no score in this run"):
        publish.publish_scores(engine, D1, scores, thresholds, "m", "1", reasons=_reasons(["stranger"], "x"))
    doubled = pa.concat_tables([_reasons(["u001"], "x"), _reasons(["u001"], "y")])
    with pytest.raises(DataError, match="more than once"):
        publish.publish_scores(engine, D1, scores, thresholds, "m", "1", reasons=doubled)
    assert _read(engine, "user_spend_reasons") == []
