"""The Great Expectations gate: a good snapshot passes; each corruption is caught by name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from spendpred import behaviour, warehouse
from spendpred.files import sha256_file
from spendpred.snapshot import MANIFEST_FILE, SNAPSHOT_FILE
from spendpred.errors import DataError, ValidationFailed
from spendpred.validation import validate_snapshot
from tests.integration.test_behaviour import AS_OF, EVENTS, H, ORDERS, REVIEWS, USERS, _events, _insert, _orders, _reviews, _users


KNOWN = {u for u, _ in USERS}


def _seed(engine: sa.Engine) -> None:
    """The hand-made warehouse of test_behaviour without its orphan rows (they break the source contract)."""
    warehouse.init_db(engine)
    orders = [o for o in ORDERS if o[1] in KNOWN]
    events = [e for e in EVENTS if e[0] in KNOWN]
    _insert(engine, users=_users(USERS), orders=_orders(orders), events=_events(events), reviews=_reviews(REVIEWS))


@pytest.fixture(scope="module")
def good_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the hand-made warehouse (SQLite), extracted once for the module."""
    base = tmp_path_factory.mktemp("good")
    engine = warehouse.get_engine(f"sqlite:///{base / 'warehouse.db'}")
    _seed(engine)
    behaviour.extract_snapshot(engine, AS_OF, base / "snap", H, with_labels=True)
    engine.dispose()
    return base / "snap"


@pytest.fixture
def snap(good_snapshot: Path, tmp_path: Path) -> Path:
    """A private copy of the good snapshot, free to corrupt."""
    return Path(shutil.copytree(good_snapshot, tmp_path / "snap"))


def _rewrite(snapshot_dir: Path, change: Callable[[pa.Table], pa.Table], *, update_manifest: bool = True) -> None:
    """Rewrite snapshot.parquet through ``change``; by default the manifest follows (a faulty producer)."""
    path = snapshot_dir / SNAPSHOT_FILE
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    if update_manifest:
        manifest = json.loads((snapshot_dir / MANIFEST_FILE).read_text())
        manifest["row_count"] = table.num_rows
        manifest["checksum"] = sha256_file(path)
        (snapshot_dir / MANIFEST_FILE).write_text(json.dumps(manifest))


