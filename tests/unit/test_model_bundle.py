"""SpendModel bundles: save then load predicts identically; missing or corrupt files say what to do."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spendpred.errors import ConfigError, DataError, ModelError
from spendpred.model import SpendModel, TrainConfig, train_regressor
from spendpred.model.hybrid import DERIVED_COLUMNS
from tests.tiny_bert import FEATURE_COLUMNS, make_synthetic_users, make_tiny_bert


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def users() -> pd.DataFrame:
    return make_synthetic_users(160, seed=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, users: pd.DataFrame) -> SpendModel:
    bert = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, loss="ziln", max_length=32, device="cpu", progress=False)
    return train_regressor(users.iloc[:120], users.iloc[120:], FEATURE_COLUMNS, config, bert, "v1").bundle


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, model: SpendModel) -> Path:
    return model.save(tmp_path_factory.mktemp("bundles") / "model")


@pytest.fixture
def bundle_copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def test_bundle_layout_and_meta(saved: Path) -> None:
    assert (saved / "head.safetensors").is_file()
    assert (saved / "encoder" / "config.json").is_file()
    assert (saved / "encoder" / "model.safetensors").is_file()
    assert not list(saved.rglob("*.bin")) and not list(saved.rglob("*.pkl"))
    meta = json.loads((saved / "bundle.json").read_text())
    assert meta["loss"] == "ziln" and meta["pooling"] == "mean" and meta["format_version"] == 1
    assert meta["feature_columns"] == FEATURE_COLUMNS and meta["use_features"] is True
    # the head also sees the hybrid features derived from the inputs, fitted on the training users
    assert meta["hybrid"]["horizon_days"] == 90 and set(meta["hybrid"]) >= {"bgnbd", "gamma_gamma"}
    assert len(meta["normaliser"]["mean"]) == len(FEATURE_COLUMNS) + len(DERIVED_COLUMNS) == len(meta["normaliser"]["std"])
    assert meta["text_template_version"] == "v1" and meta["max_length"] == 32
    assert "head.safetensors" in meta["files"] and "encoder/model.safetensors" in meta["files"]


def test_save_then_load_predicts_identically(model: SpendModel, saved: Path, users: pd.DataFrame) -> None:
    loaded = SpendModel.load(saved, device="cpu")
    before = model.predict(users)
    after = loaded.predict(users)
    assert np.array_equal(before, after)
    assert after.dtype == np.float64 and (after >= 0).all() and np.isfinite(after).all()
    assert loaded.meta["files"] == json.loads((saved / "bundle.json").read_text())["files"]


def test_predict_keeps_input_order_whatever_the_batching(model: SpendModel, users: pd.DataFrame) -> None:
    expected = model.predict(users)
    shuffled = users.sample(frac=1.0, random_state=0)
    got = model.predict(shuffled, batch_size=7, chunk_size=50)
    assert np.allclose(got, expected[shuffled.index.to_numpy()], rtol=1e-5, atol=1e-6)
    assert model.predict(users.iloc[:0]).shape == (0,)


def test_predict_input_errors(model: SpendModel, users: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="no 'text' column"):
        model.predict(users.drop(columns="text"))
    with pytest.raises(DataError, match=r"lacks feature columns \['monetary_90d'\]"):
        model.predict(users.drop(columns="monetary_90d"))
    with pytest.raises(DataError, match="feature 'recency_days'"):
        model.predict(users.assign(recency_days=np.nan))
    with pytest.raises(ConfigError, match="batch_size=0"):
        model.predict(users, batch_size=0)


def test_save_refuses_a_non_empty_folder(model: SpendModel, saved: Path) -> None:
    with pytest.raises(ModelError, match="not empty"):
        model.save(saved)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist.*retrain"):
        SpendModel.load(tmp_path / "nope")


@pytest.mark.parametrize(
    "relative", ["bundle.json", "head.safetensors", "encoder/model.safetensors", "encoder/config.json"]
)
def test_missing_file_names_the_file(bundle_copy: Path, relative: str) -> None:
    (bundle_copy / relative).unlink()
    with pytest.raises(ModelError, match=rf"{relative.split('/')[-1]} is missing.*retrain the model or pick another"):
        SpendModel.load(bundle_copy, device="cpu")


@pytest.mark.parametrize("relative", ["head.safetensors", "encoder/model.safetensors", "encoder/tokenizer.json"])
def test_corrupt_file_names_the_file(bundle_copy: Path, relative: str) -> None:
    path = bundle_copy / relative
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"{relative.split('/')[-1]} is corrupt.*retrain"):
        SpendModel.load(bundle_copy, device="cpu")


def test_truncated_head_without_checksum_is_still_caught(bundle_copy: Path) -> None:
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    head = bundle_copy / "head.safetensors"
    head.write_bytes(head.read_bytes()[:40])
    meta["files"]["head.safetensors"] = hashlib.sha256(head.read_bytes()).hexdigest()
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="head.safetensors is corrupt"):
        SpendModel.load(bundle_copy, device="cpu")


def test_corrupt_bundle_json(bundle_copy: Path) -> None:
    (bundle_copy / "bundle.json").write_text("{not json")
    with pytest.raises(ModelError, match="bundle.json is corrupt.*retrain"):
        SpendModel.load(bundle_copy, device="cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format_version 2"),
        ({"loss": "mae"}, "unknown loss 'mae'"),
        ({"pooling": "cls"}, "unknown pooling"),
        ({"head": {"in_dim": 3, "hidden_dim": 128, "out_dim": 3}}, "head.safetensors is corrupt or does not match"),
    ],
)
def test_inconsistent_bundle_json(bundle_copy: Path, change: dict, message: str) -> None:
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    meta.update(change)
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        SpendModel.load(bundle_copy, device="cpu")


def test_missing_key_in_bundle_json(bundle_copy: Path) -> None:
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    del meta["normaliser"]
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"lacks \['normaliser'\]"):
        SpendModel.load(bundle_copy, device="cpu")


def test_unknown_device_is_a_config_error(saved: Path) -> None:
    with pytest.raises(ConfigError, match="device='tpu'"):
        SpendModel.load(saved, device="tpu")
