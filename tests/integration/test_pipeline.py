"""The pipeline steps end to end (train, then score and publish) on SQLite and PostgreSQL,
with a tiny random BERT, a small synthetic warehouse and a real MLflow store in tmp.
Also the bad inputs of nightly scoring: each stops with a clear message and publishes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from spendpred import pipeline, warehouse
from spendpred.errors import DataError, ModelError, ValidationFailed
from spendpred.snapshot import RunFolder
from tests.tiny_bert import make_tiny_bert

RUN_DATE = dt.date(2024, 6, 30)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("encoder") / "tiny-bert")


@pytest.fixture
def env(tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path) -> Path:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    return isolated_settings


def _seed(url: str, users: int = 400) -> None:
    pipeline.seed(users=users, days=400, end_date=RUN_DATE, seed=7, url=url)


def _scores(url: str) -> list[tuple]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT CAST(as_of AS TEXT), tier, COUNT(*) FROM user_spend_scores GROUP BY 1, 2 ORDER BY 1, 2"
            ))]
    finally:
        engine.dispose()


def test_train_then_score_publishes_one_partition(env: Path, warehouse_url: str) -> None:
    _seed(warehouse_url)
    # 400 users hold about 60 held-out users: too few for the gate to promote on its own
    refused = pipeline.train(RUN_DATE, epochs=1, promote="auto", url=warehouse_url)
    assert refused["version"] == "1" and refused["promotion"]["promoted"] is False
    assert "held-out users" in refused["promotion"]["reason"] and refused["promotion"]["champion_version"] is None
    trained = pipeline.train(RUN_DATE, epochs=1, promote="force", url=warehouse_url)
    assert trained["version"] == "2"
    assert trained["promotion"]["promoted"] is True
    assert trained["promotion"]["champion_version"] == "2"
    assert 0.0 < trained["metrics"]["normalised_gini"] <= 1.0
    run = RunFolder.from_ref(trained)
    assert (run.kind, run.as_of) == ("train", dt.date(2024, 5, 1))  # R - H
    assert Path(trained["train_dir"]) == run.model_dir
    assert (run.evaluation_dir / "report.md").is_file()
    assert json.loads(run.result_json.read_text())["as_of"] == "2024-05-01"
    from spendpred import registry

    client = registry.get_client()  # a run named after its snapshot date and settings, in the one experiment
    assert client.get_run(trained["run_id"]).info.run_name == "retrain 2024-05-01 loss=ziln freeze=none"
    assert [e.name for e in client.search_experiments()] == ["spendpred"]  # no stray Default

    first = pipeline.score(RUN_DATE, shards=3, url=warehouse_url)
    assert first["published"] is True and first["model_version"] == "2"
    assert first["rows"] == 400
    assert first["counts"] == {"high": 40, "medium": 120, "low": 240}
    before = _scores(warehouse_url)
    assert sum(n for _, _, n in before) == 400

    again = pipeline.score(RUN_DATE, shards=2, url=warehouse_url)  # a rerun of the same date
    assert again["rows"] == 400
    assert _scores(warehouse_url) == before

    snap = pipeline.extract_scoring_snapshot(RUN_DATE, url=warehouse_url)
    assert set(snap) == {"kind", "as_of", "root", "rows", "horizon_days"}  # XCom: a run folder, no paths
    pipeline.validate_snapshot(snap)
    half = pipeline.score_shard(snap, 0, 2)
    assert RunFolder.from_ref(half).shard_path(0, 2).is_file()
    with pytest.raises(DataError, match="do not cover"):
        pipeline.assign_tiers(snap, [half])
    assert _scores(warehouse_url) == before

    dry = pipeline.score(dt.date(2024, 7, 1), publish=False, url=warehouse_url)
    assert dry["published"] is False
    assert {row[0] for row in _scores(warehouse_url)} == {RUN_DATE.isoformat()}


def test_score_without_a_champion_stops_clearly(env: Path, sqlite_url: str) -> None:
    _seed(sqlite_url, users=60)
    with pytest.raises(ModelError, match="no champion yet"):
        pipeline.score(RUN_DATE, url=sqlite_url)
    assert _scores(sqlite_url) == []


def test_template_mismatch_and_unvalidated_snapshots_are_refused(env: Path, sqlite_url: str) -> None:
    _seed(sqlite_url, users=300)
    pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)
    snap = pipeline.extract_scoring_snapshot(RUN_DATE, url=sqlite_url)
    run = RunFolder.from_ref(snap)

    with pytest.raises(ValidationFailed, match="has not been validated"):
        pipeline.plan_shards(snap, 2)

    pipeline.validate_snapshot(run.snapshot_dir)  # the CLI's spelling: a folder in staging
    manifest = json.loads(run.snapshot.manifest_file.read_text())
    manifest["text_template_version"] = "v0"
    run.snapshot.manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="text template 'v2' but the snapshot uses 'v0'"):
        pipeline.score_shard(snap, 0, 1)

    report = run.validation_json
    report.write_text(json.dumps({**json.loads(report.read_text()), "success": False}))
    with pytest.raises(ValidationFailed, match="failed validation"):
        pipeline.score_shard(snap, 0, 1)
    assert _scores(sqlite_url) == []


def test_a_champion_trained_on_the_old_template_keeps_scoring_until_a_retrain_replaces_it(
    env: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    _seed(sqlite_url, users=300)
    monkeypatch.setenv("SPENDPRED_TEXT_TEMPLATE", "v1")
    assert pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)["promotion"]["promoted"] is True
    monkeypatch.setenv("SPENDPRED_TEXT_TEMPLATE", "v2")  # the upgrade: the default is now v2
    scored = pipeline.score(RUN_DATE, url=sqlite_url)  # extracted with the champion's template
    assert scored["published"] is True and scored["rows"] == 300
    assert RunFolder.for_date("score", RUN_DATE).manifest.text_template_version == "v1"
    # the weekly retrain trains on v2 and re-scores the v1 champion on v1 texts of the same held-out users
    with caplog.at_level(logging.INFO, logger="spendpred.pipeline.retrain"):
        trained = pipeline.train(RUN_DATE, epochs=1, promote="auto", url=sqlite_url)
    assert RunFolder.from_ref(trained).manifest.text_template_version == "v2"
    assert "re-rendering the held-out users' texts with template v1 for the champion" in caplog.text
    assert trained["promotion"]["promoted"] is False  # too few held-out users here to replace a champion
    assert not any(p.name.startswith("spendpred-champion-") for p in RunFolder.from_ref(trained).root.iterdir())
    assert pipeline.promote_model(trained["version"], "force")["promoted"] is True
    assert pipeline.score(RUN_DATE, url=sqlite_url)["rows"] == 300
    assert RunFolder.for_date("score", RUN_DATE).manifest.text_template_version == "v2"


def test_empty_warehouse_snapshot_fails_validation(env: Path, sqlite_url: str) -> None:
    pipeline.init_warehouse(sqlite_url)
    snap = pipeline.extract_scoring_snapshot(RUN_DATE, url=sqlite_url)
    with pytest.raises(ValidationFailed):
        pipeline.validate_snapshot(snap)
    with pytest.raises(ValidationFailed):
        pipeline.plan_shards(snap, 1)
    assert _scores(sqlite_url) == []


def test_cli_reports_bad_input_in_one_line(env: Path, sqlite_url: str) -> None:
    for args, message in (
        (["score", "--as-of", "2024-13-01"], "as_of='2024-13-01' is not a date: use YYYY-MM-DD"),
        (["score", "--as-of", RUN_DATE.isoformat(), "--model", "latest"], "use 'champion', 'challenger' or a version number"),
        (["train", "--as-of", RUN_DATE.isoformat(), "--horizon-days", "0"], "horizon=0 is out of range: use a whole number in 1..3650"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "spendpred.cli", *args, "--url", sqlite_url], capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_stacked_training_windows(env: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two windows: the snapshot as of R-H and one 28 days earlier, both validated; held-out users never trained on."""
    import pandas as pd

    monkeypatch.setenv("SPENDPRED_TRAIN_WINDOWS", "2")
    _seed(sqlite_url, users=300)
    snap = pipeline.extract_training_snapshot(RUN_DATE, url=sqlite_url)
    main = RunFolder.from_ref(snap)
    assert snap["windows"] == [(main.as_of - dt.timedelta(days=28)).isoformat()]
    earlier = RunFolder("train-window", dt.date.fromisoformat(snap["windows"][0]), main.root)
    pipeline.validate_snapshot(main)  # the main snapshot alone
    with pytest.raises(ValidationFailed, match=f"{earlier.snapshot_dir}.*has not been validated"):
        pipeline.train_model(snap, epochs=1)  # an unvalidated window is refused like the main snapshot
    checked = pipeline.validate_snapshot(snap)
    assert checked["windows"] == snap["windows"] and earlier.validation_json.is_file()
    pipeline.train_model(snap, epochs=1)
    result = json.loads(main.result_json.read_text())
    one_window = len(pd.read_parquet(main.snapshot.parquet)) + len(pd.read_parquet(earlier.snapshot.parquet))
    params = result["params"]
    assert params["train_users"] + params["val_users"] + params["test_users"] < one_window
    held_out = set(pd.read_parquet(main.test_predictions)["user_id"])
    from spendpred.splits import assign_splits

    earlier_ids = pd.read_parquet(earlier.snapshot.parquet)["user_id"]
    assert held_out.isdisjoint(set(earlier_ids[assign_splits(earlier_ids) != "test"]))
    # the calibration to currency sees the latest window's validation users only; early stopping sees both
    from spendpred.splits import split_frame

    latest_val = len(split_frame(pd.read_parquet(main.snapshot.parquet), None)["val"])
    calibration = json.loads((main.bundle_dir / "bundle.json").read_text())["calibration"]
    assert calibration["users"] == latest_val < params["val_users"]


