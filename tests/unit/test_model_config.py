"""TrainConfig checks every value and names the field in its error."""

from __future__ import annotations

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
    config = TrainConfig().replace(freeze="bottom-k:2")
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


@pytest.mark.parametrize(
    ("freeze", "layers"), [("bottom-k:0", 0), ("bottom-k:7", 7), ("bottom-k:07", 7), ("bottom-k:99", 99), ("bottom-k:100", None)]
)
def test_one_freeze_rule_for_the_spec_the_config_and_the_parser(freeze: str, layers: int | None) -> None:
    """N of bottom-k:N is 0..99 for the run parameter, TrainConfig and parse_freeze alike (one Freeze type)."""
    from spendpred.params import check_train

    if layers is None:
        for build in (lambda: check_train(freeze=freeze), lambda: TrainConfig(freeze=freeze), lambda: parse_freeze(freeze)):
            with pytest.raises(ConfigError, match=r"bottom-k:100.*N = 0\.\.99"):
                build()
        return
    assert check_train(freeze=freeze).freeze == freeze
    assert TrainConfig(freeze=freeze).freeze_spec == parse_freeze(freeze) == FreezeSpec("bottom-k", layers)


@pytest.mark.parametrize("device", ["cuda:0", "cuda:1", "gpu", "CPU"])
def test_one_device_rule_for_the_spec_the_config_and_model_loading(device: str) -> None:
    """auto, cpu or cuda everywhere: cuda:N is refused alike (a GPU is chosen with CUDA_VISIBLE_DEVICES)."""
    from spendpred.model.bundle import resolve_device
    from spendpred.params import DEVICES, check_train

    with pytest.raises(ConfigError, match=rf"device='{device}' is not valid"):
        check_train(device=device)
    with pytest.raises(ConfigError, match=rf"TrainConfig\.device='{device}' is invalid: use one of auto, cpu, cuda"):
        TrainConfig(device=device)
    with pytest.raises(ConfigError, match=rf"device='{device}' is not supported: use one of auto, cpu, cuda"):
        resolve_device(device)  # type: ignore[arg-type]
    assert [TrainConfig(device=d).device for d in DEVICES] == list(DEVICES)


def test_the_config_is_pydantic_with_the_spec_types_and_a_checked_replace() -> None:
    from spendpred.model.losses import LOSS_FUNCTIONS

    config = TrainConfig(loss="huber", lr=1)  # a whole number is a valid float
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.loss_function is LOSS_FUNCTIONS["huber"]
    with pytest.raises(ConfigError, match=r"TrainConfig\.epochs=0 is invalid"):
        config.replace(epochs=0)
    with pytest.raises(ConfigError, match=r"TrainConfig\.epoch=5 is invalid: not a TrainConfig field"):
        TrainConfig(epoch=5)
    with pytest.raises(Exception, match="frozen"):
        config.loss = "mse"  # type: ignore[misc]
    assert TrainConfig.model_fields["freeze"].description.startswith("none | embeddings")
