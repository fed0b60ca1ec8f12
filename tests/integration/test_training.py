"""Training the spend regressor end to end on a tiny random BERT and synthetic users."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from spendpred.errors import ConfigError, DataError
from spendpred.model import SpendModel, TrainConfig, fit_head_only, train_regressor
from tests.tiny_bert import FEATURE_COLUMNS, make_synthetic_users, make_tiny_bert


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def users() -> pd.DataFrame:
    return make_synthetic_users(400, seed=1)


@pytest.fixture(scope="module")
def train_df(users: pd.DataFrame) -> pd.DataFrame:
    return users.iloc[:300].reset_index(drop=True)


@pytest.fixture(scope="module")
def val_df(users: pd.DataFrame) -> pd.DataFrame:
    return users.iloc[300:].reset_index(drop=True)


def config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "epochs": 6, "head_epochs": 3, "batch_size": 16, "lr": 1e-3, "head_lr": 3e-3, "max_length": 32,
        "device": "cpu", "patience": 3, "progress": False, "loss": "mse",
    }  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


@pytest.mark.parametrize("loss", ["mse", "huber", "ziln"])
def test_training_lowers_validation_loss_and_ranks_users(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, loss: str
) -> None:
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(loss=loss), bert, "v1")
    # the untrained model already predicts the best constant (head bias fitted to the labels)
    assert result.best_val_loss < 0.95 * result.initial_val_loss
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_loss"] == result.best_val_loss
    assert {"epoch", "train_loss", "val_loss", "val_rmse", "lr", "head_lr", "seconds"} <= set(result.history[0])
    predicted = result.bundle.predict(val_df)
    assert (predicted >= 0).all() and np.isfinite(predicted).all()
    assert spearman(predicted, val_df["label"].to_numpy()) > 0.3
    assert result.bundle.meta["loss"] == loss


def test_text_alone_carries_signal(bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(use_features=False, loss="ziln"), bert)
    assert result.best_val_loss < 0.95 * result.initial_val_loss
    assert result.bundle.meta["feature_columns"] == [] and result.bundle.meta["use_features"] is False
    predicted = result.bundle.predict(val_df[["user_id", "text"]])  # no feature columns needed
    rich = val_df["text"].str.contains("premium|luxury|designer").to_numpy()
    poor = val_df["text"].str.contains("budget|cheap|discount").to_numpy()
    assert predicted[rich].mean() > 1.5 * predicted[poor].mean()


def test_same_seed_gives_same_predictions(bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    settings = config(epochs=2, seed=7, dropout=0.2)
    first = train_regressor(train_df, val_df, FEATURE_COLUMNS, settings, bert)
    second = train_regressor(train_df, val_df, FEATURE_COLUMNS, settings, bert)
    other = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(epochs=2, seed=8, dropout=0.2), bert)
    assert np.array_equal(first.bundle.predict(val_df), second.bundle.predict(val_df))
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]
    assert not np.array_equal(first.bundle.predict(val_df), other.bundle.predict(val_df))


def test_early_stopping_keeps_the_best_epoch(bert: Path, users: pd.DataFrame, val_df: pd.DataFrame) -> None:
    tiny_train = users.iloc[:40]  # overfits within a few epochs at this learning rate
    settings = config(epochs=20, head_epochs=1, batch_size=8, lr=3e-3, head_lr=1e-2, patience=2, dropout=0.0, calibrate=False)
    result = train_regressor(tiny_train, val_df, FEATURE_COLUMNS, settings, bert)
    assert result.stopped_early
    finetune = [h for h in result.history if h["stage"] == 2]
    assert result.stages["finetune"]["stopped_early"] and len(finetune) < settings.epochs
    best = result.history[result.best_epoch - 1]
    assert best["val_loss"] == min(h["val_loss"] for h in result.history)
    assert best["val_loss"] < result.history[-1]["val_loss"]
    predicted = result.bundle.predict(val_df)
    rmse = float(np.sqrt(np.mean((predicted - val_df["label"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(best["val_rmse"], rel=1e-4)  # the best weights were restored


def test_staged_schedule_head_first_then_layer_decayed_finetune(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    settings = config(epochs=2, head_epochs=4, layer_decay=0.5, lr=1e-3)
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, settings, bert)
    stages = [int(h["stage"]) for h in result.history]
    assert stages == sorted(stages) and stages.count(1) == result.stages["head"]["epochs_run"] and stages.count(2) == 2
    assert [h["epoch"] for h in result.history] == list(range(1, len(result.history) + 1))
    assert all(h["lr"] == 0.0 for h in result.history if h["stage"] == 1)  # stage 1: the head alone
    assert result.stages["kept"] in ("head", "finetune")
    kept = result.stages[result.stages["kept"]]["best_val_loss"]
    assert result.best_val_loss == kept == min(result.stages["head"]["best_val_loss"], result.stages["finetune"]["best_val_loss"])
    # the frozen-encoder model of stage 1 is returned apart, with the encoder as loaded
    assert result.frozen is not None
    original = load_file(str(bert / "model.safetensors"))
    frozen_encoder = result.frozen.regressor.encoder.state_dict()
    assert all(torch.equal(original[name], frozen_encoder[name]) for name in original)
    assert result.frozen.meta["train_config"]["freeze"] == "all-but-head"


def test_a_lost_finetune_restores_the_stage_one_model_exactly(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    """Stage 2 with absurd rates loses on validation: the kept model predicts exactly as the frozen one
    (so a retrain scores its held-out users once for both, ``pipeline.retrain.train_model``)."""
    settings = config(epochs=1, head_epochs=3, lr=5.0, finetune_head_lr=5.0, layer_decay=1.0)
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, settings, bert)
    assert result.stages["kept"] == "head" and result.frozen is not None
    assert np.array_equal(result.bundle.predict(val_df), result.frozen.predict(val_df))


def test_layer_decay_gives_lower_layers_smaller_rates(bert: Path) -> None:
    from spendpred.model.network import SpendHead, SpendRegressor, load_encoder
    from spendpred.model.training import _param_groups

    model = SpendRegressor(load_encoder(bert), SpendHead(32, 8, 3, 0.0), 0)
    settings = config(lr=1e-3, layer_decay=0.5, finetune_head_lr=1e-4)
    rates = {g["name"].removesuffix("-no-decay"): g["lr"] for g in _param_groups(model, settings, settings.finetune_head_lr)}
    assert rates["head"] == pytest.approx(1e-4)
    assert rates["encoder-2"] == pytest.approx(1e-3)  # top of the 2 layers
    assert rates["encoder-1"] == pytest.approx(5e-4)
    assert rates["encoder-0"] == pytest.approx(2.5e-4)  # embeddings


@pytest.mark.parametrize("loss", ["mse", "ziln"])
def test_predicted_spend_is_calibrated_to_the_validation_mean(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, loss: str
) -> None:
    raw = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(loss=loss, epochs=1, calibrate=False), bert)
    calibrated = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(loss=loss, epochs=1), bert)
    truth = val_df["label"].to_numpy()
    calibration = calibrated.bundle.meta["calibration"]
    assert calibration["method"] == "poisson-log1p" and calibration["b"] > 0
    predicted = calibrated.bundle.predict(val_df)
    assert predicted.mean() == pytest.approx(truth.mean(), rel=1e-4)  # currency: the mean spend is kept
    uncalibrated = raw.bundle.predict(val_df)
    # a monotone map: the ranking of the same weights is unchanged
    assert spearman(predicted, uncalibrated) == pytest.approx(1.0)
    if loss == "mse":  # log1p-scale losses predict far below the expected spend before calibration
        assert uncalibrated.mean() < 0.8 * truth.mean()


def test_calibrate_rows_fits_the_level_on_the_first_validation_rows_only(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    """Stacked windows: the latest window's validation users come first and set the spend level alone."""
    latest = val_df.iloc[:60].reset_index(drop=True)
    earlier = val_df.iloc[60:].assign(label=lambda f: f["label"] * 3.0)  # an earlier period that spent 3x as much
    stacked = pd.concat([latest, earlier], ignore_index=True)
    every = train_regressor(train_df, stacked, FEATURE_COLUMNS, config(loss="ziln", epochs=1), bert)
    first = train_regressor(train_df, stacked, FEATURE_COLUMNS, config(loss="ziln", epochs=1), bert, calibrate_rows=60)
    assert first.bundle.meta["calibration"]["users"] == 60 and every.bundle.meta["calibration"]["users"] == len(stacked)
    truth = latest["label"].to_numpy()
    assert first.bundle.predict(latest).mean() == pytest.approx(truth.mean(), rel=1e-4)
    assert every.bundle.predict(latest).mean() > 1.2 * truth.mean()  # pulled up by the earlier window
    assert first.best_val_loss == pytest.approx(every.best_val_loss)  # early stopping still sees every row
    for bad in (0, len(stacked) + 1, 2.5, True):
        with pytest.raises(ConfigError, match="calibrate_rows must be a whole number from 1 to the"):
            train_regressor(train_df, stacked, FEATURE_COLUMNS, config(epochs=1), bert, calibrate_rows=bad)


