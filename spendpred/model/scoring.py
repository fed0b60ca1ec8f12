"""Inference settings for batch scoring: numeric precision, int8 quantisation and CPU threads.

``SpendModel.predict`` runs the encoder in one of these precisions:

- ``fp32``: plain float32 (the reference; what training evaluates with on CPU).
- ``bf16``: on CUDA the encoder's weights are cast to bfloat16 once (a copy kept beside the
  fp32 model), so no per-batch autocast casts; on a CPU bf16 autocast (matmuls in bf16,
  accumulation and LayerNorm in float32: casting the weights there moved the mean calibrated
  score by 0.1%). Mean pooling and the head run in float32. On CUDA this is the production default; on a CPU it is only fast where
  oneDNN has native bf16 kernels (AVX512-BF16 or AMX), see ``cpu_has_native_bf16``.
- ``int8``: CPU only. The encoder's ``nn.Linear`` layers are replaced by dynamically
  quantised int8 ones (``torch.ao.quantization.quantize_dynamic``: int8 weights per output
  channel, activations quantised per batch tensor, so a user's score also moves slightly
  with the other users in its batch). It is an approximation, so it is opt-in.
- ``auto``: ``bf16`` on CUDA (when supported) and on a CPU with native bf16 kernels,
  else ``fp32``.

Why ``auto`` is not int8 on a CPU (bench/score_throughput.py, all-MiniLM-L6-v2, same
threads). On a 2-core AVX512-BF16 machine, bf16 scored 1.3-1.9x faster than fp32 and kept
the order (Spearman vs fp32 0.999994+, top-10% identical, median shift 0.03% of the mean
score); int8 was faster again (1.2-1.8x over bf16). On a 2-core AVX2-only machine (no
native bf16, so ``auto`` is fp32) int8 is 1.45x fp32. Either way int8 moves scores more
(Spearman 0.997-0.9993, 1-1.5% of the top 10% changes, median shift 1.3-1.9% of the mean
score, and the shift depends on the batch), which would show up as spurious tier changes
in the churn feed. Choose ``int8`` explicitly where that trade is wanted.

Mean pooling and the head always run in float32.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

from spendpred.config import available_cores
from spendpred.errors import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
"""Accepted values of ``precision`` in ``SpendModel.predict``."""

CPU_BATCH_SIZE = 32
"""Default users per forward pass on a CPU: about 2,000 tokens a batch at the template's ~60 tokens
a user, which keeps a layer's activations in cache (on a 2-core AVX2 machine batch 32 scored 8-15%
faster than 64 in every interleaved repeat); sorted batches waste no padding."""

CUDA_BATCH_SIZE = 256
"""Default users per forward pass on CUDA."""


def cpu_has_native_bf16() -> bool:
    """Return True when oneDNN runs bf16 matmuls natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return the concrete precision (``fp32``, ``bf16`` or ``int8``) for ``precision`` on ``device``.

    Raises ``ConfigError`` naming the setting ``precision`` when it is unknown, or ``int8``
    is asked for on a non-CPU device (dynamic quantisation runs on CPUs only).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not supported: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(
            f"precision='int8' runs on a CPU only but the model is on {device}: "
            "use precision='bf16' (or 'auto') on CUDA, or move the model with .to('cpu')"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision='bf16' but {device} does not support bfloat16: use precision='fp32'")
    return precision


def default_batch_size(device: torch.device) -> int:
    """Return the default users per forward pass on ``device``."""
    return CUDA_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def quantize_encoder(encoder: nn.Module) -> nn.Module:
    """Return an int8 dynamically quantised copy of ``encoder`` (its ``nn.Linear`` layers; CPU only).

    The original module is left unchanged. Raises ``ConfigError`` when this torch build has
    no quantised int8 engine.
    """
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if not engines:
        raise ConfigError(
            "precision='int8' needs a torch build with a quantised engine (fbgemm/x86/onednn): use 'fp32' or 'bf16'"
        )
    with warnings.catch_warnings():
        # torch >= 2.10 warns that eager-mode quantisation is moving to torchao; it still works.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig

        quantized = torch.ao.quantization.quantize_dynamic(
            encoder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False
        )
    quantized.eval()
    return quantized


@contextmanager
def cpu_threads(num_threads: int | None) -> Iterator[int]:
    """Run the block with ``num_threads`` torch intra-op threads; yield the count used.

    ``None`` keeps torch's current setting but caps it at ``available_cores()`` (torch counts
    the host's cores, which oversubscribes a container or a pinned worker). The previous
    setting is restored afterwards. Raises ``ConfigError`` when ``num_threads`` is below 1.
    """
    if num_threads is not None and num_threads < 1:
        raise ConfigError(
            f"num_threads={num_threads} must be >= 1 (or None: torch's setting, capped at the cores available)"
        )
    previous = torch.get_num_threads()
    wanted = num_threads if num_threads is not None else min(previous, available_cores())
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
