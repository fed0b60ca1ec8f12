"""``SpendModel``: a trained regressor with its tokenizer and normaliser, saved as a plain folder.

Bundle layout (no pickles)::

    <dir>/encoder/            encoder.save_pretrained + tokenizer.save_pretrained (safetensors)
    <dir>/head.safetensors    the MLP head's tensors
    <dir>/bundle.json         loss, feature columns, normaliser, text-template version,
                              max_length, pooling, head shape, sha256 of every file above

``SpendModel.load`` checks every file against the checksums in ``bundle.json`` and raises
``ModelError`` naming the missing or corrupt file.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from spendpred.errors import ConfigError, ModelError
from spendpred.params import DEVICES, Device
from spendpred.files import sha256_file
from spendpred.model.data import tokenize_texts
from spendpred.model.features import FeatureNormaliser, check_texts, feature_matrix
from spendpred.model.hybrid import HybridFeatures, model_columns
from spendpred.model.losses import LOSS_FUNCTIONS, LossFunction, apply_calibration
from spendpred.model.network import SpendHead, SpendRegressor, load_encoder, load_tokenizer, mean_pool
from spendpred.model.scoring import cpu_threads, default_batch_size, quantize_encoder, resolve_precision

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
PREDICT_CHUNK = 16384
"""Rows tokenised at once by ``SpendModel.predict`` (then grouped by padding bucket within the chunk)."""
HEAD_BATCH_ROWS = 1024
"""Rows per head forward pass in ``SpendModel.predict_pooled`` (short batches are filled, so every pass has one shape)."""
CUDA_TOKEN_BUDGET = 65_536
"""Padded tokens per encoder batch on CUDA when no batch size is given (1,024 users at 64 tokens)."""
PAD_BUCKET = 16
"""``SpendModel.predict`` pads each text to its length rounded up to a multiple of this many
tokens (capped at ``max_length``), so a user's padded width depends only on its own text."""


def padding_buckets(lengths: np.ndarray, max_length: int, bucket: int = PAD_BUCKET) -> np.ndarray:
    """Return the padded width of each text: its length rounded up to a multiple of ``bucket``, at most ``max_length``.

    Never below the text's own length (a text is never cut here), never below 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    widths = -(-np.maximum(lengths, 1) // bucket) * bucket
    return np.maximum(np.minimum(widths, max(int(max_length), 1)), np.maximum(lengths, 1))


def bucketed_batches(widths: np.ndarray, batch_size: int | Callable[[int], int]) -> list[tuple[int, np.ndarray]]:
    """Return ``(width, rows)`` batches: rows of one padded width only, widest bucket first, at most ``batch_size`` rows.

    ``batch_size`` is a row count, or a function of the padded width giving it (a token
    budget). Rows keep their input order within a bucket (stable), so the split is deterministic.
    """
    batches: list[tuple[int, np.ndarray]] = []
    for width in sorted({int(w) for w in widths}, reverse=True):
        rows = np.flatnonzero(widths == width)
        size = batch_size(width) if callable(batch_size) else batch_size
        batches += [(width, rows[i : i + size]) for i in range(0, len(rows), size)]
    return batches

_REQUIRED_KEYS = (
    "format_version",
    "loss",
    "feature_columns",
    "normaliser",
    "use_features",
    "text_template_version",
    "max_length",
    "pooling",
    "head",
    "files",
)
_FIX = "retrain the model or pick another registered version"


def resolve_device(device: Device) -> torch.device:
    """Return the torch device for ``device`` (a ``spendpred.params.Device``: "auto", "cpu" or "cuda").

    One rule with the run parameter and ``TrainConfig``: a particular GPU is chosen with
    ``CUDA_VISIBLE_DEVICES``, not ``cuda:N``. Raises ``ConfigError`` naming the field ``device``
    when it is unknown, or "cuda" is asked for on a machine without CUDA.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but CUDA is not available here: use device='auto' or 'cpu'")
        return torch.device(device)
    raise ConfigError(f"device={device!r} is not supported: use one of {', '.join(DEVICES)} (choose a GPU with CUDA_VISIBLE_DEVICES)")


