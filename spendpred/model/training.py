"""Fine-tune the spend regressor: AdamW, warm-up and decay, clipping, early stopping, freezing.

``train_regressor`` is the one training entry point. It tokenises each dataset once, pads
each batch to its own longest text and runs on CUDA with bf16 autocast when ``device``
allows (CUDA is touched only inside the call). Training is staged, as the source article's
freezing strategies suggest:

1. **Head on the frozen encoder** (``head_epochs``, ``head_lr``): the pooled text vectors
   are computed once and only the head trains, which is cheap, so it can run many epochs
   and a loss such as ZILN converges even on a CPU. This is the "before fine-tuning" model.
2. **Fine-tuning** (``epochs``; skipped with ``freeze="all-but-head"``): the encoder is
   unfrozen as ``freeze`` says, with a lower rate that decays layer by layer downwards
   (``lr`` at the top, times ``layer_decay`` per layer below) and the head at
   ``finetune_head_lr``.

Early stopping keeps the better of the two stages on validation loss, and the stage-1
model is returned beside it (``TrainResult.frozen``) for the before/after comparison.
Last, predicted spend is calibrated on the validation users (``calibrate``; see
``spendpred.model.losses.fit_calibration``) so that ``predicted_spend`` is an expected
spend in currency. ``fit_head_only`` is stage 1 alone.

Reproducibility: the seed drives ``torch.manual_seed`` (head initialisation, dropout) and
a numpy ``Generator`` (batch order), so the same inputs and seed give the same predictions
on CPU.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import spendpred
from spendpred.errors import ConfigError, DataError
from spendpred.model.bundle import SpendModel, autocast_context, resolve_device
from spendpred.model.data import TokenizedTexts, length_sorted_batches, shuffled_batches, tokenize_texts
from spendpred.model.features import FeatureNormaliser, check_labels, check_texts
from spendpred.model.hybrid import SOURCE_COLUMNS, HybridFeatures, has_sources, model_columns
from spendpred.model.losses import LOSS_FUNCTIONS, LossFunction, apply_calibration, fit_anchor, fit_calibration
from spendpred.model.network import (
    SpendHead,
    SpendRegressor,
    apply_freeze,
    count_parameters,
    embedding_module,
    load_encoder,
    load_tokenizer,
    transformer_layers,
)
from spendpred.params import DEVICES, LOSSES, Device, Freeze, FreezeSpec, Loss, parse_freeze

logger = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Training settings, checked on construction: ``ConfigError`` names the field and its rule.

    A pydantic model with the run parameters' own types (``spendpred.params``): ``loss`` is a
    ``Loss``, ``freeze`` a ``Freeze`` (N = 0..99), ``device`` a ``Device`` (auto, cpu, cuda).
    Frozen; :meth:`replace` returns a checked copy with some values changed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, validate_default=True)

    epochs: int = Field(3, ge=1, description="Maximum fine-tuning passes over the training users (stage 2, >= 1).")
    head_epochs: int = Field(30, ge=1, description="Maximum head-only passes on the frozen encoder's pooled vectors (stage 1, cheap).")
    batch_size: int = Field(32, ge=1, description="Users per training step.")
    lr: float = Field(2e-5, gt=0, description="Peak AdamW learning rate of the encoder's top layer (stage 2).")
    layer_decay: float = Field(
        0.8, gt=0, le=1, description="Layer-wise learning-rate decay: each lower encoder layer gets lr x this (1 = none)."
    )
    head_lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate of the head in stage 1.")
    finetune_head_lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate of the head in stage 2.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (never on biases or LayerNorm).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps warming up linearly; then linear decay to 0.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping threshold (global L2 norm).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout of the head, before each of its linear layers.")
    patience: int = Field(2, ge=1, description="Fine-tuning epochs without a lower validation loss before stopping.")
    head_patience: int = Field(5, ge=1, description="Head-only epochs (stage 1, cheap) without a gain before stopping.")
    freeze: Freeze = Field("none", description="none | embeddings | bottom-k:N (N = 0..99) | all-but-head.")
    loss: Loss = Field("ziln", description="ziln (expected spend) | mse (on log1p spend) | huber (on log1p spend).")
    calibrate: bool = Field(
        True, description="Fit predicted spend to the validation users' mean spend (Poisson log link) before saving."
    )
    use_features: bool = Field(True, description="Join the normalised numeric features to the pooled text.")
    hybrid: bool = Field(
        True,
        description="Add BG/NBD x Gamma-Gamma, interval and trend features (spendpred.model.hybrid) when the data has their inputs.",
    )
    horizon_days: int = Field(90, ge=1, description="Label horizon H in days (the hybrid features' forecast window).")
    max_length: int = Field(128, ge=8, le=8192, description="Token limit; longer texts are truncated.")
    seed: int = Field(42, ge=0, description="Seed of head initialisation, dropout and batch order.")
    device: Device = Field("auto", description="auto (CUDA when present) | cpu | cuda.")
    head_hidden: int = Field(128, ge=1, description="Width of the head's hidden layer.")
    huber_delta: float = Field(1.0, gt=0, description="Huber threshold, in log1p-spend units.")
    eval_batch_size: int = Field(256, ge=1, description="Users per batch when evaluating or pooling.")
    progress: bool = Field(True, description="Show a tqdm bar per epoch (only on a terminal).")

    def __init__(self, **values: Any) -> None:
        """Check ``values``; raises ``ConfigError`` ``TrainConfig.<field>=<value> is invalid: <rule>`` (each bad field)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_config_message(exc)) from None

    @property
    def freeze_spec(self) -> FreezeSpec:
        """The parsed ``freeze`` strategy."""
        return parse_freeze(self.freeze)

    @property
    def loss_function(self) -> LossFunction:
        """The ``loss`` object (``spendpred.model.losses.LOSS_FUNCTIONS``), looked up once by the checked name."""
        return LOSS_FUNCTIONS[self.loss]

    def replace(self, **changes: Any) -> TrainConfig:
        """Return a checked copy with ``changes`` applied; raises ``ConfigError`` like the constructor."""
        return TrainConfig(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (for bundle.json and MLflow params)."""
        return self.model_dump()


def _config_message(exc: ValidationError) -> str:
    """One line per bad field of a ``TrainConfig``: its name, the value and the rule."""
    problems = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "values"
        rule = _RULES.get(name, error["msg"][0].lower() + error["msg"][1:])
        if error["type"] == "extra_forbidden":
            rule = "not a TrainConfig field"
        problems.append(f"TrainConfig.{name}={error.get('input')!r} is invalid: {rule}")
    return "; ".join(problems)


_RULES = {
    "loss": f"use one of {', '.join(LOSSES)}",
    "freeze": "use none, embeddings, all-but-head or bottom-k:N (N = 0..99), e.g. bottom-k:4",
    "device": f"use one of {', '.join(DEVICES)} (choose a GPU with CUDA_VISIBLE_DEVICES)",
}
"""The rule in words of the fields whose pydantic message would list a pattern or a literal."""


@dataclass
class TrainResult:
    """What ``train_regressor`` returns.

    ``bundle``: the model with the best validation weights of both stages; ``history``: one
    dict per epoch (stage, epoch, train_loss, val_loss, val_rmse, lr, head_lr, seconds);
    ``best_epoch``: the epoch whose weights were kept (stage-1 epochs count first);
    ``initial_val_loss``: validation loss before any training step; ``frozen``: the stage-1
    model (the encoder as loaded, the head fitted on its pooled vectors: the "before
    fine-tuning" model of the source article), ``None`` when only the head was trained;
    ``stages``: per stage ``{"best_val_loss", "best_epoch", "epochs_run"}`` and which stage won.
    """

    bundle: SpendModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    initial_val_loss: float
    stopped_early: bool
    config: TrainConfig
    frozen: SpendModel | None = None
    stages: dict[str, Any] = field(default_factory=dict)


def _check_frame(df: pd.DataFrame, what: str) -> tuple[list[str], np.ndarray]:
    """Return texts and labels of a training frame; raises ``DataError`` when unusable."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError(f"{what} has no rows: training needs users in both the train and validation splits")
    return check_texts(df, what), check_labels(df, what)


def _encoder_depths(model: SpendRegressor) -> dict[int, int]:
    """Return ``id(parameter) -> depth`` for the encoder: embeddings 0, transformer layer i -> i + 1.

    Parameters outside the embeddings and the layer list (a pooler) get the top depth.
    Returns an empty mapping when the architecture's layer list cannot be found.
    """
    try:
        layers = transformer_layers(model.encoder)
    except ConfigError:
        return {}
    depths = {id(p): 0 for p in embedding_module(model.encoder).parameters()}
    for index, layer in enumerate(layers):
        depths.update({id(p): index + 1 for p in layer.parameters()})
    return depths


def _param_groups(model: SpendRegressor, config: TrainConfig, head_lr: float) -> list[dict[str, Any]]:
    """Return AdamW groups of the trainable parameters: head, and the encoder by depth, x decay/no-decay.

    The encoder's top layer gets ``config.lr``; each layer below gets ``config.layer_decay``
    times the one above (layer-wise decay: lower layers hold general language knowledge and
    move least); biases and LayerNorm weights get no weight decay.
    """
    depths = _encoder_depths(model)
    top = max(depths.values(), default=0)
    groups: dict[tuple[str, int, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "encoder"
        depth = depths.get(id(parameter), top) if part == "encoder" else -1
        no_decay = parameter.ndim < 2 or name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((part, depth, no_decay), []).append(parameter)
    out = []
    for (part, depth, no_decay), params in sorted(groups.items()):
        lr = head_lr if part == "head" else config.lr * config.layer_decay ** (top - depth)
        label = part if part == "head" else f"encoder-{depth}"
        out.append(
            {
                "params": params,
                "lr": lr,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "name": f"{label}{'-no-decay' if no_decay else ''}",
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
    outputs = torch.empty((len(split), config.loss_function.outputs), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for index in length_sorted_batches(split.tokens.lengths, config.eval_batch_size):
            outputs[torch.from_numpy(index).to(device)] = _raw_outputs(model, split, index, device)
        loss = float(config.loss_function.loss(outputs, split.labels, config.huber_delta))
        predicted = config.loss_function.predict(outputs).double()
        rmse = float(torch.sqrt(torch.mean((predicted - split.labels.double()) ** 2)))
    return loss, rmse


def train_regressor(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    feature_columns: list[str] | tuple[str, ...],
    config: TrainConfig,
    encoder_dir: str | Path,
    text_template_version: str = "v1",
    calibrate_rows: int | None = None,
) -> TrainResult:
    """Fine-tune a spend regressor on ``train_df`` with early stopping on ``val_df``; return a ``TrainResult``.

    Both frames need ``text`` and ``label`` (spend >= 0) and, when ``config.use_features``,
    the ``feature_columns``. ``calibrate_rows`` fits the calibration (and trend anchor) on the
    first that many rows of ``val_df`` only (default: all): the retrain puts the latest
    training window first, so with stacked windows the spend level is the one closest to
    scoring, while early stopping still uses every window. Raises ``ConfigError`` for a bad
    config, device or ``calibrate_rows``, ``DataError`` for a malformed frame (naming the row
    or column) and ``ModelError`` when the encoder cannot be loaded from ``encoder_dir``.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    if calibrate_rows is not None and (
        isinstance(calibrate_rows, bool) or not isinstance(calibrate_rows, int) or not 0 < calibrate_rows <= len(val_df)
    ):
        raise ConfigError(
            f"calibrate_rows must be a whole number from 1 to the {len(val_df)} validation rows, got {calibrate_rows!r}"
        )
    started = time.perf_counter()
    train_texts, train_labels = _check_frame(train_df, "train data")
    val_texts, val_labels = _check_frame(val_df, "validation data")
    columns = list(feature_columns) if config.use_features else []
    hybrid: HybridFeatures | None = None
    if columns and config.hybrid:
        if has_sources(train_df):
            hybrid = HybridFeatures.fit(train_df, config.horizon_days)  # on the training users only
            train_df, val_df = hybrid.transform(train_df), hybrid.transform(val_df)
        else:
            logger.info("hybrid features off: the data lacks %s", [c for c in SOURCE_COLUMNS if c not in train_df.columns])
    head_columns = model_columns(columns, hybrid.to_dict() if hybrid else None)
    normaliser = FeatureNormaliser.fit(train_df, head_columns, "train data") if columns else FeatureNormaliser()
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
    head = SpendHead(hidden + len(head_columns), config.head_hidden, config.loss_function.outputs, config.dropout)
    with torch.no_grad():
        head.output_layer.bias.copy_(torch.tensor(config.loss_function.initial_bias(train_labels)))
    model = SpendRegressor(encoder, head, len(head_columns))
    spec = apply_freeze(model, config.freeze_spec)  # checks the strategy fits the encoder before any work
    model.to(device)

    def split(texts: list[str], labels: np.ndarray, features: np.ndarray | None) -> _Split:
        return _Split(
            tokens=tokenize_texts(tokenizer, texts, config.max_length),
            features=None if features is None else torch.from_numpy(features).to(device),
            labels=torch.from_numpy(labels.astype(np.float32)).to(device),
        )

    train = split(train_texts, train_labels, train_features)
    val = split(val_texts, val_labels, val_features)
    # stage 1: the head alone on the frozen encoder's pooled vectors, computed once
    apply_freeze(model, "all-but-head")
    train.pooled = _pool_all(model, train.tokens, config.eval_batch_size, device)
    val.pooled = _pool_all(model, val.tokens, config.eval_batch_size, device)

    lengths = np.concatenate([train.tokens.lengths, val.tokens.lengths])
    logger.info(
        "training spend regressor: %d train users (%.1f%% buyers), %d validation users, %d numeric features; "
        "encoder %s (%s, hidden %d); texts %.1f tokens on average, %.1f%% truncated at %d",
        len(train), 100.0 * float(np.mean(train_labels > 0)), len(val), len(columns), encoder_dir,
        getattr(encoder.config, "model_type", "?"), hidden, float(lengths.mean()),
        100.0 * float(np.mean(lengths >= config.max_length)), config.max_length,
    )
    logger.info(
        "settings: loss=%s freeze=%s head_epochs=%d epochs=%d batch_size=%d head_lr=%g lr=%g layer_decay=%g "
        "finetune_head_lr=%g weight_decay=%g warmup=%g max_grad_norm=%g dropout=%g patience=%d seed=%d device=%s "
        "bf16=%s calibrate=%s",
        config.loss, config.freeze, config.head_epochs, config.epochs, config.batch_size, config.head_lr, config.lr,
        config.layer_decay, config.finetune_head_lr, config.weight_decay, config.warmup_ratio, config.max_grad_norm,
        config.dropout, config.patience, config.seed, device, device.type == "cuda" and torch.cuda.is_bf16_supported(),
        config.calibrate,
    )
    initial_val_loss, initial_rmse = _evaluate(model, val, config, device)
    logger.info("before training: val_loss=%.4f val_rmse=%.2f", initial_val_loss, initial_rmse)

    history: list[dict[str, float]] = []
    head_stage = _run_stage(
        1, model, train, val, config, device, rng, history, config.head_epochs, config.head_lr, config.head_patience
    )
    stages: dict[str, Any] = {"head": head_stage.summary()}
    frozen_val_pooled = val.pooled
    frozen: SpendRegressor | None = None
    best = head_stage
    if not spec.encoder_frozen:
        # stage 2: unfreeze (as ``freeze`` says) with a lower, layer-wise decayed encoder rate;
        # the stage-1 model is kept apart as the "before fine-tuning" model
        import copy

        frozen = copy.deepcopy(model).eval()
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        apply_freeze(model, spec)
        train.pooled = val.pooled = None
        finetune = _run_stage(
            2, model, train, val, config, device, rng, history, config.epochs, config.finetune_head_lr, config.patience
        )
        stages["finetune"] = finetune.summary()
        if finetune.best_loss < head_stage.best_loss:
            best = finetune
        else:  # fine-tuning never beat the frozen encoder on validation: keep the stage-1 model
            logger.info(
                "fine-tuning did not improve on the frozen encoder (val_loss %.4f vs %.4f): keeping the stage-1 model",
                finetune.best_loss, head_stage.best_loss,
            )
            model.load_state_dict(frozen.state_dict())
    stages["kept"] = "finetune" if best is not head_stage else "head"
    model.eval()
    trainable, total = count_parameters(model)
    meta = {
        "format_version": 1,
        "loss": config.loss,
        "feature_columns": columns,
        "hybrid": hybrid.to_dict() if hybrid else None,
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
        "best_epoch": best.best_epoch,
        "best_val_loss": best.best_loss,
        "stages": stages,
        "train_rows": len(train),
        "val_rows": len(val),
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    bundle = SpendModel(model, tokenizer, normaliser, meta, device)
    frozen_bundle = None
    if frozen is not None:
        frozen_meta = {**meta, "best_epoch": head_stage.best_epoch, "best_val_loss": head_stage.best_loss,
                       "train_config": {**config.to_dict(), "freeze": "all-but-head"}}
        frozen_bundle = SpendModel(frozen, tokenizer, normaliser, frozen_meta, device)
    if config.calibrate:
        val_pooled = frozen_val_pooled if stages["kept"] == "head" else None
        forecast = val_df["btyd_spend"].to_numpy(dtype=np.float64) if hybrid is not None else None
        bundle.meta["calibration"], bundle.meta["anchor"] = _fit_calibration(
            model, val, val_pooled, config, device, forecast, calibrate_rows
        )
        if frozen_bundle is not None:
            frozen_bundle.meta["calibration"], frozen_bundle.meta["anchor"] = _fit_calibration(
                frozen, val, frozen_val_pooled, config, device, forecast, calibrate_rows
            )
    logger.info(
        "training done in %.1fs: kept the %s model (epoch %d, val_loss %.4f; %.4f before training); "
        "%d of %d parameters were trainable in the last stage",
        time.perf_counter() - started, "fine-tuned" if stages["kept"] == "finetune" else "frozen-encoder",
        best.best_epoch, best.best_loss, initial_val_loss, trainable, total,
    )
    return TrainResult(
        bundle=bundle,
        history=history,
        best_epoch=best.best_epoch,
        best_val_loss=best.best_loss,
        initial_val_loss=initial_val_loss,
        stopped_early=any(stage.get("stopped_early") for stage in stages.values() if isinstance(stage, dict)),
        config=config,
        frozen=frozen_bundle,
        stages=stages,
    )


@dataclass
class _StageOutcome:
    """Best validation loss and epoch of one training stage (its best weights are restored)."""

    stage: int
    best_loss: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool

    def summary(self) -> dict[str, Any]:
        return {"best_val_loss": self.best_loss, "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "stopped_early": self.stopped_early}


def _run_stage(
    stage: int,
    model: SpendRegressor,
    train: _Split,
    val: _Split,
    config: TrainConfig,
    device: torch.device,
    rng: np.random.Generator,
    history: list[dict[str, float]],
    epochs: int,
    head_lr: float,
    patience: int,
) -> _StageOutcome:
    """Train the parameters that require grad for up to ``epochs`` with early stopping on ``val``.

    AdamW with linear warm-up and decay; gradients clipped; one ``history`` entry and one log
    line per epoch (epochs numbered after those already in ``history``). Restores the
    weights of the best validation epoch before returning.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    name = "head on the frozen encoder" if stage == 1 else "fine-tuning"
    optimizer = torch.optim.AdamW(_param_groups(model, config, head_lr), lr=head_lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    encoder_frozen = not any(p.requires_grad for p in model.encoder.parameters())
    trainable, total = count_parameters(model)
    logger.info("stage %d (%s): up to %d epochs, %d of %d parameters trainable", stage, name, epochs, trainable, total)
    show_bar = config.progress and sys.stderr.isatty()
    offset = len(history)
    best_loss, best_epoch, without_gain, stopped_early = math.inf, 0, 0, False
    best_state: dict[str, torch.Tensor] = {}
    epoch = 0
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        if encoder_frozen:
            model.encoder.eval()
        loss_sum = 0.0
        batches = shuffled_batches(len(train), config.batch_size, rng)
        bar = tqdm(batches, desc=f"stage {stage} epoch {epoch}/{epochs}", unit="batch", disable=not show_bar, leave=False)
        for index in bar:
            outputs = _raw_outputs(model, train, index, device)
            loss = config.loss_function.loss(outputs, train.labels[torch.from_numpy(index).to(device)], config.huber_delta)
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
        encoder_lrs = [lr for group, lr in lrs.items() if group.startswith("encoder")]
        record = {
            "epoch": offset + epoch,
            "stage": stage,
            "train_loss": loss_sum / len(train),
            "val_loss": val_loss,
            "val_rmse": val_rmse,
            "lr": float(max(encoder_lrs, default=0.0)),
            "head_lr": float(lrs.get("head", lrs.get("head-no-decay", 0.0))),
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(record)
        improved = val_loss < best_loss
        logger.info(
            "stage %d epoch %d/%d train_loss=%.4f val_loss=%.4f val_rmse=%.2f time=%.1fs%s",
            stage, epoch, epochs, record["train_loss"], val_loss, val_rmse, record["seconds"],
            " (best)" if improved else "",
        )
        if improved:
            best_loss, best_epoch, without_gain = val_loss, offset + epoch, 0
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            without_gain += 1
            if without_gain >= patience and epoch < epochs:
                stopped_early = True
                logger.info("stage %d: early stopping after epoch %d, no gain for %d epochs", stage, epoch, patience)
                break
    with torch.no_grad():
        for n, parameter in model.named_parameters():
            if n in best_state:
                parameter.copy_(best_state[n])
    return _StageOutcome(stage, best_loss, best_epoch, epoch, stopped_early)


def _fit_calibration(
    model: SpendRegressor,
    val: _Split,
    pooled: torch.Tensor | None,
    config: TrainConfig,
    device: torch.device,
    forecast: np.ndarray | None = None,
    rows: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Return the calibration of ``model``'s predicted spend on the validation users, and its trend anchor.

    Only the first ``rows`` validation users count (all by default; see ``train_regressor``'s
    ``calibrate_rows``).

    The anchor (``spendpred.model.losses.fit_anchor``) compares the calibrated total with the
    hybrid BG/NBD x Gamma-Gamma ``forecast`` of the same users; ``None`` without a forecast.

    Predicted spend ``p`` maps to ``exp(a) * (1 + p) ** b``: a Poisson regression with log link
    of the true spend on ``log1p(p)``, so the mean calibrated prediction equals the mean true
    spend on validation and the ranking is kept (``b > 0``). A log-scale loss (mse, huber)
    predicts something like a geometric mean, far below the expected spend; ZILN's
    expectation is close already and the fit mostly confirms it. Falls back to a scale
    alone when the fitted slope is not clearly positive.
    """
    split = _Split(val.tokens, val.features, val.labels, pooled)
    model.eval()
    outputs = torch.empty((len(split), config.loss_function.outputs), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for index in length_sorted_batches(split.tokens.lengths, config.eval_batch_size):
            outputs[torch.from_numpy(index).to(device)] = _raw_outputs(model, split, index, device)
        predicted = config.loss_function.predict(outputs).double().cpu().numpy()
    keep = slice(rows)  # None: every row
    predicted = predicted[keep]
    calibration = fit_calibration(predicted, val.labels.double().cpu().numpy()[keep])
    anchor = None if forecast is None else fit_anchor(apply_calibration(predicted, calibration), forecast[keep])
    return calibration, anchor


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
        train_df, val_df, feature_columns, config.replace(freeze="all-but-head"), encoder_dir, text_template_version
    )


__all__ = ["TrainConfig", "TrainResult", "fit_head_only", "train_regressor"]
