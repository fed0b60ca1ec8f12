"""Batch-scoring speed-ups keep the scores: dynamic padding, batching, chunking, bf16, int8, threads."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spendpred.errors import ConfigError
from spendpred.metrics import spearman
from spendpred.model import SpendModel, TrainConfig, train_regressor
from spendpred.model.data import tokenize_texts
from spendpred.model.losses import apply_calibration, predict_spend
from spendpred.model.scoring import (
    available_cores,
    cpu_has_native_bf16,
    cpu_threads,
    default_batch_size,
    resolve_precision,
)
from tests.tiny_bert import FEATURE_COLUMNS, make_synthetic_users, make_tiny_bert

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def users() -> pd.DataFrame:
    frame = make_synthetic_users(260, seed=11)
    # vary the text lengths a lot, so batches really are padded differently
    rng = np.random.default_rng(0)
    extra = [" ".join(["views clicks premium"] * int(k)) for k in rng.integers(0, 12, size=len(frame))]
    frame["text"] = frame["text"] + " " + pd.Series(extra)
    return frame


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, users: pd.DataFrame) -> SpendModel:
    bert = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, loss="mse", max_length=64, device="cpu", progress=False)
    return train_regressor(users.iloc[:100], users.iloc[100:130], FEATURE_COLUMNS, config, bert, "v1").bundle


@pytest.fixture(scope="module")
def scored(users: pd.DataFrame) -> pd.DataFrame:
    return users.iloc[130:].reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(model: SpendModel, scored: pd.DataFrame) -> np.ndarray:
    """fp32, one user per batch and per chunk: no padding, no batching at all."""
    return model.predict(scored, batch_size=1, chunk_size=1, precision="fp32")


@pytest.mark.parametrize(("batch_size", "chunk_size"), [(3, 7), (16, 50), (64, 1000), (256, 16384)])
def test_fp32_scores_do_not_depend_on_batch_or_chunk_size(
    model: SpendModel, scored: pd.DataFrame, reference: np.ndarray, batch_size: int, chunk_size: int
) -> None:
    got = model.predict(scored, batch_size=batch_size, chunk_size=chunk_size, precision="fp32")
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-7)


def test_scores_come_back_in_input_order_whatever_the_order_and_index(
    model: SpendModel, scored: pd.DataFrame, reference: np.ndarray
) -> None:
    order = np.random.default_rng(1).permutation(len(scored))
    shuffled = scored.iloc[order]
    shuffled.index = np.arange(len(shuffled))[::-1] * 10  # unrelated index labels: results are positional
    got = model.predict(shuffled, batch_size=8, chunk_size=40, precision="fp32")
    np.testing.assert_allclose(got, reference[order], rtol=1e-5, atol=1e-7)
    assert got.dtype == np.float64 and (got >= 0).all()


def test_dynamic_padding_gives_the_article_scores(
    model: SpendModel, scored: pd.DataFrame, reference: np.ndarray
) -> None:
    """The article's way (each user padded to max_length, batches of 16, no_grad) gives the same spend."""
    features = model.head_features(scored)
    outputs = []
    with torch.no_grad():
        for start in range(0, len(scored), 16):
            texts = scored["text"].iloc[start : start + 16].tolist()
            encoded = [
                model.tokenizer(
                    t, return_tensors="pt", max_length=model.max_length, padding="max_length", truncation=True
                )
                for t in texts
            ]
            ids = torch.cat([e["input_ids"] for e in encoded])
            mask = torch.cat([e["attention_mask"] for e in encoded])
            assert ids.shape[1] == model.max_length
            raw = model.regressor(ids, mask, torch.from_numpy(features[start : start + 16]))
            outputs.append(predict_spend(model.loss, raw))
    article = apply_calibration(torch.cat(outputs).double().numpy(), model.meta.get("calibration"))
    np.testing.assert_allclose(article, reference, rtol=1e-5, atol=1e-7)


def test_bf16_keeps_the_ranking(model: SpendModel, scored: pd.DataFrame, reference: np.ndarray) -> None:
    got = model.predict(scored, precision="bf16")
    assert spearman(reference, got) >= 0.999
    np.testing.assert_allclose(got, reference, rtol=2e-2)