def test_fit_head_only_leaves_the_encoder_as_loaded(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    result = fit_head_only(train_df, val_df, FEATURE_COLUMNS, config(head_epochs=4, head_lr=1e-2), bert)
    original = load_file(str(bert / "model.safetensors"))
    trained = result.bundle.regressor.encoder.state_dict()
    assert all(torch.equal(original[name], trained[name]) for name in original)
    assert result.bundle.meta["train_config"]["freeze"] == "all-but-head"
    assert result.best_val_loss < result.initial_val_loss
    assert result.history[0]["lr"] == 0.0 and result.history[0]["head_lr"] > 0  # no encoder group
    assert result.frozen is None and result.stages["kept"] == "head" and "finetune" not in result.stages


def test_bottom_k_training_changes_only_the_unfrozen_layers(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(epochs=1, freeze="bottom-k:1", head_epochs=1), bert)
    if result.stages["kept"] != "finetune":
        pytest.skip("fine-tuning lost to the frozen encoder on this seed: the stage-1 model was kept")
    original = load_file(str(bert / "model.safetensors"))
    trained = result.bundle.regressor.encoder.state_dict()
    for name, tensor in original.items():
        frozen = name.startswith(("embeddings.", "encoder.layer.0."))
        if frozen or name.startswith("pooler."):  # the pooler is unused by mean pooling
            assert torch.equal(tensor, trained[name]), name
    changed = [n for n in original if n.startswith("encoder.layer.1.") and not torch.equal(original[n], trained[n])]
    assert changed


def test_logs_banner_and_one_line_per_epoch(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spendpred.model"):
        result = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(epochs=2, seed=3), bert)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("spendpred.model")]
    assert any("300 train users" in m and "100 validation users" in m for m in messages)
    assert any("loss=mse freeze=none head_epochs=3 epochs=2" in m and "seed=3" in m for m in messages)
    epoch_lines = [m for m in messages if m.startswith("stage ") and "train_loss=" in m]
    assert len(epoch_lines) == len(result.history) == result.stages["head"]["epochs_run"] + 2
    assert all("val_loss=" in m and "val_rmse=" in m and "time=" in m for m in epoch_lines)


