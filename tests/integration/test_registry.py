"""MLflow registry: a real SQLite tracking store and artifact folder in tmp, a tiny real SpendModel."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from spendpred import metrics, promotion, registry
from spendpred.config import Settings
from spendpred.errors import ConfigError, ModelError, RegistryUnavailable, TransientError
from spendpred.evaluation import write_evaluation
from spendpred.model.hybrid import DERIVED_COLUMNS
from tests.tiny_bert import FEATURE_COLUMNS, make_synthetic_users, make_tiny_bert

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@dataclass
class Trained:
    bundle_dir: Path
    model: object  # spendpred.model.SpendModel
    test_df: pd.DataFrame
    history: list[dict[str, float]]
    params: dict[str, object]
    snapshot_dir: Path
    evaluation_dir: Path
    test_metrics: dict[str, float]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny BERT regressor trained for two epochs on synthetic users, saved as a bundle."""
    import torch

    from spendpred.model import TrainConfig, train_regressor

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    encoder = make_tiny_bert(root / "encoder")
    users = make_synthetic_users(150, seed=3)
    train_df, val_df, test_df = users.iloc[:90], users.iloc[90:120], users.iloc[120:].reset_index(drop=True)
    config = TrainConfig(
        epochs=2, head_epochs=1, batch_size=16, device="cpu", progress=False, max_length=48, head_hidden=16, seed=0,
        loss="mse",
    )
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, config, encoder)
    bundle_dir = result.bundle.save(root / "bundle")

    snapshot = root / "snapshot"
    snapshot.mkdir()
    manifest = {"as_of": "2024-03-31", "horizon_days": 90, "with_labels": True, "row_count": 150,
                "text_template_version": "v1", "feature_columns": FEATURE_COLUMNS}  # fmt: skip
    (snapshot / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (snapshot / "validation.json").write_text(json.dumps({"success": True}), encoding="utf-8")
    (snapshot / "validation.md").write_text("# Validation\n\nall expectations met\n", encoding="utf-8")

    predictions = result.bundle.predict(test_df)
    evaluation = write_evaluation(
        test_df["label"], {"model": predictions, "past spend": test_df["past_spend"]}, root / "evaluation"
    )
    return Trained(
        bundle_dir, result.bundle, test_df, result.history, config.to_dict(), snapshot,
        evaluation.out_dir, evaluation.metrics["model"],
    )


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created once (migrations take seconds)."""
    home = tmp_path_factory.mktemp("template") / "var"
    registry.get_client(Settings(home=home)).search_experiments()
    return home / "mlflow.db"


@pytest.fixture
def fresh(tmp_path: Path, empty_store: Path) -> Settings:
    """Settings for a new, empty tracking store and artifact root in this test's tmp_path."""
    home = tmp_path / "var"
    home.mkdir()
    shutil.copyfile(empty_store, home / "mlflow.db")
    return Settings(home=home)


def _log(trained: Trained, settings: Settings, **extra: object) -> tuple[str, str]:
    return registry.log_training_run(
        bundle_dir=trained.bundle_dir,
        params=trained.params,
        history=trained.history,
        test_metrics=trained.test_metrics,
        settings=settings,
        **extra,
    )


@dataclass
class Logged:
    settings: Settings
    run_id: str
    version: str


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, trained: Trained, empty_store: Path) -> Logged:
    """One store holding one logged (never promoted) version. Tests must not change it."""
    home = tmp_path_factory.mktemp("store") / "var"
    home.mkdir()
    shutil.copyfile(empty_store, home / "mlflow.db")
    settings = Settings(home=home)
    run_id, version = _log(
        trained,
        settings,
        baseline_metrics={"past spend": {"rmse": 12.5, "normalised_gini": 0.3}},
        snapshot_dir=trained.snapshot_dir,
        evaluation_dir=trained.evaluation_dir,
        run_name="weekly-2024-03-31",
    )
    return Logged(settings, run_id, version)


