"""The nightly scoring steps (``spendpred.pipeline.nightly``) with a tiny random BERT, a small synthetic
warehouse and a real MLflow store in tmp: each bad input stops with a clear message and publishes nothing,
and a champion trained on an older text template keeps scoring until a retrain replaces it.
The whole path (train, then score and publish) is ``test_pipeline.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendpred import pipeline
from spendpred.errors import ModelError, ValidationFailed
from spendpred.snapshot import RunFolder
from tests.pipeline_run import RUN_DATE, published_scores, seed_run



@pytest.fixture
def env(tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path) -> Path:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    return isolated_settings


def test_score_without_a_champion_stops_clearly(env: Path, sqlite_url: str) -> None:
    seed_run(sqlite_url, users=60)
    with pytest.raises(ModelError, match="no champion yet"):
        pipeline.score(RUN_DATE, url=sqlite_url)
    assert published_scores(sqlite_url) == []


def test_template_mismatch_and_unvalidated_snapshots_are_refused(env: Path, sqlite_url: str) -> None:
    seed_run(sqlite_url, users=300)
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
    assert published_scores(sqlite_url) == []


def test_a_champion_trained_on_the_old_template_keeps_scoring_until_a_retrain_replaces_it(
    env: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    seed_run(sqlite_url, users=300)
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
