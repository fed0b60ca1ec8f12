"""The regressor network: mean pooling, freezing strategies and optimizer parameter groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spendpred.errors import ConfigError, ModelError
from spendpred.model import TrainConfig
from spendpred.model.network import (
    SpendHead,
    SpendRegressor,
    apply_freeze,
    count_parameters,
    load_encoder,
    load_tokenizer,
    mean_pool,
)
from spendpred.model.training import _param_groups
from tests.tiny_bert import make_tiny_bert


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), num_layers=3)


def build(bert_dir: Path, n_features: int = 2) -> SpendRegressor:
    encoder = load_encoder(bert_dir)
    head = SpendHead(encoder.config.hidden_size + n_features, 8, 3, dropout=0.1)
    return SpendRegressor(encoder, head, n_features)


def frozen_names(model: SpendRegressor) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


def test_freeze_none_trains_everything(bert_dir: Path) -> None:
    model = build(bert_dir)
    apply_freeze(model, "none")
    assert frozen_names(model) == set()


def test_freeze_embeddings_freezes_exactly_the_embeddings(bert_dir: Path) -> None:
    model = build(bert_dir)
    apply_freeze(model, "embeddings")
    frozen = frozen_names(model)
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("encoder.embeddings.")}
    assert "encoder.embeddings.word_embeddings.weight" in frozen


def test_freeze_bottom_k_freezes_embeddings_and_first_layers(bert_dir: Path) -> None:
    model = build(bert_dir)
    apply_freeze(model, "bottom-k:2")
    frozen = frozen_names(model)
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.", "encoder.encoder.layer.1."))
    }
    assert frozen == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.encoder.layer.2.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable)


def test_freeze_all_but_head_leaves_only_the_head(bert_dir: Path) -> None:
    model = build(bert_dir)
    apply_freeze(model, "all-but-head")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert count_parameters(model)[0] == sum(p.numel() for p in model.head.parameters())


def test_freeze_is_reset_when_applied_again(bert_dir: Path) -> None:
    model = build(bert_dir)
    apply_freeze(model, "all-but-head")
    apply_freeze(model, "none")
    assert frozen_names(model) == set()


def test_bottom_k_beyond_the_layer_count_is_a_config_error(bert_dir: Path) -> None:
    model = build(bert_dir)
    with pytest.raises(ConfigError, match=r"bottom-k:4.*\(3\)"):
        apply_freeze(model, "bottom-k:4")


def test_param_groups_skip_decay_on_bias_and_layernorm_and_use_head_lr(bert_dir: Path) -> None:
    model = build(bert_dir)
    apply_freeze(model, "embeddings")
    config = TrainConfig(lr=1e-5, head_lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    groups = {g["name"]: g for g in _param_groups(model, config, config.head_lr)}
    # embeddings frozen: encoder groups by depth 1..3 (the 3 layers), each with and without decay
    assert set(groups) == {f"encoder-{d}{s}" for d in (1, 2, 3) for s in ("", "-no-decay")} | {"head", "head-no-decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["encoder-1-no-decay"]["params"]}
    assert "encoder.encoder.layer.0.attention.output.LayerNorm.weight" in no_decay
    assert "encoder.encoder.layer.0.attention.self.query.bias" in no_decay
    assert all(p.ndim >= 2 for p in groups["encoder-1"]["params"])
    assert groups["encoder-1"]["weight_decay"] == 0.05 and groups["encoder-1-no-decay"]["weight_decay"] == 0.0
    assert groups["head"]["lr"] == 1e-3 and groups["encoder-3"]["lr"] == 1e-5  # the top layer gets lr
    assert groups["encoder-1"]["lr"] == pytest.approx(1e-5 * 0.25)  # two layers below: lr x 0.5^2
    grouped = {id(p) for g in groups.values() for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_forward_shapes_with_and_without_features(bert_dir: Path) -> None:
    tokenizer = load_tokenizer(bert_dir)
    batch = tokenizer(["premium luxury", "budget"], padding=True, return_tensors="pt")
    model = build(bert_dir, n_features=2).eval()
    out = model(batch["input_ids"], batch["attention_mask"], torch.zeros((2, 2)))
    assert out.shape == (2, 3) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="numeric features"):
        model(batch["input_ids"], batch["attention_mask"], None)


def test_missing_encoder_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        load_encoder(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(tmp_path / "nowhere")
