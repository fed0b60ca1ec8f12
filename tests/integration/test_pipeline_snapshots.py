"""Snapshot steps of both jobs (``spendpred.pipeline.snapshots``): the preflight, extracting, validating.

Real SQLite warehouses; a failing step must name the problem and create nothing in staging.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from spendpred import pipeline, warehouse
from spendpred.config import Settings
from spendpred.errors import ConfigError, ValidationFailed
from spendpred.pipeline.snapshots import preflight, resolve_horizon
from spendpred.snapshot import MANIFEST_FILE, SNAPSHOT_FILE
from tests.pipeline_run import RUN_DATE, published_scores

AS_OF = dt.date(2024, 3, 31)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, isolated_settings: Path) -> Path:
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    return isolated_settings


def _staging(settings: Settings) -> Path:
    root = settings.resolved_staging_dir
    assert isinstance(root, Path)
    return root


def test_preflight_passes_on_a_seeded_warehouse_and_creates_nothing(sqlite_url: str) -> None:
    pipeline.seed(users=40, days=30, end_date=AS_OF, seed=2, url=sqlite_url)
    settings = Settings()
    for kind in ("train", "score"):
        preflight(kind, sqlite_url, settings)
    assert not _staging(settings).exists()  # checked that it could be created, created nothing


def test_preflight_names_the_first_problem(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="run kind 'backfill' is not one of train, score"):
        preflight("backfill", sqlite_url)
    engine = warehouse.get_engine(sqlite_url)
    try:
        with engine.begin() as conn:  # a warehouse without the contract's relations
            conn.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
        with pytest.raises(sa.exc.OperationalError, match="no such table: users"):
            preflight("train", sqlite_url)
        warehouse.init_db(engine)
    finally:
        engine.dispose()
    preflight("score", sqlite_url)  # the relations exist now (empty is fine: no row is read)

    monkeypatch.setenv("SPENDPRED_TIER_HIGH", "0.8")
    monkeypatch.setenv("SPENDPRED_TIER_MEDIUM", "0.5")  # shares adding up past 1
    with pytest.raises(ConfigError, match=r"^the SPENDPRED_TIER_\* settings hold an invalid tier rule"):
        preflight("score", sqlite_url, Settings())
    preflight("train", sqlite_url, Settings())  # training publishes no tiers: the rule does not stop it


def test_preflight_refuses_a_staging_folder_it_could_not_create(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.init_warehouse(sqlite_url)
    blocker = tmp_path / "staging-is-a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("SPENDPRED_STAGING_DIR", str(blocker))
    with pytest.raises(NotADirectoryError):
        preflight("train", sqlite_url, Settings())
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_resolve_horizon_prefers_the_checked_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "45")
    settings = Settings()
    assert resolve_horizon(None, settings) == 45
    assert resolve_horizon(30, settings) == 30


def test_extract_snapshot_writes_into_any_folder_only_when_it_succeeds(sqlite_url: str, tmp_path: Path) -> None:
    pipeline.seed(users=40, days=60, end_date=AS_OF, seed=2, url=sqlite_url)
    out = tmp_path / "exports" / "labelled"
    done = pipeline.extract_snapshot(AS_OF - dt.timedelta(days=20), out, with_labels=True, horizon_days=20, url=sqlite_url)
    assert done == {"snapshot_dir": str(out), "as_of": "2024-03-11", "rows": done["rows"], "horizon_days": 20}
    assert 0 < done["rows"] <= 40 and (out / SNAPSHOT_FILE).is_file() and (out / MANIFEST_FILE).is_file()

    with pytest.raises(ConfigError, match="output folder is empty"):
        pipeline.extract_snapshot(AS_OF, "  ", url=sqlite_url)
    with pytest.raises(ConfigError, match="horizon=0 is out of range"):
        pipeline.extract_snapshot(AS_OF, tmp_path / "never", horizon_days=0, url=sqlite_url)
    missing = f"sqlite:///{tmp_path / 'gone' / 'warehouse.db'}"
    with pytest.raises(ConfigError, match="does not exist"):  # as the front ends run it: a mistyped file is refused
        with warehouse.existing_warehouse_only():
            pipeline.extract_snapshot(AS_OF, tmp_path / "failed" / "snapshot", url=missing)
    assert not (tmp_path / "failed").exists() and not (tmp_path / "gone").exists()
    bare = f"sqlite:///{tmp_path / 'bare.db'}"
    with warehouse.opened_engine(bare) as engine, engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
    with pytest.raises(sa.exc.OperationalError):  # the extract itself fails, inside the staged folder
        pipeline.extract_snapshot(AS_OF, tmp_path / "failed" / "snapshot", url=bare)
    assert not (tmp_path / "failed").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no hidden leftovers either


def test_empty_warehouse_snapshot_fails_validation(env: Path, sqlite_url: str) -> None:
    pipeline.init_warehouse(sqlite_url)
    snap = pipeline.extract_scoring_snapshot(RUN_DATE, url=sqlite_url)
    with pytest.raises(ValidationFailed):
        pipeline.validate_snapshot(snap)
    with pytest.raises(ValidationFailed):
        pipeline.plan_shards(snap, 1)
    assert published_scores(sqlite_url) == []