def test_training_on_cpu_never_initialises_cuda(bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    train_regressor(train_df.iloc[:50], val_df.iloc[:20], FEATURE_COLUMNS, config(epochs=1), bert)
    assert not torch.cuda.is_initialized()


def test_saved_trained_model_round_trips(
    bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, tmp_path: Path
) -> None:
    result = train_regressor(train_df, val_df, FEATURE_COLUMNS, config(epochs=2, loss="huber"), bert, "v1")
    loaded = SpendModel.load(result.bundle.save(tmp_path / "bundle"), device="cpu")
    assert np.array_equal(loaded.predict(val_df), result.bundle.predict(val_df))
    assert loaded.meta["best_epoch"] == result.best_epoch and loaded.loss == "huber"


def test_bad_training_data_is_a_data_error(bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    bad = train_df.copy()
    bad.loc[5, "label"] = -3.0
    with pytest.raises(DataError, match=r"train data row 5 \(user_id='u00005'\): 'label'=-3.0"):
        train_regressor(bad, val_df, FEATURE_COLUMNS, config(), bert)
    with pytest.raises(DataError, match="validation data has no rows"):
        train_regressor(train_df, val_df.iloc[:0], FEATURE_COLUMNS, config(), bert)
    with pytest.raises(DataError, match=r"validation data lacks feature columns \['avg_basket'\]"):
        train_regressor(train_df, val_df.drop(columns="avg_basket"), FEATURE_COLUMNS, config(), bert)


def test_bad_settings_are_config_errors(bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"TrainConfig\.max_length=512 exceeds the encoder's 128 positions"):
        train_regressor(train_df, val_df, FEATURE_COLUMNS, config(max_length=512), bert)
    with pytest.raises(ConfigError, match="bottom-k:5"):
        train_regressor(train_df, val_df, FEATURE_COLUMNS, config(freeze="bottom-k:5"), bert)
    with pytest.raises(ConfigError, match="must be a TrainConfig"):
        train_regressor(train_df, val_df, FEATURE_COLUMNS, {"epochs": 1}, bert)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
def test_cuda_requested_without_cuda(bert: Path, train_df: pd.DataFrame, val_df: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="device='cuda'.*not available"):
        train_regressor(train_df, val_df, FEATURE_COLUMNS, config(device="cuda"), bert)


@pytest.mark.slow
def test_default_encoder_trains_head_and_predicts(users: pd.DataFrame) -> None:
    from spendpred.config import default_encoder_dir

    try:
        encoder_dir = default_encoder_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    settings = config(epochs=1, max_length=48, head_hidden=16)
    result = fit_head_only(users.iloc[:24], users.iloc[24:32], FEATURE_COLUMNS, settings, encoder_dir)
    assert result.bundle.regressor.hidden_size == 384
    predicted = result.bundle.predict(users.iloc[40:42])
    assert predicted.shape == (2,) and (predicted >= 0).all() and np.isfinite(predicted).all()