def autocast_context(device: torch.device):  # noqa: ANN201 - a context manager
    """Return bf16 autocast on a CUDA device that supports it, else a no-op context."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def _progress(total: int, enabled: bool, desc: str) -> Iterator[Any]:
    """Yield a tqdm bar (disabled when ``enabled`` is false or stderr is not a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="row", disable=not enabled or not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()


class SpendModel:
    """A trained spend regressor: ``predict`` spend, ``save`` to a folder, ``load`` it back.

    ``meta`` is the content of ``bundle.json``.
    """

    def __init__(
        self,
        regressor: SpendRegressor,
        tokenizer: Any,
        normaliser: FeatureNormaliser,
        meta: dict[str, Any],
        device: torch.device | None = None,
    ) -> None:
        self.regressor = regressor
        self.tokenizer = tokenizer
        self.normaliser = normaliser
        self.meta = meta
        self.device = device or next(regressor.parameters()).device
        self._quantized: torch.nn.Module | None = None
        self._bf16: torch.nn.Module | None = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def loss(self) -> str:
        """The loss the model was trained with (``mse``, ``huber`` or ``ziln``)."""
        return str(self.meta["loss"])

    @property
    def loss_function(self) -> LossFunction:
        """The loss object of :attr:`loss` (``spendpred.model.losses.LOSS_FUNCTIONS``; the name is checked on load)."""
        return LOSS_FUNCTIONS[self.loss]

    @property
    def feature_columns(self) -> list[str]:
        """Numeric feature columns ``predict`` needs (empty when features are not used)."""
        return list(self.meta["feature_columns"]) if self.meta["use_features"] else []

    @property
    def max_length(self) -> int:
        """Token limit texts are truncated to."""
        return int(self.meta["max_length"])

    def to(self, device: str | torch.device) -> SpendModel:
        """Move the model to ``device`` ("auto", "cpu", "cuda" or a torch device); return self."""
        target = resolve_device(device) if isinstance(device, str) else device
        self.regressor.to(target)
        self.device = target
        self._quantized = None
        self._bf16 = None
        return self

    # -- prediction ---------------------------------------------------------------------------
    def predict(
        self,
        df: pd.DataFrame,
        batch_size: int | None = None,
        chunk_size: int = PREDICT_CHUNK,
        progress: bool = False,
        precision: str = "auto",
        num_threads: int | None = None,
    ) -> np.ndarray:
        """Return predicted spend (float64, currency units, >= 0) for each row of ``df``, in order.

        ``df`` needs the ``text`` column and, when the model uses them, its feature columns.
        The same as :meth:`encode` on the texts followed by :meth:`predict_pooled` (the nightly
        run calls the two separately to reuse cached text embeddings, with the same result bit
        for bit). Texts are tokenised ``chunk_size`` rows at a time with the fast tokenizer (so
        memory is bounded by the chunk, whatever the number of users), grouped by padding bucket
        within the chunk and run under ``torch.inference_mode``. Every batch has a fixed shape:
        each text is padded to its own length rounded up to ``PAD_BUCKET`` tokens (capped at
        ``max_length``), a batch holds one bucket only and is filled up to the bucket's row
        count (the filler rows' outputs are dropped). So a user's score does not depend on which
        other users are scored in the same call (shards, chunks, cache hits): for a given
        ``batch_size`` and device it is bit-identical; across batch sizes or devices it differs
        only by floating-point noise, which the published precision
        (``spendpred.shards.PUBLISHED_DECIMALS``) absorbs.

        ``batch_size`` is the rows per forward pass (None: 32 on a CPU; on CUDA a token budget,
        ``CUDA_TOKEN_BUDGET`` tokens per batch, so short texts run in larger batches).
        ``precision`` is ``auto`` (bf16 on CUDA and on a CPU with native bf16 kernels, else
        fp32), ``fp32``, ``bf16`` (on CUDA the encoder's weights cast to bfloat16 once, on a CPU
        bf16 autocast, which keeps LayerNorm in float32; pooling and head in float32) or
        ``int8`` (CPU only, dynamic quantisation of the encoder's linear layers); see
        ``spendpred.model.scoring`` for what each costs in accuracy. On a CPU the encoder uses
        ``num_threads`` threads for the call (None: torch's setting, capped at the cores
        available to the process).

        Raises ``DataError`` naming the column or row when the input is malformed and
        ``ConfigError`` for a non-positive batch or chunk size, an unknown precision, int8 on
        CUDA or ``num_threads`` below 1.
        """
        texts = check_texts(df, "prediction input")
        features = self.head_features(df)
        pooled = self.encode(texts, batch_size, chunk_size, progress, precision, num_threads)
        return self.predict_pooled(pooled, features, num_threads=num_threads)

    @property
    def hidden_size(self) -> int:
        """Width of the pooled text embedding :meth:`encode` returns."""
        return int(self.regressor.hidden_size)

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        chunk_size: int = PREDICT_CHUNK,
        progress: bool = False,
        precision: str = "auto",
        num_threads: int | None = None,
    ) -> np.ndarray:
        """Return the mean-pooled encoder output of each text, float32 ``(len(texts), hidden_size)``.

        Arguments and guarantees as in :meth:`predict` (fixed batch shapes, so a text's row is
        bit-identical whichever other texts are encoded with it). On CUDA the next chunk is
        tokenised on a background thread while the current one runs on the GPU, and batches
        are copied from pinned host memory.
        """
        resolved = resolve_precision(precision, self.device)
        if (batch_size is not None and batch_size < 1) or chunk_size < 1:
            raise ConfigError(f"batch_size={batch_size} and chunk_size={chunk_size} must both be >= 1")
        out = np.empty((len(texts), self.hidden_size), dtype=np.float32)
        if not texts:
            return out
        self.regressor.eval()
        encoder = self._encoder_for(resolved)
        threads = cpu_threads(num_threads) if self.device.type == "cpu" else nullcontext()
        chunks = [(start, min(start + chunk_size, len(texts))) for start in range(0, len(texts), chunk_size)]
        with threads, _progress(len(texts), progress, "encode") as bar, torch.inference_mode():
            for (start, _stop), tokens in self._tokenized_chunks(texts, chunks):
                widths = padding_buckets(tokens.lengths, self.max_length)
                for width, index in bucketed_batches(widths, lambda w: self._rows_for(w, batch_size)):
                    out[start + index] = self._encode_batch(
                        encoder, resolved, tokens, index, width=width, rows=self._rows_for(width, batch_size)
                    )
                    bar.update(len(index))
        return out

    def predict_pooled(
        self, pooled: np.ndarray, features: np.ndarray | None, num_threads: int | None = None
    ) -> np.ndarray:
        """Return predicted spend (float64, calibrated currency) from pooled text embeddings and head features.

        ``pooled`` is :meth:`encode`'s output for the rows, ``features`` :meth:`head_features`'
        (None when the model uses none). The head runs on fixed-shape batches of
        ``HEAD_BATCH_ROWS`` rows, so a row's output does not depend on the other rows.
        """
        n = len(pooled)
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return apply_calibration(out, self.meta.get("calibration"))
        if pooled.shape[1:] != (self.hidden_size,):
            raise ModelError(
                f"pooled embeddings have shape {pooled.shape}, this model needs (n, {self.hidden_size}): "
                "encode the texts with this model"
            )
        threads = cpu_threads(num_threads) if self.device.type == "cpu" else nullcontext()
        with threads, torch.inference_mode():
            for start in range(0, n, HEAD_BATCH_ROWS):
                index = np.arange(start, min(start + HEAD_BATCH_ROWS, n))
                full = np.concatenate([index, np.full(HEAD_BATCH_ROWS - len(index), index[0])])
                batch = torch.from_numpy(np.ascontiguousarray(pooled[full])).to(self.device)
                batch_features = None if features is None else torch.from_numpy(features[full]).to(self.device)
                raw = self.regressor.head_forward(batch, batch_features)
                out[index] = self.loss_function.predict(raw).double().cpu().numpy()[: len(index)]
        return apply_calibration(out, self.meta.get("calibration"))

    def head_features(self, df: pd.DataFrame, what: str = "prediction input") -> np.ndarray | None:
        """Return the normalised numeric inputs of the head for ``df`` (None when features are unused).

        The input feature columns, then the hybrid features derived from them when the model
        was trained with them (``spendpred.model.hybrid``). Raises ``DataError`` naming a
        missing or invalid column.
        """
        if not self.feature_columns:
            return None
        feature_matrix(df, self.feature_columns, what)  # the input columns, checked before deriving from them
        if self.meta.get("hybrid"):
            df = HybridFeatures.from_dict(self.meta["hybrid"]).transform(df)
        return self.normaliser.transform(df, what)

    def population_forecast(self, df: pd.DataFrame) -> np.ndarray | None:
        """Return the hybrid BG/NBD x Gamma-Gamma forecast (``btyd_spend``) of each row, for the trend anchor.

        ``None`` when the model has no trend anchor (``meta["anchor"]``, see
        ``spendpred.model.losses.fit_anchor``) or no hybrid features.
        """
        if not self.meta.get("anchor") or not self.meta.get("hybrid"):
            return None
        return HybridFeatures.from_dict(self.meta["hybrid"]).transform(df)["btyd_spend"].to_numpy(dtype=np.float64)

    def _encoder_for(self, precision: str) -> torch.nn.Module:
        """The encoder module for a resolved precision: int8 and bf16 copies are built once, then reused."""
        if precision == "int8":
            if self._quantized is None:
                started = time.perf_counter()
                self._quantized = quantize_encoder(self.regressor.encoder)
                logger.info("quantised the encoder to int8 in %.1fs", time.perf_counter() - started)
            return self._quantized
        if precision == "bf16" and self.device.type == "cuda":
            if self._bf16 is None:
                self._bf16 = copy.deepcopy(self.regressor.encoder).to(dtype=torch.bfloat16).eval()
            return self._bf16
        return self.regressor.encoder  # bf16 on a CPU: the fp32 encoder under autocast (see _encode_batch)

    def _rows_for(self, width: int, batch_size: int | None) -> int:
        """Rows of every batch of padded ``width``: ``batch_size``, else the device's default (a token budget on CUDA)."""
        if batch_size is not None:
            return batch_size
        if self.device.type == "cuda":
            return max(1, CUDA_TOKEN_BUDGET // max(int(width), 1))
        return default_batch_size(self.device)

    def _tokenized_chunks(
        self, texts: list[str], chunks: list[tuple[int, int]]
    ) -> Iterator[tuple[tuple[int, int], Any]]:
        """Yield ``((start, stop), tokens)`` per chunk; on CUDA the next chunk is tokenised on a background thread."""
        if self.device.type != "cuda" or len(chunks) < 2:
            for start, stop in chunks:
                yield (start, stop), tokenize_texts(self.tokenizer, texts[start:stop], self.max_length)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
            pending = pool.submit(tokenize_texts, self.tokenizer, texts[chunks[0][0] : chunks[0][1]], self.max_length)
            for i, (start, stop) in enumerate(chunks):
                tokens = pending.result()
                if i + 1 < len(chunks):
                    nxt = chunks[i + 1]
                    pending = pool.submit(tokenize_texts, self.tokenizer, texts[nxt[0] : nxt[1]], self.max_length)
                yield (start, stop), tokens

    def _encode_batch(
        self,
        encoder: torch.nn.Module,
        precision: str,
        tokens: Any,
        index: np.ndarray,
        width: int | None = None,
        rows: int | None = None,
    ) -> np.ndarray:
        """Return the pooled embeddings (float32) of rows ``index`` of a tokenised chunk.

        With ``width`` the batch is padded to that many tokens, and with ``rows`` filled up to
        that many rows (repeating its first row; the extra outputs are dropped), so every batch
        of a bucket has the same shape whichever users it holds.
        """
        n = len(index)
        if rows is not None and rows > n:
            index = np.concatenate([index, np.full(rows - n, index[0], dtype=index.dtype)])
        input_ids, mask = tokens.batch(index)
        if width is not None and width > input_ids.shape[1]:
            extra = width - input_ids.shape[1]
            input_ids = torch.nn.functional.pad(input_ids, (0, extra), value=tokens.pad_id)
            mask = torch.nn.functional.pad(mask, (0, extra), value=0)
        if self.device.type == "cuda":
            input_ids = input_ids.pin_memory().to(self.device, non_blocking=True)
            mask = mask.pin_memory().to(self.device, non_blocking=True)
        cpu_bf16 = precision == "bf16" and self.device.type == "cpu"
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16) if cpu_bf16 else nullcontext():
            hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return mean_pool(hidden, mask).cpu().numpy()[:n]

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the bundle to ``directory`` (created); return its path.

        Raises ``ModelError`` when ``directory`` already holds a bundle and ``overwrite``
        is false.
        """
        from safetensors.torch import save_file

        path = Path(directory)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise ModelError(f"{path} is not empty: save the model to a new folder or pass overwrite=True")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        encoder_path = path / ENCODER_DIR
        self.regressor.encoder.save_pretrained(str(encoder_path))
        self.tokenizer.save_pretrained(str(encoder_path))
        head_state = {k: v.detach().to("cpu").contiguous() for k, v in self.regressor.head.state_dict().items()}
        save_file(head_state, str(path / HEAD_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        files = {
            file.relative_to(path).as_posix(): sha256_file(file)
            for file in sorted(path.rglob("*"))
            if file.is_file()
        }
        meta = dict(self.meta)
        meta["files"] = files
        meta["format_version"] = FORMAT_VERSION
        (path / BUNDLE_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        self.meta = meta
        logger.info("saved model bundle to %s (%d files, loss=%s)", path, len(files) + 1, self.loss)
        return path

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> SpendModel:
        """Return the model saved in ``directory``, on ``device`` ("auto", "cpu" or "cuda").

        Raises ``ModelError`` naming the missing or corrupt file (bundle.json, head.safetensors,
        a file under encoder/) and saying to retrain or pick another version; ``ConfigError``
        for a bad device.
        """
        from safetensors.torch import load_file

        path = Path(directory)
        if not path.is_dir():
            raise ModelError(f"model bundle folder {path} does not exist: {_FIX}")
        meta = _read_meta(path)
        _verify_files(path, meta)
        tokenizer = load_tokenizer(path / ENCODER_DIR)
        encoder = load_encoder(path / ENCODER_DIR)
        head_meta = meta["head"]
        try:
            head = SpendHead(
                int(head_meta["in_dim"]), int(head_meta["hidden_dim"]), int(head_meta["out_dim"]),
                float(head_meta.get("dropout", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path / BUNDLE_JSON}: 'head' is malformed ({exc!r}); {_FIX}") from exc
        try:
            head.load_state_dict(load_file(str(path / HEAD_FILE)), strict=True)
        except Exception as exc:  # SafetensorError, RuntimeError on shape mismatch
            raise ModelError(f"{path / HEAD_FILE} is corrupt or does not match bundle.json ({exc}); {_FIX}") from exc
        columns = model_columns(list(meta["feature_columns"]), meta.get("hybrid")) if meta["use_features"] else []
        normaliser = FeatureNormaliser.from_dict(columns, meta["normaliser"]) if columns else FeatureNormaliser()
        hidden = int(encoder.config.hidden_size)
        if head.in_dim != hidden + len(columns) or head.out_dim != LOSS_FUNCTIONS[meta["loss"]].outputs:
            raise ModelError(
                f"{path}: head shape ({head.in_dim} -> {head.out_dim}) does not fit the encoder width {hidden}, "
                f"{len(columns)} features and loss {meta['loss']!r}; {_FIX}"
            )
        regressor = SpendRegressor(encoder, head, len(columns))
        target = resolve_device(device)
        regressor.to(target).eval()
        logger.info("loaded model bundle %s (loss=%s, %d features) on %s", path, meta["loss"], len(columns), target)
        return cls(regressor, tokenizer, normaliser, meta, target)


def _read_meta(path: Path) -> dict[str, Any]:
    """Return the checked ``bundle.json`` of the bundle at ``path``; raises ``ModelError``."""
    meta_path = path / BUNDLE_JSON
    if not meta_path.is_file():
        raise ModelError(f"{meta_path} is missing: {path} is not a complete model bundle; {_FIX}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path} is corrupt ({exc}); {_FIX}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path} is corrupt (not a JSON object); {_FIX}")
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelError(f"{meta_path} lacks {missing}; {_FIX}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ModelError(
            f"{meta_path} has format_version {meta['format_version']!r}, this spendpred reads {FORMAT_VERSION}: "
            "use a matching spendpred version or retrain the model"
        )
    if meta["loss"] not in LOSS_FUNCTIONS:
        raise ModelError(f"{meta_path}: unknown loss {meta['loss']!r}; {_FIX}")
    if meta["pooling"] != "mean":
        raise ModelError(f"{meta_path}: unknown pooling {meta['pooling']!r}; {_FIX}")
    if not isinstance(meta["files"], dict) or HEAD_FILE not in meta["files"]:
        raise ModelError(f"{meta_path}: 'files' does not list {HEAD_FILE}; {_FIX}")
    return meta


def _verify_files(path: Path, meta: dict[str, Any]) -> None:
    """Check every file listed in ``meta['files']`` exists with its sha256; raises ``ModelError``."""
    root = path.resolve()
    for name, expected in sorted(meta["files"].items()):
        file = (path / name).resolve()
        if root not in file.parents:
            raise ModelError(f"{path / BUNDLE_JSON} lists a file outside the bundle ({name!r}); {_FIX}")
        if not file.is_file():
            raise ModelError(f"{path / name} is missing from the model bundle; {_FIX}")
        if sha256_file(file) != expected:
            raise ModelError(f"{path / name} is corrupt (its sha256 does not match bundle.json); {_FIX}")
    if not (path / ENCODER_DIR / "config.json").is_file():
        raise ModelError(f"{path / ENCODER_DIR / 'config.json'} is missing from the model bundle; {_FIX}")