def test_stacked_windows_never_count_as_the_previous_snapshot(env: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: an experiment's window snapshots (here 12 windows on a short history, the oldest a third the size)
    stay apart from ordinary runs: the next plain retrain of an earlier date compares with an ordinary run, never a window."""
    import pandas as pd

    _seed(sqlite_url, users=300)
    plain = pipeline.extract_training_snapshot(RUN_DATE - dt.timedelta(days=35), url=sqlite_url)
    pipeline.validate_snapshot(plain)  # an ordinary run, five weeks back
    monkeypatch.setenv("SPENDPRED_TRAIN_WINDOWS", "12")
    experiment = pipeline.extract_training_snapshot(RUN_DATE, url=sqlite_url)
    pipeline.validate_snapshot(experiment)
    root = RunFolder.from_ref(experiment).root
    windows = [RunFolder("train-window", dt.date.fromisoformat(d), root) for d in experiment["windows"]]
    assert len(windows) == 11 and all(w.snapshot.passed_validation() for w in windows)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted([plain["as_of"], experiment["as_of"]])
    assert len(pd.read_parquet(windows[-1].snapshot.parquet)) < 0.5 * experiment["rows"]  # the short history's oldest window
    monkeypatch.setenv("SPENDPRED_TRAIN_WINDOWS", "1")
    nextrun = pipeline.extract_training_snapshot(RUN_DATE - dt.timedelta(days=7), url=sqlite_url)
    folder = RunFolder.from_ref(nextrun)
    # windows lie at as_of-28 ... as_of-308: before, the one 28 days before this date's as_of was its "previous"
    assert folder.previous() == RunFolder.from_ref(plain)
    assert pipeline.validate_snapshot(nextrun)["success"]