def test_log_training_run_records_run_and_version(logged: Logged, trained: Trained) -> None:
    client = registry.get_client(logged.settings)
    assert logged.version == "1"
    run = client.get_run(logged.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "spendpred"
    assert experiment.artifact_location == logged.settings.resolved_artifact_root
    assert run.data.params["loss"] == "mse"
    assert run.data.params["epochs"] == "2"
    assert run.data.params["text_template_version"] == "v1"
    # per-epoch metrics, one point per epoch with step = epoch
    history = client.get_metric_history(logged.run_id, "val_loss")
    assert [point.step for point in history] == [1, 2, 3]  # one head-only epoch, then two fine-tuning epochs
    assert [point.value for point in history] == pytest.approx([h["val_loss"] for h in trained.history])
    assert run.data.metrics["test_normalised_gini"] == pytest.approx(trained.test_metrics["normalised_gini"])
    assert run.data.metrics["test_past_spend_rmse"] == pytest.approx(12.5)

    logged_files = {
        item.path for folder in ("snapshot", "evaluation") for item in client.list_artifacts(logged.run_id, folder)
    }
    assert {"snapshot/manifest.json", "snapshot/validation.json", "snapshot/validation.md"} <= logged_files
    assert {"evaluation/report.md", "evaluation/metrics.json", "evaluation/gain_curve.png",
            "evaluation/decile_calibration.png", "evaluation/pred_vs_true.png"} <= logged_files  # fmt: skip

    version = client.get_model_version("spendpred-regressor", logged.version)
    assert version.run_id == logged.run_id
    assert "challenger" in version.aliases
    assert version.tags["text_template_version"] == "v1"
    assert version.tags["loss"] == "mse"
    assert json.loads(version.tags["feature_columns"]) == FEATURE_COLUMNS
    assert len(json.loads(version.tags["normaliser"])["mean"]) == len(FEATURE_COLUMNS) + len(DERIVED_COLUMNS)  # + hybrid
    assert float(version.tags["test_rmse"]) == pytest.approx(trained.test_metrics["rmse"])
    # descriptions say what the model and the version are; the input example is made up
    assert client.get_registered_model("spendpred-regressor").description == registry.REGISTERED_MODEL_DESCRIPTION
    assert "loss mse" in version.description and "normalised_gini" in version.description
    assert json.loads(version.tags["baseline_metrics"]) == {"past spend": {"rmse": 12.5, "normalised_gini": 0.3}}
    model_dir = Path(urlparse(client.get_model_version_download_uri("spendpred-regressor", logged.version)).path)
    example = json.loads((model_dir / "input_example.json").read_text())
    assert example["columns"][0] == "text" and example["data"][0][0] == registry.EXAMPLE_TEXT


def test_logged_model_holds_no_pickle_and_the_bundle(logged: Logged) -> None:
    client = registry.get_client(logged.settings)
    model_dir = Path(urlparse(client.get_model_version_download_uri("spendpred-regressor", logged.version)).path)
    files = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".pt", ".bin"))]
    assert {"MLmodel", "spendpred_pyfunc.py", "artifacts/bundle/bundle.json",
            "artifacts/bundle/head.safetensors", "artifacts/bundle/encoder/model.safetensors"} <= files  # fmt: skip


def test_tracking_uri_is_not_left_set_globally(logged: Logged) -> None:
    import mlflow

    assert os.environ.get("MLFLOW_TRACKING_URI") != logged.settings.resolved_tracking_uri
    assert mlflow.get_tracking_uri() != logged.settings.resolved_tracking_uri


