"""TrainConfig checks every value and names the field in its error."""

from __future__ import annotations

import dataclasses

import pytest

from spendpred.errors import ConfigError
from spendpred.model import TrainConfig
from spendpred.model.network import FreezeSpec, parse_freeze


def test_defaults_are_valid_and_serialisable() -> None:
    config = TrainConfig()
    assert config.freeze_spec == FreezeSpec("none")
    data = config.to_dict()
    assert data["loss"] == "ziln" and data["epochs"] == 3 and data["head_epochs"] == 30
    assert data["calibrate"] is True and 0 < data["layer_decay"] <= 1
    assert "_freeze_spec" not in data
    assert TrainConfig(**data) == config


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("none", FreezeSpec("none")),
        ("embeddings", FreezeSpec("embeddings")),
        ("bottom-k:0", FreezeSpec("bottom-k", 0)),
        ("bottom-k:4", FreezeSpec("bottom-k", 4)),
        ("all-but-head", FreezeSpec("all-but-head")),
    ],
)
def test_freeze_specs_parse(spec: str, expected: FreezeSpec) -> None:
    assert parse_freeze(spec) == expected
    assert TrainConfig(freeze=spec).freeze_spec == expected


def test_replace_reparses_freeze() -> None:
    config = dataclasses.replace(TrainConfig(), freeze="bottom-k:2")
    assert config.freeze_spec == FreezeSpec("bottom-k", 2)
    assert config.freeze_spec.encoder_frozen is False
    assert TrainConfig(freeze="all-but-head").freeze_spec.encoder_frozen is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", -1),
        ("epochs", 1.5),
        ("epochs", True),
        ("batch_size", 0),
        ("eval_batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("head_lr", -1e-3),
        ("weight_decay", -0.1),
        ("warmup_ratio", 1.0),
        ("max_grad_norm", 0.0),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("patience", 0),
        ("max_length", 4),
        ("seed", -1),
        ("head_hidden", 0),
        ("huber_delta", 0.0),
        ("use_features", "yes"),
        ("progress", 1),
        ("loss", "mae"),
        ("loss", None),
        ("freeze", "bottom-k:"),
        ("freeze", "bottom-k:-1"),
        ("freeze", "top-k:2"),
        ("freeze", ""),
        ("device", "tpu"),
        ("head_epochs", 0),
        ("layer_decay", 0.0),
        ("layer_decay", 1.5),
        ("finetune_head_lr", 0.0),
        ("calibrate", "no"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}="):
        TrainConfig(**{field: value})
