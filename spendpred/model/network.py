"""The spend regressor network: a Hugging Face encoder, mean pooling and a small MLP head.

``SpendRegressor`` wraps any ``AutoModel`` encoder (BERT family). The text representation
is the mean of the last hidden states over the attention mask; when numeric features are
used they are concatenated to it; the head is ``Dropout -> Linear -> GELU -> Dropout ->
Linear`` with 1 output (``mse``/``huber``) or 3 (``ziln``).

Freezing strategies (``apply_freeze``): ``none`` trains everything; ``embeddings`` freezes
the embedding block; ``bottom-k:N`` freezes the embeddings and the first N transformer
layers (N = 0..99); ``all-but-head`` freezes the whole encoder. The rule and its parser
(``Freeze``, ``parse_freeze``, ``FreezeSpec``) are the parameter spec's (``spendpred.params``),
imported here so the run parameter, the settings and ``TrainConfig`` accept the same strings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from spendpred.errors import ConfigError, ModelError
from spendpred.params import FREEZE_CHOICES, Freeze, FreezeSpec, parse_freeze  # noqa: F401 - the one rule (the spec's)

logger = logging.getLogger(__name__)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Return the float32 mean of ``hidden`` (n, t, d) over the positions where ``attention_mask`` is 1 (n, d).

    The sum runs in float32 even when the encoder ran under bf16 autocast.
    """
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp_min(1.0)
    return summed / counts


class SpendHead(nn.Module):
    """MLP head: ``Dropout -> Linear(in, hidden) -> GELU -> Dropout -> Linear(hidden, out)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    @property
    def output_layer(self) -> nn.Linear:
        """The last linear layer (its bias is initialised from the labels)."""
        layer = self.net[-1]
        assert isinstance(layer, nn.Linear)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the raw head output (n, out_dim)."""
        return self.net(x)


