"""The pipeline steps end to end (train, then score and publish) on SQLite and PostgreSQL,
with a tiny random BERT, a small synthetic warehouse and a real MLflow store in tmp.
Each module of ``spendpred.pipeline`` has its own tests beside this one: ``test_pipeline_admin.py``,
``test_pipeline_snapshots.py``, ``test_pipeline_retrain.py``, ``test_pipeline_nightly.py``,
``test_pipeline_monitoring.py``; the command line's are ``test_cli.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from spendpred import pipeline
from spendpred.errors import DataError
from spendpred.snapshot import RunFolder
from tests.pipeline_run import RUN_DATE, published_scores, seed_run



@pytest.fixture
def env(tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path) -> Path:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    return isolated_settings


def test_train_then_score_publishes_one_partition(env: Path, warehouse_url: str) -> None:
    seed_run(warehouse_url)
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
    before = published_scores(warehouse_url)
    assert sum(n for _, _, n in before) == 400

    again = pipeline.score(RUN_DATE, shards=2, url=warehouse_url)  # a rerun of the same date
    assert again["rows"] == 400
    assert published_scores(warehouse_url) == before

    snap = pipeline.extract_scoring_snapshot(RUN_DATE, url=warehouse_url)
    assert set(snap) == {"kind", "as_of", "root", "rows", "horizon_days"}  # XCom: a run folder, no paths
    pipeline.validate_snapshot(snap)
    half = pipeline.score_shard(snap, 0, 2)
    assert RunFolder.from_ref(half).shard_path(0, 2).is_file()
    with pytest.raises(DataError, match="do not cover"):
        pipeline.assign_tiers(snap, [half])
    assert published_scores(warehouse_url) == before

    dry = pipeline.score(dt.date(2024, 7, 1), publish=False, url=warehouse_url)
    assert dry["published"] is False
    assert {row[0] for row in published_scores(warehouse_url)} == {RUN_DATE.isoformat()}