def test_pyfunc_predicts_the_same_numbers_as_spend_model(
    logged: Logged, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.settings.resolved_tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/spendpred-regressor/{logged.version}")
    # the full snapshot frame: extra columns (user_id, past_spend, label) are ignored
    via_pyfunc = np.asarray(pyfunc.predict(trained.test_df), dtype=np.float64)
    np.testing.assert_allclose(via_pyfunc, trained.model.predict(trained.test_df), rtol=1e-6, atol=1e-9)


def test_load_model_by_version_and_alias(logged: Logged, trained: Trained, tmp_path: Path) -> None:
    expected = trained.model.predict(trained.test_df)
    model, info = registry.load_model(logged.version, settings=logged.settings, device="cpu")
    assert str(info.version) == logged.version
    np.testing.assert_allclose(model.predict(trained.test_df), expected, rtol=1e-6, atol=1e-9)
    model, info = registry.load_model("challenger", settings=logged.settings, device="cpu", dst_dir=tmp_path)
    assert str(info.version) == logged.version
    assert (tmp_path / "bundle" / "bundle.json").is_file()  # kept when dst_dir is given


def test_no_champion_gives_a_clear_error(logged: Logged) -> None:
    with pytest.raises(ModelError, match=r"no champion yet: run `spendpred train --promote auto` first"):
        registry.load_model("champion", settings=logged.settings)
    assert registry.champion_info(logged.settings) is None
    with pytest.raises(ModelError, match="version 99 does not exist") as missing:
        registry.load_model(99, settings=logged.settings)
    assert not isinstance(missing.value, TransientError)  # Airflow fails at once instead of retrying


def test_unreachable_registry_is_transient_not_no_champion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = Settings(home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(RegistryUnavailable, match="cannot reach the MLflow registry"):
        registry.load_model("champion", settings=settings)
    with pytest.raises(RegistryUnavailable):
        registry.champion_info(settings)  # not "no champion yet"


def test_no_champion_in_an_empty_store(fresh: Settings) -> None:
    # nothing logged yet: the registered model does not even exist
    with pytest.raises(ModelError, match="no champion yet"):
        registry.load_model("champion", settings=fresh)
    assert registry.champion_info(fresh) is None


def test_promotion_flow(fresh: Settings, trained: Trained) -> None:
    settings = fresh
    client = registry.get_client(settings)
    users = trained.test_df
    _, first = _log(trained, settings)
    decision = registry.promote(client, first, trained.test_metrics, None)
    assert decision.promoted and "first version" in decision.reason
    assert registry.champion_info(settings)["version"] == first

    # the caller evaluates the champion on the same test users
    _, second = _log(trained, settings)
    champion, _ = registry.load_model("champion", settings=settings, device="cpu")
    champion_metrics, _ = promotion.rescore_champion(champion, users, users["user_id"])
    assert champion_metrics == metrics.evaluate(users["label"], champion.predict(users))
    worse = dict(trained.test_metrics, normalised_gini=champion_metrics["normalised_gini"] - 0.1)
    decision = registry.promote(client, second, worse, champion_metrics)
    assert not decision.promoted
    assert "does not beat the champion on normalised Gini" in decision.reason
    assert decision.previous_champion == first
    assert str(client.get_model_version_by_alias("spendpred-regressor", "champion").version) == first
    assert str(client.get_model_version_by_alias("spendpred-regressor", "challenger").version) == second
    assert client.get_model_version("spendpred-regressor", second).tags["promotion"] == "rejected"

    # better Gini, RMSE within 5%: promoted, the previous champion is recorded
    better = dict(
        champion_metrics,
        normalised_gini=champion_metrics["normalised_gini"] + 0.05,
        rmse=champion_metrics["rmse"] * 1.04,
    )
    decision = registry.promote(client, second, better, champion_metrics)
    assert decision.promoted
    tags = client.get_model_version("spendpred-regressor", second).tags
    assert tags["promotion"] == "promoted" and tags["previous_champion"] == first

    # never: recorded, nothing changes
    decision = registry.promote(client, first, better, champion_metrics, mode="never")
    assert not decision.promoted
    assert client.get_model_version("spendpred-regressor", first).tags["promotion"] == "skipped"
    assert registry.champion_info(settings)["version"] == second

    # force: the operator puts version 1 back, who/when/why recorded
    decision = registry.promote(
        client, first, worse, champion_metrics, mode="force", actor="ops-oncall", reason="rollback: bad scores"
    )
    assert decision.promoted and "ops-oncall" in decision.reason
    info = registry.champion_info(settings)
    assert info["version"] == first
    assert info["tags"]["promotion"] == "forced"
    assert info["tags"]["promoted_by"] == "ops-oncall"
    assert info["tags"]["promotion_reason"].startswith("forced by ops-oncall: rollback: bad scores (gate: ")
    assert info["tags"][registry.SKIPPED_GATE_TAG].startswith("does not beat the champion on normalised Gini")
    assert info["tags"]["promoted_at"]
    assert info["metrics"]["rmse"] == pytest.approx(trained.test_metrics["rmse"])


def test_promote_needs_champion_metrics_and_valid_mode(fresh: Settings, trained: Trained) -> None:
    settings = fresh
    client = registry.get_client(settings)
    _, first = _log(trained, settings)
    registry.promote(client, first, trained.test_metrics, None)
    _, second = _log(trained, settings)
    with pytest.raises(ConfigError, match="champion_metrics_on_same_users is None"):
        registry.promote(client, second, trained.test_metrics, None)
    with pytest.raises(ConfigError, match="mode='sometimes'"):
        registry.promote(client, second, trained.test_metrics, None, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="version 7 does not exist"):
        registry.promote(client, 7, trained.test_metrics, None)


def test_corrupt_or_missing_artifact_gives_a_clear_error(fresh: Settings, trained: Trained) -> None:
    settings = fresh
    client = registry.get_client(settings)
    _, version = _log(trained, settings)
    registry.promote(client, version, trained.test_metrics, None)
    model_dir = Path(urlparse(client.get_model_version_download_uri("spendpred-regressor", version)).path)
    head = model_dir / "artifacts" / "bundle" / "head.safetensors"
    head.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"version 1: .*head\.safetensors is corrupt"):
        registry.load_model("champion", settings=settings)
    for file in sorted((model_dir / "artifacts" / "bundle").rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    (model_dir / "artifacts" / "bundle").rmdir()
    with pytest.raises(ModelError, match="version 1: cannot download its model artifact"):
        registry.load_model("champion", settings=settings)


def test_log_training_run_rejects_bad_folders(tmp_path: Path, trained: Trained) -> None:
    settings = Settings(home=tmp_path / "var")
    with pytest.raises(ModelError, match="bundle.json is missing"):
        registry.log_training_run(bundle_dir=tmp_path, params={}, history=[], test_metrics={}, settings=settings)
    with pytest.raises(ConfigError, match="snapshot_dir=.* is not a folder"):
        registry.log_training_run(
            bundle_dir=trained.bundle_dir, params={}, history=[], test_metrics={},
            snapshot_dir=tmp_path / "nope", settings=settings,
        )
    assert not (tmp_path / "var").exists()  # nothing created before the inputs are checked


def test_registering_writes_nothing_to_stderr_and_logs_at_info(
    fresh: Settings, trained: Trained, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Airflow records stderr at ERROR: MLflow's "Created version" must arrive as an INFO log record instead."""
    import logging

    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        _, version = _log(trained, fresh)
    assert capfd.readouterr().err == ""
    mlflow_lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.split(".")[0] == "mlflow"]
    assert (logging.INFO, f"Created version '{version}' of model 'spendpred-regressor'.") in mlflow_lines
    assert (logging.INFO, "Successfully registered model 'spendpred-regressor'.") in mlflow_lines


def test_a_forced_promotion_records_the_actor_passed_to_the_step(
    fresh: Settings, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipeline.promote_model(actor=...)``: the Airflow user (or the CLI's --actor), never the OS user."""
    import getpass

    from spendpred import pipeline

    monkeypatch.setenv("SPENDPRED_HOME", str(fresh.home))
    client = registry.get_client(fresh)
    _, first = _log(trained, fresh)
    result = pipeline.promote_model(first, mode="force", actor="alice")
    assert result["promoted"] and result["champion_version"] == first and "forced by alice" in result["reason"]
    tags = client.get_model_version(registry.REGISTERED_MODEL, first).tags
    assert tags["promotion"] == "forced" and tags["promoted_by"] == "alice" != getpass.getuser()
    assert registry.SKIPPED_GATE_TAG not in tags  # the first version would have passed the gate

    _, second = _log(trained, fresh)
    pipeline.promote_model(second, mode="force", actor="bob")
    tags = client.get_model_version(registry.REGISTERED_MODEL, second).tags
    assert tags["promoted_by"] == "bob"
    assert tags[registry.SKIPPED_GATE_TAG] == f"the comparison with champion version {first} (not run: a forced promotion does not re-score it)"


def test_a_training_run_is_named_after_its_settings_tagged_with_the_commit_and_no_default_experiment(
    fresh: Settings, trained: Trained
) -> None:
    """Issue 22: runs were all named after the date, recorded no commit, and MLflow's empty ``Default`` showed beside ``spendpred``."""
    import subprocess

    from mlflow.entities import ViewType

    client = registry.get_client(fresh)
    assert [e.name for e in client.search_experiments()] == ["Default"]  # what MLflow's store creates with its tables
    run_id, _ = _log(trained, fresh, snapshot_dir=trained.snapshot_dir)  # no run_name: the default
    run = client.get_run(run_id)
    assert run.info.run_name == "retrain 2024-03-31 loss=mse freeze=none"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(registry.__file__).parent, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert run.data.tags[registry.GIT_COMMIT_TAG] == head  # this checkout's commit
    assert [e.name for e in client.search_experiments()] == ["spendpred"]  # the empty Default is gone from the list
    assert client.get_experiment("0").lifecycle_stage == "deleted"
    assert registry.training_run_name("2024-06-30", {"loss": "huber", "freeze": "bottom-k:4"}) == (
        "retrain 2024-06-30 loss=huber freeze=bottom-k:4"
    )
    # a Default holding runs is someone else's: never deleted
    client.restore_experiment("0")
    client.create_run("0")
    registry.ensure_experiment(client, fresh)
    assert client.get_experiment("0").lifecycle_stage == "active"
    assert {e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)} == {"Default", "spendpred"}


def test_no_commit_tag_outside_a_git_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code not tracked in a git work tree (an installed copy) records no commit rather than a wrong one."""
    import shutil as sh

    from spendpred.registry import runs  # source_commit reads the location of the module it is defined in

    copy = tmp_path / "site" / "spendpred" / "registry"
    copy.mkdir(parents=True)
    sh.copyfile(runs.__file__, copy / "runs.py")
    monkeypatch.setattr(runs, "__file__", str(copy / "runs.py"))
    registry.source_commit.cache_clear()
    try:
        assert registry.source_commit() is None
        monkeypatch.setenv("PATH", str(tmp_path / "no-git"))  # git missing altogether
        registry.source_commit.cache_clear()
        assert registry.source_commit() is None
    finally:
        registry.source_commit.cache_clear()