class SpendRegressor(nn.Module):
    """Encoder + mean pooling (+ normalised numeric features) + ``SpendHead``."""

    def __init__(self, encoder: nn.Module, head: SpendHead, n_features: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.n_features = n_features

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's hidden states."""
        return int(self.encoder.config.hidden_size)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return the mean-pooled last hidden state (n, hidden) in float32."""
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(outputs.last_hidden_state, attention_mask)

    def head_forward(self, pooled: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Return the raw head output (n, out_dim) in float32 from pooled text (and features)."""
        if self.n_features:
            if features is None:
                raise ValueError("this model uses numeric features: pass them")
            pooled = torch.cat([pooled, features.to(pooled.dtype)], dim=1)
        return self.head(pooled).float()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the raw head output (n, out_dim) for a padded batch."""
        return self.head_forward(self.pool(input_ids, attention_mask), features)


def check_encoder(encoder_dir: str | Path, freeze: Freeze | FreezeSpec | None = None) -> None:
    """Check, loading nothing, that ``encoder_dir`` is a checkpoint training can load and that
    ``freeze`` (a ``bottom-k:N``) fits its layers: what training would find out only after the extract.

    Raises ``ModelError`` naming the folder and what it lacks (``config.json``, weights, a
    tokenizer) and ``ConfigError`` for a freezing strategy the encoder cannot take.
    """
    import json

    path = Path(encoder_dir)
    fix = "point SPENDPRED_ENCODER_DIR at a Hugging Face checkpoint folder saved with save_pretrained"
    if not path.is_dir():
        raise ModelError(f"encoder folder {path} does not exist: {fix}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"encoder folder {path} has no config.json: {fix}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"encoder folder {path}: config.json cannot be read ({type(exc).__name__}): {fix}") from None
    if not any((path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        raise ModelError(f"encoder folder {path} has no weights (model.safetensors or pytorch_model.bin): {fix}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ModelError(f"encoder folder {path} has no tokenizer (tokenizer.json or vocab.txt): {fix}")
    if freeze is None:
        return
    parsed = parse_freeze(freeze) if isinstance(freeze, str) else freeze
    layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    if parsed.kind == "bottom-k" and isinstance(layers, int) and parsed.layers > layers:
        raise ConfigError(
            f"freeze=bottom-k:{parsed.layers} asks for more layers than the encoder has ({layers}, in {path}); "
            f"use N <= {layers} or freeze=all-but-head"
        )


def load_encoder(encoder_dir: str | Path) -> nn.Module:
    """Return the ``AutoModel`` in ``encoder_dir`` (float32, local files only).

    Raises ``ModelError`` naming the folder when it is missing or not a loadable checkpoint.
    """
    from transformers import AutoModel

    from spendpred.logs import quiet_libraries

    quiet_libraries()  # no "Loading weights" bar on stderr (an ERROR line in an Airflow task log)
    path = Path(encoder_dir)
    if not (path / "config.json").is_file():
        raise ModelError(
            f"encoder folder {path} has no config.json: point SPENDPRED_ENCODER_DIR (or encoder_dir) "
            "at a Hugging Face checkpoint directory saved with save_pretrained"
        )
    try:
        return AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types (OSError, ValueError, SafetensorError...)
        raise ModelError(
            f"cannot load the encoder from {path}: {exc}; the checkpoint is missing or corrupt "
            "(retrain the model, pick another version, or reinstall the encoder package)"
        ) from exc


def load_tokenizer(encoder_dir: str | Path):  # noqa: ANN201 - a transformers tokenizer
    """Return the fast tokenizer saved in ``encoder_dir``.

    Raises ``ModelError`` naming the folder when it is missing, corrupt or not a fast tokenizer.
    """
    from transformers import AutoTokenizer

    path = Path(encoder_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    except Exception as exc:
        raise ModelError(
            f"cannot load the tokenizer from {path}: {exc}; the folder needs vocab.txt or tokenizer.json "
            "(retrain the model or pick another version)"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"the tokenizer in {path} is not a fast tokenizer; save one with tokenizer.json")
    return tokenizer


def embedding_module(encoder: nn.Module) -> nn.Module:
    """Return the encoder's embedding block (``.embeddings`` or the input embeddings)."""
    embeddings = getattr(encoder, "embeddings", None)
    if isinstance(embeddings, nn.Module):
        return embeddings
    return encoder.get_input_embeddings()


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """Return the encoder's list of transformer layers, bottom first.

    Raises ``ConfigError`` when the architecture's layer list cannot be found (bottom-k
    freezing then does not apply).
    """
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module: object = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ConfigError(
        f"freeze=bottom-k:N is not supported for {type(encoder).__name__}: its layer list was not found; "
        "use freeze=none, embeddings or all-but-head"
    )


def apply_freeze(model: SpendRegressor, spec: Freeze | FreezeSpec) -> FreezeSpec:
    """Set ``requires_grad`` on ``model``'s parameters for strategy ``spec``; return the parsed spec.

    The head always trains. Raises ``ConfigError`` for a bad spec or when bottom-k asks for
    more layers than the encoder has.
    """
    parsed = parse_freeze(spec) if isinstance(spec, str) else spec
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    encoder = model.encoder
    if parsed.kind == "all-but-head":
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
    elif parsed.kind in ("embeddings", "bottom-k"):
        for parameter in embedding_module(encoder).parameters():
            parameter.requires_grad_(False)
        if parsed.kind == "bottom-k":
            layers = transformer_layers(encoder)
            if parsed.layers > len(layers):
                raise ConfigError(
                    f"freeze=bottom-k:{parsed.layers} asks for more layers than the encoder has ({len(layers)}); "
                    f"use N <= {len(layers)} or freeze=all-but-head"
                )
            for layer in layers[: parsed.layers]:
                for parameter in layer.parameters():
                    parameter.requires_grad_(False)
    trainable, total = count_parameters(model)
    logger.debug("freeze=%s: %d of %d parameters trainable", spec, trainable, total)
    return parsed


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, total)`` parameter counts of ``model``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
