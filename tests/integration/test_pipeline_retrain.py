"""The weekly retrain steps (``spendpred.pipeline.retrain``) with a tiny random BERT, a small synthetic
warehouse and a real MLflow store in tmp: stacked training windows, kept apart from ordinary runs.
The whole path (train, then score and publish) is ``test_pipeline.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from spendpred import pipeline
from spendpred.errors import ValidationFailed
from spendpred.snapshot import RunFolder
from tests.pipeline_run import RUN_DATE, seed_run



@pytest.fixture
def env(tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path) -> Path:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    return isolated_settings


def test_stacked_training_windows(env: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two windows: the snapshot as of R-H and one 28 days earlier, both validated; held-out users never trained on."""
    import pandas as pd

    monkeypatch.setenv("SPENDPRED_TRAIN_WINDOWS", "2")
    seed_run(sqlite_url, users=300)
    snap = pipeline.extract_training_snapshot(RUN_DATE, url=sqlite_url)
    main = RunFolder.from_ref(snap)
    assert snap["windows"] == [(main.as_of - dt.timedelta(days=28)).isoformat()]
    assert main.windows == (main.as_of - dt.timedelta(days=28),) and RunFolder.from_ref(main.ref()) == main
    (earlier,) = main.window_folders()
    assert earlier == RunFolder("train-window", main.windows[0], main.root)  # under train-window/, apart from train/
    pipeline.validate_snapshot(RunFolder(main.kind, main.as_of, main.root))  # the main snapshot alone (no windows carried)
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

    seed_run(sqlite_url, users=300)
    plain = pipeline.extract_training_snapshot(RUN_DATE - dt.timedelta(days=35), url=sqlite_url)
    pipeline.validate_snapshot(plain)  # an ordinary run, five weeks back
    monkeypatch.setenv("SPENDPRED_TRAIN_WINDOWS", "12")
    experiment = pipeline.extract_training_snapshot(RUN_DATE, url=sqlite_url)
    pipeline.validate_snapshot(experiment)
    root = RunFolder.from_ref(experiment).root
    windows = RunFolder.from_ref(experiment).window_folders()
    assert [w.as_of.isoformat() for w in windows] == experiment["windows"] and {w.kind for w in windows} == {"train-window"}
    assert len(windows) == 11 and all(w.snapshot.passed_validation() for w in windows)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted([plain["as_of"], experiment["as_of"]])
    assert len(pd.read_parquet(windows[-1].snapshot.parquet)) < 0.5 * experiment["rows"]  # the short history's oldest window
    monkeypatch.setenv("SPENDPRED_TRAIN_WINDOWS", "1")
    nextrun = pipeline.extract_training_snapshot(RUN_DATE - dt.timedelta(days=7), url=sqlite_url)
    folder = RunFolder.from_ref(nextrun)
    # windows lie at as_of-28 ... as_of-308: before, the one 28 days before this date's as_of was its "previous"
    assert folder.previous() == RunFolder.from_ref(plain)
    assert pipeline.validate_snapshot(nextrun)["success"]