def _set(table: pa.Table, column: str, user: str, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    users = table.column("user_id").to_pylist()
    values[users.index(user)] = value
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def _failed_checks(snapshot_dir: Path) -> list[str]:
    report = json.loads((snapshot_dir / "validation.json").read_text())
    return [f["check"] for f in report["summary"]["failures"]]


def _expect_failure(snapshot_dir: Path, *, previous: Path | None = None, freshness_days: int = 2) -> str:
    with pytest.raises(ValidationFailed) as info:
        validate_snapshot(snapshot_dir, previous_dir=previous, freshness_days=freshness_days)
    message = str(info.value)
    assert f"full report: {snapshot_dir / 'validation.md'}" in message
    report = json.loads((snapshot_dir / "validation.json").read_text())
    assert report["success"] is False
    md = (snapshot_dir / "validation.md").read_text()
    assert "**FAILED**" in md
    for failure in report["summary"]["failures"]:
        assert failure["check"] in md and failure["check"] in message
    return message


def test_good_snapshot_passes_on_both_dialects(warehouse_url: str, tmp_path: Path) -> None:
    engine = warehouse.get_engine(warehouse_url)
    _seed(engine)
    behaviour.extract_snapshot(engine, AS_OF, tmp_path / "snap", H, with_labels=True)
    result = validate_snapshot(tmp_path / "snap", freshness_days=2)
    assert result.success and not result.failures
    assert result.row_count == 3 and result.evaluated > 50
    report = json.loads((tmp_path / "snap" / "validation.json").read_text())
    assert report["success"] is True
    assert report["checksum"] == sha256_file(tmp_path / "snap" / SNAPSHOT_FILE)  # what consumers compare with
    assert set(report["gx"]) == {"schema", "values", "manifest", "source"}
    assert all(r["success"] for batch in report["gx"].values() for r in batch["results"])
    assert "**PASSED**" in (tmp_path / "snap" / "validation.md").read_text()


def test_null_user_id(snap: Path) -> None:
    _rewrite(snap, lambda t: _set(t, "user_id", "u1", None))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == ["user_id is never null"]
    assert "1 of 3 rows unexpected" in message


def test_duplicate_user(snap: Path) -> None:
    _rewrite(snap, lambda t: pa.concat_tables([t, t.slice(1, 1)]))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == ["one row per user (user_id unique)"]
    assert '"user_id": "u1"' in message  # the duplicated user is named


def test_negative_amount(snap: Path) -> None:
    _rewrite(snap, lambda t: _set(t, "monetary_30d", "u1", -5.0))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == ["money is non-negative (monetary_30d >= 0)"]
    assert '"monetary_30d": -5.0' in message and '"user_id": "u1"' in message


def test_order_dated_after_as_of(snap: Path) -> None:
    _rewrite(snap, lambda t: _set(t, "recency_days", "U2", -3.0))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == ["no order dated after the as-of date (recency_days >= 0)"]
    assert '"recency_days": -3.0' in message


def test_empty_extract(tmp_path: Path) -> None:
    engine = warehouse.get_engine(f"sqlite:///{tmp_path / 'w.db'}")
    _seed(engine)
    behaviour.extract_snapshot(engine, date(2023, 1, 1), tmp_path / "snap", H, with_labels=True)  # before any signup
    _expect_failure(tmp_path / "snap")
    failed = _failed_checks(tmp_path / "snap")
    assert "the extract is not empty" in failed
    assert "the manifest records the newest source timestamp" in failed  # nothing before D at all


def test_missing_column(snap: Path) -> None:
    _rewrite(snap, lambda t: t.drop_columns(["views_30d"]))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == ["columns are exactly those of the snapshot contract"]
    assert "missing" in message and "views_30d" in message


def test_row_count_collapse_against_previous(snap: Path, good_snapshot: Path) -> None:
    _rewrite(snap, lambda t: t.filter(pc.equal(t.column("user_id"), "u1")))
    message = _expect_failure(snap, previous=good_snapshot)
    assert _failed_checks(snap) == ["row count within 50% of the previous snapshot (3 rows)"]
    assert "observed 1" in message
    # the same snapshot against no previous one is fine
    assert validate_snapshot(snap).success


def test_file_changed_after_extraction(snap: Path) -> None:
    _rewrite(snap, lambda t: _set(t, "label", "u1", 1.0), update_manifest=False)
    _expect_failure(snap)
    assert _failed_checks(snap) == ["snapshot.parquet matches the manifest checksum (file unchanged since extraction)"]


def test_stale_sources(snap: Path) -> None:
    manifest = json.loads((snap / MANIFEST_FILE).read_text())
    manifest["max_source_timestamp"] = "2024-06-20T10:00:00"
    (snap / MANIFEST_FILE).write_text(json.dumps(manifest))
    message = _expect_failure(snap, freshness_days=2)
    assert _failed_checks(snap) == ["fresh sources: newest source row at most 2 day(s) before the as-of date"]
    assert "1 of 1 rows" in message
    assert "e.g. [10.0]" in message or "e.g. [10]" in message  # the lag in days, not a row position
    assert validate_snapshot(snap, freshness_days=10).success


def test_wrong_type_and_negative_label(snap: Path) -> None:
    _rewrite(snap, lambda t: _set(t, "label", "é3", -1.0).set_column(0, "user_id", pc.cast(pa.array([1, 2, 3]), pa.int64())))
    _expect_failure(snap)
    failed = _failed_checks(snap)
    assert "user_id is a string" in failed and "labels are non-negative" in failed


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "snap").mkdir()
    message = _expect_failure(tmp_path / "snap")
    assert "manifest.json is readable" in message and "snapshot.parquet is readable" in message
    with pytest.raises(DataError, match="does not exist"):
        validate_snapshot(tmp_path / "nowhere")


def test_orphans_of_the_behaviour_warehouse_are_refused(tmp_path: Path) -> None:
    engine = warehouse.get_engine(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.init_db(engine)
    _insert(engine, users=_users(USERS), orders=_orders(ORDERS), events=_events(EVENTS), reviews=_reviews(REVIEWS))
    behaviour.extract_snapshot(engine, AS_OF, tmp_path / "snap", H, with_labels=True)
    engine.dispose()
    message = _expect_failure(tmp_path / "snap")
    failed = _failed_checks(tmp_path / "snap")
    assert len(failed) == 2 and all(c.startswith("source contract ") for c in failed)
    assert "order_user_unknown" in message and '"order o13: user a0"' in message
    assert "event_user_unknown" in message and "event of user zz at 2024-06-29 10:00:00" in message


def test_manifest_without_source_checks_is_refused(snap: Path) -> None:
    """A snapshot extracted before the source contract existed is not vouched for: re-extract it."""
    manifest = json.loads((snap / MANIFEST_FILE).read_text())
    del manifest["source_checks"]
    (snap / MANIFEST_FILE).write_text(json.dumps(manifest))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == [
        "the manifest records every source-data contract check (a snapshot extracted before the contract: re-extract it)"
    ]
    assert "re-extract" in message


@pytest.mark.parametrize("value", [float("inf"), 1e300])
def test_implausible_money_in_the_snapshot(snap: Path, value: float) -> None:
    _rewrite(snap, lambda t: _set(t, "avg_basket", "u1", value))
    message = _expect_failure(snap)
    assert _failed_checks(snap) == ["money is finite and plausible (avg_basket <= 1e+09)"]
    assert '"user_id": "u1"' in message
