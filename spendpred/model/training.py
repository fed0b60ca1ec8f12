"""Fine-tune the spend regressor: AdamW, warm-up and decay, clipping, early stopping, freezing.

``train_regressor`` is the one training entry point. It tokenises each dataset once, pads
each batch to its own longest text, runs on CUDA with bf16 autocast when ``device`` allows
(CUDA is touched only inside the call), keeps the weights of the epoch with the lowest
validation loss and returns them as a ``SpendModel``. With ``freeze="all-but-head"`` the
encoder never changes, so the pooled text vectors are computed once and only the head
trains (``fit_head_only``: the "before fine-tuning" baseline).

Reproducibility: the seed drives ``torch.manual_seed`` (head initialisation, dropout) and
a numpy ``Generator`` (batch order), so the same inputs and seed give the same predictions
on CPU.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import spendpred
from spendpred.errors import ConfigError, DataError
from spendpred.model.bundle import SpendModel, autocast_context, resolve_device
from spendpred.model.data import TokenizedTexts, length_sorted_batches, shuffled_batches, tokenize_texts
from spendpred.model.features import FeatureNormaliser, check_labels, check_texts
from spendpred.model.losses import check_loss_name, compute_loss, initial_bias, output_dim, predict_spend
from spendpred.model.network import (
    FreezeSpec,
    SpendHead,
    SpendRegressor,
    apply_freeze,
    count_parameters,
    load_encoder,
    load_tokenizer,
    parse_freeze,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; every value is checked on construction (``ConfigError`` names the field)."""

    epochs: int = field(default=3, metadata={"help": "Maximum passes over the training users (>= 1)."})
    batch_size: int = field(default=32, metadata={"help": "Users per training step."})
    lr: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate of the encoder."})
    head_lr: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate of the head."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (never on biases or LayerNorm)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps warming up linearly; then linear decay to 0."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping threshold (global L2 norm)."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout of the head, before each of its linear layers."})
    patience: int = field(default=2, metadata={"help": "Epochs without a lower validation loss before stopping."})
    freeze: str = field(default="none", metadata={"help": "none | embeddings | bottom-k:N | all-but-head."})
    loss: str = field(default="mse", metadata={"help": "mse (on log1p spend) | huber (on log1p spend) | ziln."})
    use_features: bool = field(default=True, metadata={"help": "Join the normalised numeric features to the pooled text."})
    max_length: int = field(default=128, metadata={"help": "Token limit; longer texts are truncated."})
    seed: int = field(default=42, metadata={"help": "Seed of head initialisation, dropout and batch order."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present) | cpu | cuda."})
    head_hidden: int = field(default=128, metadata={"help": "Width of the head's hidden layer."})
    huber_delta: float = field(default=1.0, metadata={"help": "Huber threshold, in log1p-spend units."})
    eval_batch_size: int = field(default=256, metadata={"help": "Users per batch when evaluating or pooling."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm bar per epoch (only on a terminal)."})
    _freeze_spec: FreezeSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def need(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid: {rule}")

        def is_int(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

        need("epochs", is_int("epochs") and self.epochs >= 1, "must be an integer >= 1")
        need("batch_size", is_int("batch_size") and self.batch_size >= 1, "must be an integer >= 1")
        need("eval_batch_size", is_int("eval_batch_size") and self.eval_batch_size >= 1, "must be an integer >= 1")
        need("lr", is_number("lr") and self.lr > 0, "must be a number > 0 (e.g. 2e-5)")
        need("head_lr", is_number("head_lr") and self.head_lr > 0, "must be a number > 0 (e.g. 1e-3)")
        need("weight_decay", is_number("weight_decay") and self.weight_decay >= 0, "must be a number >= 0")
        need("warmup_ratio", is_number("warmup_ratio") and 0 <= self.warmup_ratio < 1, "must be in [0, 1)")
        need("max_grad_norm", is_number("max_grad_norm") and self.max_grad_norm > 0, "must be a number > 0")
        need("dropout", is_number("dropout") and 0 <= self.dropout < 1, "must be in [0, 1)")
        need("patience", is_int("patience") and self.patience >= 1, "must be an integer >= 1")
        need("max_length", is_int("max_length") and 8 <= self.max_length <= 8192, "must be an integer in [8, 8192]")
        need("seed", is_int("seed") and self.seed >= 0, "must be an integer >= 0")
        need("head_hidden", is_int("head_hidden") and self.head_hidden >= 1, "must be an integer >= 1")
        need("huber_delta", is_number("huber_delta") and self.huber_delta > 0, "must be a number > 0")
        need("use_features", isinstance(self.use_features, bool), "must be true or false")
        need("progress", isinstance(self.progress, bool), "must be true or false")
        need("loss", isinstance(self.loss, str), "must be one of mse, huber, ziln")
        try:
            check_loss_name(self.loss)
        except ConfigError as exc:
            raise ConfigError(f"TrainConfig.{exc}") from None
        try:
            spec = parse_freeze(self.freeze)
        except ConfigError as exc:
            raise ConfigError(f"TrainConfig.{exc}") from None
        need(
            "device",
            isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")),
            "use 'auto', 'cpu' or 'cuda'",
        )
        object.__setattr__(self, "_freeze_spec", spec)

    @property
    def freeze_spec(self) -> FreezeSpec:
        """The parsed ``freeze`` strategy."""
        return self._freeze_spec

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (for bundle.json and MLflow params)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


@dataclass
class TrainResult:
    """What ``train_regressor`` returns.

    ``bundle``: the model with the best validation weights; ``history``: one dict per epoch
    (epoch, train_loss, val_loss, val_rmse, lr, head_lr, seconds); ``best_epoch``: the epoch
    whose weights were kept; ``initial_val_loss``: validation loss before any training step.
    """

    bundle: SpendModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    initial_val_loss: float
    stopped_early: bool
    config: TrainConfig


def _check_frame(df: pd.DataFrame, what: str) -> tuple[list[str], np.ndarray]:
    """Return texts and labels of a training frame; raises ``DataError`` when unusable."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError(f"{what} has no rows: training needs users in both the train and validation splits")
    return check_texts(df, what), check_labels(df, what)


def _param_groups(model: SpendRegressor, config: TrainConfig) -> list[dict[str, Any]]:
    """Return AdamW groups: encoder/head x decay/no-decay (no decay on biases and LayerNorm)."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "encoder"
        no_decay = parameter.ndim < 2 or name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((part, no_decay), []).append(parameter)
    out = []
    for (part, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": config.head_lr if part == "head" else config.lr,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "name": f"{part}{'-no-decay' if no_decay else ''}",
            }
        )
    return out


def _pool_all(model: SpendRegressor, tokens: TokenizedTexts, batch_size: int, device: torch.device) -> torch.Tensor:
    """Return pooled text vectors (n, hidden) on ``device``, in input order, with the encoder in eval mode."""
    pooled = torch.empty((len(tokens), model.hidden_size), dtype=torch.float32, device=device)
    model.encoder.eval()
    with torch.no_grad():
        for index in length_sorted_batches(tokens.lengths, batch_size):
            input_ids, mask = tokens.batch(index)
            with autocast_context(device):
                vectors = model.pool(input_ids.to(device), mask.to(device))
            pooled[torch.from_numpy(index).to(device)] = vectors
    return pooled


@dataclass
class _Split:
    """One dataset ready for the loop: tokens, features, labels, optional precomputed pooled vectors."""

    tokens: TokenizedTexts
    features: torch.Tensor | None
    labels: torch.Tensor
    pooled: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens)


def _raw_outputs(
    model: SpendRegressor, split: _Split, index: np.ndarray, device: torch.device
) -> torch.Tensor:
    """Return raw head outputs for rows ``index`` of ``split`` (uses pooled vectors when present)."""
    index_t = torch.from_numpy(index)
    features = None if split.features is None else split.features[index_t.to(split.features.device)]
    if split.pooled is not None:
        pooled = split.pooled[index_t.to(split.pooled.device)]
    else:
        input_ids, mask = split.tokens.batch(index)
        with autocast_context(device):
            pooled = model.pool(input_ids.to(device), mask.to(device))
    return model.head_forward(pooled, features)


def _evaluate(model: SpendRegressor, split: _Split, config: TrainConfig, device: torch.device) -> tuple[float, float]:
    """Return ``(loss, rmse in currency units)`` of ``model`` on ``split`` (eval mode, no grad)."""
    model.eval()
    outputs = torch.empty((len(split), output_dim(config.loss)), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for index in length_sorted_batches(split.tokens.lengths, config.eval_batch_size):
            outputs[torch.from_numpy(index).to(device)] = _raw_outputs(model, split, index, device)
        loss = float(compute_loss(config.loss, outputs, split.labels, config.huber_delta))
        predicted = predict_spend(config.loss, outputs).double()
        rmse = float(torch.sqrt(torch.mean((predicted - split.labels.double()) ** 2)))
    return loss, rmse


def train_regressor(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    feature_columns: list[str] | tuple[str, ...],
    config: TrainConfig,
    encoder_dir: str | Path,
    text_template_version: str = "v1",
) -> TrainResult:
    """Fine-tune a spend regressor on ``train_df`` with early stopping on ``val_df``; return a ``TrainResult``.

    Both frames need ``text`` and ``label`` (spend >= 0) and, when ``config.use_features``,
    the ``feature_columns``. Raises ``ConfigError`` for a bad config or device, ``DataError``
    for a malformed frame (naming the row or column) and ``ModelError`` when the encoder
    cannot be loaded from ``encoder_dir``.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    started = time.perf_counter()
    train_texts, train_labels = _check_frame(train_df, "train data")
    val_texts, val_labels = _check_frame(val_df, "validation data")
    columns = list(feature_columns) if config.use_features else []
    normaliser = FeatureNormaliser.fit(train_df, columns, "train data") if columns else FeatureNormaliser()
    train_features = normaliser.transform(train_df, "train data") if columns else None
    val_features = normaliser.transform(val_df, "validation data") if columns else None

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    tokenizer = load_tokenizer(encoder_dir)
    encoder = load_encoder(encoder_dir)
    max_positions = getattr(encoder.config, "max_position_embeddings", None)
    if max_positions is not None and config.max_length > max_positions:
        raise ConfigError(
            f"TrainConfig.max_length={config.max_length} exceeds the encoder's {max_positions} positions: "
            f"use max_length <= {max_positions}"
        )
    hidden = int(encoder.config.hidden_size)
    head = SpendHead(hidden + len(columns), config.head_hidden, output_dim(config.loss), config.dropout)
    with torch.no_grad():
        head.output_layer.bias.copy_(torch.tensor(initial_bias(config.loss, train_labels)))
    model = SpendRegressor(encoder, head, len(columns))
    spec = apply_freeze(model, config.freeze_spec)
    model.to(device)

    def split(texts: list[str], labels: np.ndarray, features: np.ndarray | None) -> _Split:
        return _Split(
            tokens=tokenize_texts(tokenizer, texts, config.max_length),
            features=None if features is None else torch.from_numpy(features).to(device),
            labels=torch.from_numpy(labels.astype(np.float32)).to(device),
        )

    train = split(train_texts, train_labels, train_features)
    val = split(val_texts, val_labels, val_features)
    if spec.encoder_frozen:
        train.pooled = _pool_all(model, train.tokens, config.eval_batch_size, device)
        val.pooled = _pool_all(model, val.tokens, config.eval_batch_size, device)

    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_ratio * total_steps)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    trainable, total = count_parameters(model)
    lengths = np.concatenate([train.tokens.lengths, val.tokens.lengths])
    logger.info(
        "training spend regressor: %d train users (%.1f%% buyers), %d validation users, %d numeric features; "
        "encoder %s (%s, hidden %d); texts %.1f tokens on average, %.1f%% truncated at %d",
        len(train), 100.0 * float(np.mean(train_labels > 0)), len(val), len(columns), encoder_dir,
        getattr(encoder.config, "model_type", "?"), hidden, float(lengths.mean()),
        100.0 * float(np.mean(lengths >= config.max_length)), config.max_length,
    )
    logger.info(
        "settings: loss=%s freeze=%s epochs=%d batch_size=%d lr=%g head_lr=%g weight_decay=%g warmup=%d/%d steps "
        "max_grad_norm=%g dropout=%g patience=%d seed=%d device=%s bf16=%s; trainable parameters %d of %d",
        config.loss, config.freeze, config.epochs, config.batch_size, config.lr, config.head_lr,
        config.weight_decay, warmup_steps, total_steps, config.max_grad_norm, config.dropout, config.patience,
        config.seed, device, device.type == "cuda" and torch.cuda.is_bf16_supported(), trainable, total,
    )

    initial_val_loss, initial_rmse = _evaluate(model, val, config, device)
    logger.info("epoch 0/%d val_loss=%.4f val_rmse=%.2f (before training)", config.epochs, initial_val_loss, initial_rmse)
    from tqdm.auto import tqdm

    show_bar = config.progress and sys.stderr.isatty()
    history: list[dict[str, float]] = []
    best_loss = math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] = {}
    epochs_without_gain = 0
    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        if spec.encoder_frozen:
            model.encoder.eval()
        loss_sum = 0.0
        batches = shuffled_batches(len(train), config.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not show_bar, leave=False)
        for index in bar:
            outputs = _raw_outputs(model, train, index, device)
            loss = compute_loss(config.loss, outputs, train.labels[torch.from_numpy(index).to(device)], config.huber_delta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable_params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            loss_value = float(loss.detach())
            loss_sum += loss_value * len(index)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        bar.close()
        val_loss, val_rmse = _evaluate(model, val, config, device)
        lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / len(train),
            "val_loss": val_loss,
            "val_rmse": val_rmse,
            "lr": float(lrs.get("encoder", lrs.get("encoder-no-decay", 0.0))),
            "head_lr": float(lrs.get("head", lrs.get("head-no-decay", 0.0))),
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(record)
        improved = val_loss < best_loss
        logger.info(
            "epoch %d/%d train_loss=%.4f val_loss=%.4f val_rmse=%.2f time=%.1fs%s",
            epoch, config.epochs, record["train_loss"], val_loss, val_rmse, record["seconds"],
            " (best)" if improved else "",
        )
        if improved:
            best_loss, best_epoch, epochs_without_gain = val_loss, epoch, 0
            best_state = {
                name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
            }
        else:
            epochs_without_gain += 1
            if epochs_without_gain >= config.patience and epoch < config.epochs:
                stopped_early = True
                logger.info("early stopping after epoch %d: no gain for %d epochs", epoch, config.patience)
                break
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in best_state:
                parameter.copy_(best_state[name])
    model.eval()
    meta = {
        "format_version": 1,
        "loss": config.loss,
        "feature_columns": columns,
        "normaliser": normaliser.to_dict(),
        "use_features": bool(columns),
        "text_template_version": text_template_version,
        "max_length": config.max_length,
        "pooling": "mean",
        "spendpred_version": spendpred.__version__,
        "head": {"in_dim": head.in_dim, "hidden_dim": head.hidden_dim, "out_dim": head.out_dim, "dropout": config.dropout},
        "base_encoder": str(encoder_dir),
        "encoder_model_type": getattr(encoder.config, "model_type", None),
        "train_config": config.to_dict(),
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "train_rows": len(train),
        "val_rows": len(val),
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    logger.info(
        "training done in %.1fs: best epoch %d, val_loss %.4f (%.4f before training)",
        time.perf_counter() - started, best_epoch, best_loss, initial_val_loss,
    )
    return TrainResult(
        bundle=SpendModel(model, tokenizer, normaliser, meta, device),
        history=history,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        initial_val_loss=initial_val_loss,
        stopped_early=stopped_early,
        config=config,
    )


def fit_head_only(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    feature_columns: list[str] | tuple[str, ...],
    config: TrainConfig,
    encoder_dir: str | Path,
    text_template_version: str = "v1",
) -> TrainResult:
    """Return the "before fine-tuning" baseline: ``train_regressor`` with ``freeze="all-but-head"``.

    The encoder stays as loaded; its pooled vectors are computed once and only the head
    trains. Raises as ``train_regressor``.
    """
    return train_regressor(
        train_df, val_df, feature_columns, replace(config, freeze="all-but-head"), encoder_dir, text_template_version
    )


__all__ = ["TrainConfig", "TrainResult", "fit_head_only", "train_regressor"]