def test_int8_keeps_the_ranking_and_leaves_the_fp32_model_alone(
    model: SpendModel, scored: pd.DataFrame, reference: np.ndarray
) -> None:
    got = model.predict(scored, precision="int8")
    assert spearman(reference, got) >= 0.99
    assert got.shape == reference.shape and (got >= 0).all() and np.isfinite(got).all()
    quantized = model._encoder_for("int8")
    assert model._encoder_for("int8") is quantized  # built once, then cached
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules())
    assert any(isinstance(m, torch.nn.Linear) for m in model.regressor.encoder.modules())  # original untouched
    np.testing.assert_allclose(model.predict(scored, precision="fp32"), reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "int8"])
def test_empty_frame_gives_empty_scores(model: SpendModel, scored: pd.DataFrame, precision: str) -> None:
    got = model.predict(scored.iloc[:0], precision=precision)
    assert got.shape == (0,) and got.dtype == np.float64


def test_auto_precision_is_bf16_only_where_it_is_native() -> None:
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("int8", CPU) == "int8"
    assert default_batch_size(CPU) == 32 and default_batch_size(torch.device("cuda")) == 256


def test_bad_precision_threads_and_sizes_are_config_errors(model: SpendModel, scored: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="precision='fp16'.*auto, fp32, bf16, int8"):
        model.predict(scored, precision="fp16")
    with pytest.raises(ConfigError, match="int8.*CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ConfigError, match="num_threads=0"):
        model.predict(scored, num_threads=0)
    with pytest.raises(ConfigError, match="batch_size=0"):
        model.predict(scored, batch_size=0)


def test_threads_are_set_for_the_call_then_restored(model: SpendModel, scored: pd.DataFrame) -> None:
    assert torch.get_num_threads() == 1
    with cpu_threads(2) as used:
        assert used == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with cpu_threads(None) as used:  # keeps torch's setting when it fits the cores available
        assert used == 1 == torch.get_num_threads()
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
    model.predict(scored.iloc[:5], num_threads=2)
    assert torch.get_num_threads() == 1


def test_padded_batches_match_the_tokenizer_padding(model: SpendModel, scored: pd.DataFrame) -> None:
    texts = scored["text"].tolist()[:20]
    tokens = tokenize_texts(model.tokenizer, texts, model.max_length)
    index = np.array([5, 0, 19, 7, 3])
    input_ids, mask = tokens.batch(index)
    expected = model.tokenizer(
        [texts[i] for i in index], padding="longest", truncation=True, max_length=model.max_length, return_tensors="pt"
    )
    assert torch.equal(input_ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
    assert input_ids.dtype == torch.int64 and mask.dtype == torch.int64
    one_by_one = [model.tokenizer(t, truncation=True, max_length=model.max_length)["input_ids"] for t in texts]
    assert tokens.lengths.tolist() == [len(ids) for ids in one_by_one]


def test_throughput_benchmark_runs_end_to_end_on_a_tiny_encoder(tmp_path: Path) -> None:
    """bench/score_throughput.py (run in-process on the tiny encoder) times every scorer and agrees with them."""
    spec = importlib.util.spec_from_file_location("score_throughput", REPO / "bench" / "score_throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    encoder = make_tiny_bert(tmp_path / "tiny-bert")
    out = tmp_path / "score.json"
    argv = ["--users", "48", "--train-users", "30", "--val-users", "10", "--epochs", "1", "--slices", "2",
            "--days", "120", "--horizon", "30", "--encoder-dir", str(encoder), "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["users"] == 48 and report["tokens"]["max"] <= 128
    assert {"article", "ours-fp32", "ours-int8"} <= set(report["results"])
    assert all(row["users_per_s"] > 0 for row in report["results"].values())
    assert report["agreement"]["ours-fp32 vs article"]["spearman"] > 0.999
    assert report["agreement"]["ours-int8 vs ours-fp32"]["spearman"] >= 0.99
    assert torch.get_num_threads() == 1  # the benchmark leaves torch's threads as it found them
