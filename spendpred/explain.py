"""Why is this user high? Per-user attributions through the real model, and reason codes.

**Attributions** (:func:`attribute`). The published score of a user is
``F(text, x) = anchor * calibration(predict_spend(head(mean_pool(encoder(text)), x)))``; it is
attributed in currency with Captum's ``IntegratedGradients`` along one straight path, from a
baseline input to the user's input, through the whole model (encoder, pooling, head, the ZILN
expectation and the Poisson calibration, all in float32 on the model's device):

* the head's numeric inputs ``x`` (the snapshot features and the hybrid ones, normalised) go
  from the baseline 0 (the average training user: every z-score 0) to the user's values; one
  attribution per head column;
* the text goes, in the encoder's word-embedding space, from a text of the same length whose
  content tokens are all ``[PAD]`` (``[CLS]``/``[SEP]`` and the attention mask kept, so no
  position moves) to the user's tokens; each token's attribution is the sum over its embedding
  dimensions, and the tokens are mapped back to the segments ``textify`` rendered (which
  order, category, search or review; :func:`spendpred.textify.segments`). Their total is the
  "behaviour text" part, the same quantity the head sees through the pooled embedding.

Completeness: the attributions add up to ``F(user) - F(baseline)`` up to the integral's
discretisation (Gauss-Legendre, ``N_STEPS``); a user whose gap exceeds ``tolerance(...)`` is
attributed again with ``RETRY_STEPS`` steps, and the gap left is stored (``delta``) and
logged. Because the calibration and the trend anchor are inside ``F``, no linearisation is
needed: every contribution is already in the currency of ``predicted_spend``.

**Reasons** (:func:`reasons`): the contributions grouped into readable items (a numeric
feature; the text's orders, each category, each distinct search query, the reviews, the
fixed sentences), each rendered from the versioned template ``REASON_TEMPLATE_VERSION`` with
its signed size in currency, and three kept (:func:`reason_items`: the largest of those that move
the prediction from the baseline towards where it is). PII-free: queries
and categories come from the rendered text (already scrubbed by ``textify``), are scrubbed
again and cut short; a review shows its rating only, never its body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spendpred.errors import ConfigError, ModelError
from spendpred.textify import Segment, scrub, segments

logger = logging.getLogger(__name__)

REASON_TEMPLATE_VERSION = "v3"
"""Version of the reason phrases and their choice (:func:`feature_phrase`, :func:`reason_items`): change it with any
wording or selection change. v2 added the one phrase ``TEXT_PHRASE`` (the nightly's unsplit text); v3 keeps every
phrase and chooses the reasons in the direction of ``prediction - baseline`` (v1 and v2: the largest absolute)."""
TEXT_KEY = "text:activity"
"""The reason key of the whole behaviour text when it is not split by segment."""
TEXT_PHRASE = "recent activity (orders, searches, reviews)"
"""The phrase of ``TEXT_KEY``."""
TOP_REASONS = 3
"""Reasons kept per user."""
N_STEPS = 32
"""Integrated-gradients steps (Gauss-Legendre) per user."""
HEAD_STEPS = 8
"""Integrated-gradients steps (Gauss-Legendre) per user of the head-only path (:func:`attribute_head`). The head is a
small smooth MLP: with the MiniLM champion of ``bench/explain_cost.py --steps-check`` (600 users of a 100,000-user
night), 8 steps gave the same reasons as 128 to the cent for every user, each contribution within 5e-5 of the 128-step
one and every completeness gap under 3e-4 (tolerance at least 0.05); 32 steps cost 4x the head pass for float32 noise
(``bench/README.md``)."""
RETRY_STEPS = 128
"""Steps of the second try for a user whose completeness gap exceeds the tolerance."""
ABS_TOLERANCE = 0.05
"""Completeness tolerance, absolute part (currency units)."""
REL_TOLERANCE = 0.01
"""Completeness tolerance, relative part (of ``|F(user) - F(baseline)|``)."""
BATCH_USERS = 8
"""Users attributed together (each expanded to ``N_STEPS`` interpolated inputs)."""
HEAD_BATCH_USERS = 256
"""Users attributed together through the head only (:func:`attribute_head`; ``HEAD_STEPS`` rows each through a small MLP)."""
SPLIT_BATCH_USERS = 32
"""Users per forward and backward pass of the nightly's approximate text split (:func:`attribute_head`)."""
BASELINE_BATCH = 64
"""Distinct baseline texts encoded together (:func:`baseline_pooled`)."""
QUERY_CHARS = 32
"""Longest search query a reason shows (cut at a word)."""


def tolerance(prediction: Any, baseline: Any) -> Any:
    """Return the completeness tolerance of one user, ``max(ABS_TOLERANCE, REL_TOLERANCE * |prediction - baseline|)``
    (a float; arrays of users give an array)."""
    return np.maximum(ABS_TOLERANCE, REL_TOLERANCE * np.abs(np.subtract(prediction, baseline)))


@dataclass
class UserAttribution:
    """One user's attribution: every part of ``prediction - baseline`` (currency) and the gap left."""

    user_id: str
    text: str
    prediction: float
    baseline: float
    features: dict[str, float]
    """Per head column (snapshot and hybrid features), in currency."""
    tokens: list[tuple[int, int, float]]
    """``(start, end, contribution)`` per text token (character span in ``text``; special tokens left out)."""
    steps: int = N_STEPS
    raw_values: dict[str, float] = field(default_factory=dict)
    """The user's feature values before normalisation (what a reason shows)."""
    text_lump: float | None = None
    """The text's total when it is not split by token (the nightly's head-only path without a split):
    one item ``TEXT_KEY``; None when ``tokens`` carry the text."""
    method: str = "full"
    """``full`` (:func:`attribute`, through the encoder) or ``head`` (:func:`attribute_head`)."""

    @property
    def text_total(self) -> float:
        """The behaviour text's total contribution."""
        if self.text_lump is not None:
            return float(self.text_lump)
        return float(sum(c for _, _, c in self.tokens))

    @property
    def delta(self) -> float:
        """Completeness gap: sum of all contributions minus ``prediction - baseline``."""
        return float(sum(self.features.values()) + self.text_total - (self.prediction - self.baseline))


# --------------------------------------------------------------------------- the attribution


def _calibrate(spend: Any, calibration: Mapping[str, Any] | None) -> Any:
    """``apply_calibration`` in torch (differentiable): ``exp(a + b * log1p(max(p, 0)))``, the identity without one."""
    import torch

    from spendpred.model.losses import CALIBRATION_METHOD, MAX_LOG_SPEND

    if not calibration or calibration.get("method") != CALIBRATION_METHOD:
        return spend
    a, b = float(calibration["a"]), float(calibration["b"])
    return torch.exp(torch.clamp(a + b * torch.log1p(torch.clamp(spend, min=0.0)), -MAX_LOG_SPEND, MAX_LOG_SPEND))


def _forward(model: Any, factor: float):  # noqa: ANN202 - a closure for Captum
    """The attributed function: word embeddings (and head features) to published currency, per row."""
    import torch

    from spendpred.model.losses import predict_spend
    from spendpred.model.network import mean_pool

    regressor = model.regressor
    calibration = model.meta.get("calibration")

    def forward(embeds: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        *features, mask = rest
        hidden = regressor.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        pooled = mean_pool(hidden, mask)
        raw = regressor.head_forward(pooled, features[0] if features else None)
        return _calibrate(predict_spend(model.loss, raw), calibration) * factor

    return forward


def _word_embeddings(model: Any) -> Any:
    """The encoder's token embedding table (``get_input_embeddings``)."""
    return model.regressor.encoder.get_input_embeddings()



def _check_steps(n_steps: int, batch_users: int) -> None:
    """Raise ``ConfigError`` for a step count under 2 or a batch under 1."""
    if n_steps < 2 or batch_users < 1:
        raise ConfigError(f"n_steps={n_steps} must be >= 2 and batch_users={batch_users} >= 1")


def _inputs(model: Any, frame: pd.DataFrame) -> tuple[list[str], Any, list[str], pd.DataFrame]:
    """Return what both attribution paths read from ``frame``: the texts, the head's normalised
    features (or None), their column names and the raw feature frame (hybrid columns added).

    Raises ``DataError`` for a malformed frame, as scoring does.
    """
    from spendpred.model.features import check_texts
    from spendpred.model.hybrid import HybridFeatures

    texts = check_texts(frame, "explanation input")
    features = model.head_features(frame, "explanation input")
    columns = list(model.normaliser.columns) if features is not None else []
    raw = frame
    if features is not None and model.meta.get("hybrid"):
        raw = HybridFeatures.from_dict(model.meta["hybrid"]).transform(frame)
    return texts, features, columns, raw

def attribute(
    model: Any,
    frame: pd.DataFrame,
    *,
    factor: float = 1.0,
    n_steps: int = N_STEPS,
    batch_users: int = BATCH_USERS,
) -> list[UserAttribution]:
    """Return each row's attribution (``frame``: ``user_id``, ``text`` and the model's feature columns), in order.

    ``model`` is a loaded ``SpendModel``; ``factor`` the night's trend-anchor factor (1 without
    one), so contributions add up to the published score. Users are attributed in batches of
    similar text length; a user whose completeness gap exceeds :func:`tolerance` is attributed
    again with ``RETRY_STEPS`` steps. Raises ``DataError`` for a malformed frame (as scoring
    does) and ``ConfigError`` for a non-positive step or batch count.
    """
    _check_steps(n_steps, batch_users)
    if frame.empty:
        return []
    texts, features, columns, raw = _inputs(model, frame)
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_length, return_offsets_mapping=True,
                              return_attention_mask=False, return_token_type_ids=False)  # fmt: skip
    ids = encoded["input_ids"]
    offsets = encoded["offset_mapping"]
    out: list[UserAttribution | None] = [None] * len(frame)
    order = sorted(range(len(frame)), key=lambda i: (len(ids[i]), i))
    model.regressor.eval()
    for start in range(0, len(order), batch_users):
        rows = order[start : start + batch_users]
        for row, result in zip(rows, _attribute_batch(model, rows, ids, offsets, features, factor, n_steps), strict=True):
            if abs(result.delta) > tolerance(result.prediction, result.baseline) and n_steps < RETRY_STEPS:
                result = _attribute_batch(model, [row], ids, offsets, features, factor, RETRY_STEPS)[0]
            if abs(result.delta) > tolerance(result.prediction, result.baseline):
                logger.warning("attribution of one user leaves a completeness gap of %.4f (tolerance %.4f) after %d steps",
                               result.delta, tolerance(result.prediction, result.baseline), result.steps)  # fmt: skip
            out[row] = result
    user_ids = frame["user_id"].astype(str).tolist()
    for i, result in enumerate(out):
        assert result is not None
        result.user_id, result.text = user_ids[i], texts[i]
        result.features = dict(zip(columns, result.features.values(), strict=True)) if columns else {}
        result.raw_values = {c: float(raw[c].iloc[i]) for c in columns if c in raw.columns}
    return [r for r in out if r is not None]


def _attribute_batch(
    model: Any,
    rows: Sequence[int],
    ids: Sequence[Sequence[int]],
    offsets: Sequence[Sequence[tuple[int, int]]],
    features: np.ndarray | None,
    factor: float,
    n_steps: int,
    ends: bool = True,
) -> list[UserAttribution]:
    """Integrated gradients for the users ``rows`` (padded to the longest), one :class:`UserAttribution` each.

    ``ends`` False skips the two forward passes of the prediction and the baseline (left NaN):
    what the nightly's one-step text split does without.
    """
    import torch
    from captum.attr import IntegratedGradients

    device = model.device
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    special = set(tokenizer.all_special_ids)
    width = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        input_ids[k, : len(ids[r])] = torch.tensor(ids[r], dtype=torch.long)
        mask[k, : len(ids[r])] = 1
    keep = torch.tensor([[int(t) in special for t in row] for row in input_ids.tolist()], dtype=torch.bool)
    base_ids = torch.where(keep | (mask == 0), input_ids, torch.full_like(input_ids, pad_id))
    input_ids, base_ids, mask = input_ids.to(device), base_ids.to(device), mask.to(device)
    table = _word_embeddings(model)
    with torch.no_grad():
        embeds, base_embeds = table(input_ids).float(), table(base_ids).float()
    inputs: tuple[torch.Tensor, ...] = (embeds,)
    baselines: tuple[torch.Tensor, ...] = (base_embeds,)
    if features is not None:
        x = torch.from_numpy(np.ascontiguousarray(features[list(rows)])).to(device)
        inputs, baselines = (embeds, x), (base_embeds, torch.zeros_like(x))
    forward = _forward(model, factor)
    ig = IntegratedGradients(forward)
    with torch.enable_grad():
        attributions = ig.attribute(inputs, baselines=baselines, additional_forward_args=(mask,), n_steps=n_steps,
                                    method="gausslegendre", internal_batch_size=max(n_steps, 1) * len(rows))  # fmt: skip
    if ends:
        with torch.no_grad():
            predicted = forward(*inputs, mask).double().cpu().numpy()
            base = forward(*baselines, mask).double().cpu().numpy()
    else:
        predicted = base = np.full(len(rows), np.nan)
    token_parts = attributions[0].sum(dim=-1).double().cpu().numpy()
    feature_parts = attributions[1].double().cpu().numpy() if features is not None else None
    results = []
    for k, r in enumerate(rows):
        tokens = [
            (int(s), int(e), float(token_parts[k, j]))
            for j, (s, e) in enumerate(offsets[r])
            if j < len(ids[r]) and int(ids[r][j]) not in special
        ]
        feats = {str(j): float(v) for j, v in enumerate(feature_parts[k])} if feature_parts is not None else {}
        results.append(UserAttribution("", "", float(predicted[k]), float(base[k]), feats, tokens, n_steps))
    return results


# --------------------------------------------------------------------------- the nightly's head-only attribution


def _head_forward(model: Any, factor: float):  # noqa: ANN202 - a closure for Captum
    """The attributed function of the head-only path: pooled text embedding (and head features) to published currency."""
    from spendpred.model.losses import predict_spend

    regressor = model.regressor
    calibration = model.meta.get("calibration")

    def forward(pooled: Any, *features: Any) -> Any:
        raw = regressor.head_forward(pooled, features[0] if features else None)
        return _calibrate(predict_spend(model.loss, raw), calibration) * factor

    return forward


def _baseline_ids(model: Any, ids: Sequence[Sequence[int]]) -> list[bytes]:
    """Each user's baseline token ids, as :func:`attribute` builds them (content tokens ``[PAD]``, special tokens
    kept), as little-endian int64 bytes (what :func:`baseline_key` hashes): one pass over every token at once."""
    import itertools

    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype="<i8", count=int(lengths.sum()))
    base = np.where(np.isin(flat, np.asarray(tokenizer.all_special_ids, dtype="<i8")), flat, pad_id).astype("<i8")
    return [part.tobytes() for part in np.split(base, np.cumsum(lengths)[:-1])] if len(ids) else []


def baseline_key(ids: Sequence[int] | bytes) -> bytes:
    """The key of one baseline token sequence (ids, or their little-endian int64 bytes) in a baseline store
    (:func:`baseline_pooled`'s ``known``): 16 bytes of SHA-256."""
    raw = ids if isinstance(ids, bytes) else np.asarray(ids, dtype="<i8").tobytes()
    return hashlib.sha256(raw).digest()[:16]


def baseline_pooled(model: Any, ids: Sequence[Sequence[int]], known: dict[bytes, np.ndarray] | None = None) -> np.ndarray:
    """Return the pooled embedding (float32, ``(len(ids), hidden)``) of each user's baseline text.

    The baseline text is the one :func:`attribute` starts from (the user's token sequence with
    every content token replaced by ``[PAD]``, special tokens and positions kept), encoded in
    float32 like :func:`attribute`'s path; it depends on the token count only (and on special
    tokens such as ``[UNK]`` that stay), so each distinct baseline is encoded once, a forward
    pass without gradients. ``known`` (``{baseline_key: pooled}``, for this model and device
    only) is a store carried between nights: baselines found there are not encoded again, and
    the ones encoded are added to it.
    """
    import torch

    from spendpred.model.network import mean_pool

    keys = _baseline_ids(model, ids)
    store = known if known is not None else {}
    found: dict[bytes, np.ndarray] = {}
    for key in set(keys):
        hit = store.get(baseline_key(key))
        if hit is not None and hit.shape == (model.hidden_size,):
            found[key] = hit
    distinct = [np.frombuffer(k, dtype="<i8") for k in sorted(set(keys) - set(found), key=lambda k: (len(k), k))]
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    model.regressor.eval()
    for start in range(0, len(distinct), BASELINE_BATCH):
        chunk = distinct[start : start + BASELINE_BATCH]
        width = max(len(k) for k in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for k, key in enumerate(chunk):
            input_ids[k, : len(key)] = torch.from_numpy(key.astype(np.int64))
            mask[k, : len(key)] = 1
        input_ids, mask = input_ids.to(model.device), mask.to(model.device)
        with torch.no_grad():
            embeds = _word_embeddings(model)(input_ids).float()
            hidden = model.regressor.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            pooled = mean_pool(hidden, mask).float().cpu().numpy()
        found.update((key.tobytes(), row) for key, row in zip(chunk, pooled, strict=True))
        store.update((baseline_key(key.tobytes()), row) for key, row in zip(chunk, pooled, strict=True))
    out = np.empty((len(keys), model.hidden_size), dtype=np.float32)
    for i, key in enumerate(keys):
        out[i] = found[key]
    return out


def _head_batch(
    model: Any, pooled: np.ndarray, base: np.ndarray, features: np.ndarray | None, factor: float, n_steps: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Integrated gradients through the head for a batch: ``(text part, feature parts, prediction, baseline prediction)``.

    The same quadrature as Captum's ``IntegratedGradients(method="gausslegendre")`` (nodes
    ``(1 + x) / 2``, weights ``w / 2`` of ``leggauss(n_steps)``), written out: every step of
    every user in one forward and one backward pass through the head (rows are independent in
    eval mode, so the gradient of the sum is each row's gradient), without Captum's per-call
    overhead, which was most of the head path's time.
    """
    import torch

    device = model.device
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas = torch.tensor((1.0 + nodes) / 2.0, dtype=torch.float32, device=device).view(-1, 1, 1)
    step = torch.tensor(weights / 2.0, dtype=torch.float32, device=device).view(-1, 1, 1)
    p = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)).to(device)
    p0 = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32)).to(device)
    x = None if features is None else torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    forward = _head_forward(model, factor)
    n = len(pooled)
    with torch.enable_grad():
        path_p = (p0.unsqueeze(0) + alphas * (p - p0).unsqueeze(0)).reshape(n_steps * n, -1).requires_grad_(True)
        path = [path_p]
        if x is not None:
            path.append((alphas * x.unsqueeze(0)).reshape(n_steps * n, -1).requires_grad_(True))
        grads = torch.autograd.grad(forward(*path).sum(), path)
    with torch.no_grad():
        text = ((grads[0].view(n_steps, n, -1) * step).sum(dim=0) * (p - p0)).sum(dim=-1).double().cpu().numpy()
        feats = None if x is None else ((grads[1].view(n_steps, n, -1) * step).sum(dim=0) * x).double().cpu().numpy()
        predicted = forward(p, *([] if x is None else [x])).double().cpu().numpy()
        at_base = forward(p0, *([] if x is None else [torch.zeros_like(x)])).double().cpu().numpy()
    return text, feats, predicted, at_base


def attribute_head(
    model: Any,
    frame: pd.DataFrame,
    *,
    factor: float = 1.0,
    pooled: np.ndarray | None = None,
    split_text: bool = False,
    n_steps: int = HEAD_STEPS,
    batch_users: int = HEAD_BATCH_USERS,
    baselines: dict[bytes, np.ndarray] | None = None,
) -> list[UserAttribution]:
    """The nightly's attribution: integrated gradients through the head only, one per row of ``frame``, in order.

    The inputs are the user's pooled text embedding (``pooled``: rows aligned with ``frame``,
    e.g. from the embedding cache; None: :meth:`SpendModel.encode` of the texts, one forward
    pass with the scoring precision) and the normalised head features; the baseline is the
    one :func:`attribute` uses, the features at 0 and the pooled embedding of the baseline text
    (:func:`baseline_pooled`), so the baseline prediction is the same and the attributions add
    up to ``F(user) - F(baseline)`` within :func:`tolerance` (a user above it is attributed
    again with ``RETRY_STEPS`` steps; the head is a small MLP, so this is cheap). The text's
    total is one number (no encoder pass is differentiated): one item ``TEXT_KEY``, the nightly's
    default (``pipeline.nightly.NIGHTLY_TEXT_SPLIT``). With ``split_text`` it is spread
    over the tokens in proportion to one forward and backward pass through the encoder
    (integrated gradients of :func:`attribute` with one Gauss-Legendre step: the gradient at the
    path's midpoint times the input minus the baseline), so :func:`text_items` groups it by
    segment as usual; this split is approximate (the exact one is :func:`attribute`'s, what
    ``spendpred explain`` prints); where the one-step parts add up to zero or to the opposite sign
    of the total, the text stays one item ``TEXT_KEY``. ``baselines`` is :func:`baseline_pooled`'s
    store of baseline embeddings for this model (read and extended). Raises as :func:`attribute`.
    """
    _check_steps(n_steps, batch_users)
    if frame.empty:
        return []
    texts, features, columns, raw = _inputs(model, frame)
    if pooled is None:
        pooled = model.encode(texts)
    pooled = np.asarray(pooled, dtype=np.float32)
    if pooled.shape != (len(frame), model.hidden_size):
        raise ModelError(f"pooled embeddings have shape {pooled.shape}, the frame needs ({len(frame)}, {model.hidden_size})")
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_length, return_offsets_mapping=split_text,
                              return_attention_mask=False, return_token_type_ids=False)  # fmt: skip
    ids = encoded["input_ids"]
    offsets = encoded["offset_mapping"] if split_text else None
    base = baseline_pooled(model, ids, baselines)
    model.regressor.eval()
    n = len(frame)
    text = np.empty(n)
    feats = np.zeros((n, len(columns)))
    predicted, at_base = np.empty(n), np.empty(n)
    steps = np.full(n, n_steps)
    for start in range(0, n, batch_users):
        rows = np.arange(start, min(start + batch_users, n))
        part = _head_batch(model, pooled[rows], base[rows], None if features is None else features[rows], factor, n_steps)
        text[rows], predicted[rows], at_base[rows] = part[0], part[2], part[3]
        if part[1] is not None:
            feats[rows] = part[1]
    limits = tolerance(predicted, at_base)
    gaps = feats.sum(axis=1) + text - (predicted - at_base)
    retry = np.flatnonzero(np.abs(gaps) > limits).tolist() if n_steps < RETRY_STEPS else []
    for start in range(0, len(retry), batch_users):
        rows = np.array(retry[start : start + batch_users])
        part = _head_batch(model, pooled[rows], base[rows], None if features is None else features[rows], factor, RETRY_STEPS)
        text[rows], steps[rows] = part[0], RETRY_STEPS
        if part[1] is not None:
            feats[rows] = part[1]
    gaps = feats.sum(axis=1) + text - (predicted - at_base)
    for i in np.flatnonzero(np.abs(gaps) > limits).tolist():
        logger.warning("head attribution of one user leaves a completeness gap of %.4f (tolerance %.4f) after %d steps",
                       gaps[i], limits[i], steps[i])  # fmt: skip
    tokens: list[list[tuple[int, int, float]] | None] = [None] * n
    if split_text:
        order = sorted(range(n), key=lambda i: (len(ids[i]), i))
        for start in range(0, n, SPLIT_BATCH_USERS):
            rows_ = order[start : start + SPLIT_BATCH_USERS]
            for i, one in zip(rows_, _attribute_batch(model, rows_, ids, offsets, features, factor, 1, ends=False), strict=True):
                tokens[i] = _scaled(one.tokens, float(text[i]))
    user_ids = frame["user_id"].astype(str).tolist()
    shown = [c for c in columns if c in raw.columns]
    values = raw[shown].to_numpy(dtype=np.float64).tolist() if shown else [[] for _ in range(n)]
    out = []
    for i in range(n):
        result = UserAttribution(
            user_ids[i], texts[i], float(predicted[i]), float(at_base[i]),
            dict(zip(columns, feats[i].tolist(), strict=True)) if columns else {},
            tokens[i] or [], int(steps[i]), dict(zip(shown, values[i], strict=True)),
            text_lump=None if tokens[i] is not None else float(text[i]), method="head",
        )  # fmt: skip
        out.append(result)
    return out


def _scaled(tokens: list[tuple[int, int, float]], total: float) -> list[tuple[int, int, float]] | None:
    """``tokens`` rescaled to add up to ``total``; None when their sum is zero or of the other sign (no proportional split)."""
    summed = math.fsum(c for _, _, c in tokens)
    if not tokens or summed == 0.0 or not math.isfinite(summed) or (total != 0.0 and (summed > 0) != (total > 0)):
        return None
    scale = total / summed
    scaled = [(s, e, c * scale) for s, e, c in tokens]
    if scaled:  # the last token takes the rounding, so the parts add up to the total exactly
        s, e, c = scaled[-1]
        scaled[-1] = (s, e, c + (total - math.fsum(v for _, _, v in scaled)))
    return scaled


# --------------------------------------------------------------------------- global importance (the retrain's view)

GLOBAL_USERS = 64
"""Held-out users the retrain attributes for the global importance (:func:`write_global_importance`)."""
IMPORTANCE_TABLE = "global_importance.json"
"""The global importance table in a retrain's evaluation folder (MLflow's table format: ``columns`` and ``data``)."""
IMPORTANCE_PLOT = "global_importance.png"
"""Its bar chart in the same folder."""
IMPORTANCE_COLUMNS: tuple[str, ...] = ("level", "name", "mean_abs_attribution", "mean_attribution", "users")
"""The table's columns: ``level`` is ``feature`` (a head column, or ``text`` for the whole behaviour text) or ``kind``
(a behaviour kind of the text: orders, categories, searches, reviews, totals, tenure, events, other)."""


def item_kind(key: str) -> str:
    """The behaviour kind of a text item key (``text:search:laptop`` -> ``searches``); the key itself for a head column."""
    if not key.startswith("text:"):
        return key
    part = key.split(":", 2)[1]
    return {"orders": "orders", "category": "categories", "search": "searches", "searches": "searches",
            "reviews": "reviews", "activity": "unsplit"}.get(part, part)  # fmt: skip


def global_importance(attributions: Sequence[UserAttribution]) -> pd.DataFrame:
    """Return the mean absolute (and signed) attribution per head column, for the whole text, and per behaviour kind.

    Per user, a kind's contribution is the sum of its text items (:func:`text_items`); the means are over
    the users given (currency). Rows sorted by level (features first), then by mean absolute attribution.
    """
    rows: dict[tuple[str, str], list[float]] = {}
    for a in attributions:
        for column, value in a.features.items():
            rows.setdefault(("feature", column), []).append(value)
        rows.setdefault(("feature", "text"), []).append(a.text_total)
        kinds: dict[str, float] = {}
        for item in text_items(a):  # a text not split by segment is the one kind "unsplit"
            kinds[item_kind(item.key)] = kinds.get(item_kind(item.key), 0.0) + item.contribution
        for kind, value in kinds.items():
            rows.setdefault(("kind", kind), []).append(value)
    n = len(attributions)
    table = pd.DataFrame(
        [{"level": level, "name": name, "mean_abs_attribution": float(np.abs(values).sum() / max(n, 1)),
          "mean_attribution": float(np.sum(values) / max(n, 1)), "users": n} for (level, name), values in rows.items()],
        columns=list(IMPORTANCE_COLUMNS),
    )  # fmt: skip
    return table.sort_values(["level", "mean_abs_attribution", "name"], ascending=[True, False, True], ignore_index=True)


def write_global_importance(
    model: Any, frame: pd.DataFrame, folder: Any, *, users: int = GLOBAL_USERS, seed: int = 0, exact: bool = False
) -> pd.DataFrame | None:
    """Attribute up to ``users`` rows of ``frame`` (a stable sample) and write their :func:`global_importance` into
    ``folder``: ``IMPORTANCE_TABLE`` (MLflow's table JSON, what ``mlflow.log_table`` writes) and ``IMPORTANCE_PLOT``
    (bars of the 15 largest features and every kind). Returns the table.

    By default through the head with the text split by segment (:func:`attribute_head` with ``split_text``: exact
    integrated gradients per head column and for the text's total, the split by kind approximate; about three
    encoder passes a user); ``exact`` uses :func:`attribute` (through the encoder, 32 steps a user: on a CPU with
    a 6-layer encoder minutes for 64 users, too slow for every retrain).

    What the retrain logs with its evaluation (``evaluation/`` of the MLflow run) and the Spend tiers page shows for
    the champion. None (logged, nothing written) for a model :func:`check_model` refuses. Raises as :func:`attribute`.
    """
    from pathlib import Path

    from spendpred.files import write_json_atomic

    try:
        check_model(model)
    except ModelError as exc:
        logger.warning("no global importance for this model: %s", exc)
        return None
    sample = frame if len(frame) <= users else frame.sample(n=users, random_state=seed).sort_values("user_id")
    sample = sample.reset_index(drop=True)
    table = global_importance(attribute(model, sample) if exact else attribute_head(model, sample, split_text=True))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / IMPORTANCE_TABLE, {"columns": list(table.columns), "data": table.values.tolist()})
    _importance_plot(table, folder / IMPORTANCE_PLOT)
    return table


def read_global_importance(path: Any) -> pd.DataFrame | None:
    """The table :func:`write_global_importance` wrote at ``path`` (None when it is missing or unreadable)."""
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        table = pd.DataFrame(data["data"], columns=data["columns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return table if set(IMPORTANCE_COLUMNS) <= set(table.columns) else None


def _importance_plot(table: pd.DataFrame, path: Any) -> None:
    """Horizontal bars of mean |attribution|: the 15 largest features, then the behaviour kinds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    features = table[table["level"] == "feature"].head(15)
    kinds = table[table["level"] == "kind"]
    figure = Figure(figsize=(7.0, 6.0), dpi=100)
    FigureCanvasAgg(figure)
    for k, (part, title) in enumerate(((features, "features (head columns and the whole text)"), (kinds, "behaviour kinds of the text"))):
        axes = figure.add_subplot(2, 1, k + 1)
        axes.barh(part["name"].tolist()[::-1], part["mean_abs_attribution"].tolist()[::-1], color="#0969da")
        axes.set_title(f"mean |attribution| per user: {title}", fontsize=9)
        axes.tick_params(labelsize=7)
    figure.tight_layout()
    figure.savefig(path)


# --------------------------------------------------------------------------- removing items (faithfulness checks)


def ablate(model: Any, frame: pd.DataFrame, removed: Sequence[Any], *, factor: float = 1.0, batch_users: int = 32) -> np.ndarray:
    """Return the published-currency prediction of each row of ``frame`` with the items ``removed[i]`` set to their baseline.

    Items are the keys of :func:`all_items`: a head column goes to its baseline 0 (normalised), a text
    item's tokens (grouped as :func:`text_items` groups them; ``TEXT_KEY`` is every content token) to
    ``[PAD]``, special tokens and positions kept, which is the baseline :func:`attribute` integrates from.
    An empty set gives the prediction itself (``attribute``'s ``prediction``). What the faithfulness
    benchmark removes (``bench/explain_faithfulness.py``). Raises as :func:`attribute`.
    """
    import torch

    if len(removed) != len(frame):
        raise ConfigError(f"removed has {len(removed)} item sets for {len(frame)} rows: give one set per row")
    if frame.empty:
        return np.zeros(0)
    texts, features, columns, _raw = _inputs(model, frame)
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_length, return_offsets_mapping=True,
                              return_attention_mask=False, return_token_type_ids=False)  # fmt: skip
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    special = set(tokenizer.all_special_ids)
    index = {c: j for j, c in enumerate(columns)}
    forward = _forward(model, factor)
    table = _word_embeddings(model)
    model.regressor.eval()
    out = np.empty(len(frame))
    for start in range(0, len(frame), batch_users):
        rows = list(range(start, min(start + batch_users, len(frame))))
        width = max(len(encoded["input_ids"][r]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        x = None if features is None else np.array(features[rows], dtype=np.float32, copy=True)
        for k, r in enumerate(rows):
            gone = {str(key) for key in removed[r]}
            seq = list(encoded["input_ids"][r])
            if any(key.startswith("text:") for key in gone):
                spans = segments(texts[r])
                for j, (s_, _e) in enumerate(encoded["offset_mapping"][r]):
                    if seq[j] not in special and (TEXT_KEY in gone or _item_key(_segment_of(spans, s_)) in gone):
                        seq[j] = pad_id
            ids[k, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[k, : len(seq)] = 1
            if x is not None:
                for key in gone:
                    if key in index:
                        x[k, index[key]] = 0.0
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.no_grad():
            embeds = table(ids).float()
            args = (embeds,) if x is None else (embeds, torch.from_numpy(x).to(model.device))
            out[rows] = forward(*args, mask).double().cpu().numpy()
    return out


# --------------------------------------------------------------------------- carrying reasons between nights

FINGERPRINT_BYTES = 16
"""Bytes of an input fingerprint (:func:`input_fingerprints`)."""
BASELINES_META_KEY = b"spendpred.explain.baselines"
"""Parquet metadata key under which a reasons file carries the baseline store (:func:`pack_baselines`)."""


def input_fingerprints(frame: pd.DataFrame, context: str) -> list[bytes]:
    """Return one fingerprint per row of ``frame``: SHA-256 (first ``FINGERPRINT_BYTES``) of ``context``, the user id,
    the text's digest (the one the embedding cache keys by, ``embeddings.text_digests``) and every other
    column's value (the numeric columns by name as one row of float64, then the others by name as text).

    ``context`` names everything besides the row that the reasons depend on (model version, template version,
    method, steps, text split, anchor factor); equal fingerprints mean equal reasons. Raises ``DataError``
    for a frame without ``user_id`` or ``text`` (as scoring does).
    """
    from spendpred.embeddings import text_digests
    from spendpred.model.features import check_texts

    texts = check_texts(frame, "explanation input")
    digests = text_digests(texts)
    others = sorted(c for c in frame.columns if c not in ("user_id", "text"))
    numeric = [c for c in others if pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    strings = [c for c in others if c not in numeric]
    rows = np.ascontiguousarray(frame[numeric].to_numpy(dtype="<f8")) if numeric else np.empty((len(frame), 0), "<f8")
    words = [frame[c].astype(str).tolist() for c in strings]
    head = hashlib.sha256("\x00".join([context, *numeric, "", *strings]).encode()).digest()
    user_ids = frame["user_id"].astype(str).tolist()
    out = []
    for i, user in enumerate(user_ids):
        sha = hashlib.sha256(head)
        sha.update(user.encode("utf-8") + b"\x00" + digests[i] + rows[i].tobytes())
        for column in words:
            sha.update(column[i].encode("utf-8") + b"\x00")
        out.append(sha.digest()[:FINGERPRINT_BYTES])
    return out


def pack_baselines(store: Mapping[bytes, np.ndarray], owner: str) -> bytes:
    """Serialise a baseline store (:func:`baseline_pooled`'s ``known``) for ``owner`` (model version and device) as JSON bytes."""
    keys = sorted(store)
    matrix = np.stack([np.asarray(store[k], dtype="<f4") for k in keys]) if keys else np.zeros((0, 0), dtype="<f4")
    return json.dumps({"owner": owner, "keys": [k.hex() for k in keys], "hidden": int(matrix.shape[1]) if keys else 0,
                       "values": base64.b64encode(matrix.tobytes()).decode("ascii")}).encode()  # fmt: skip


def unpack_baselines(blob: bytes | None, owner: str, hidden: int) -> dict[bytes, np.ndarray]:
    """The baseline store in ``blob`` when it was written for ``owner`` with ``hidden`` dimensions, else empty (never raises)."""
    if not blob:
        return {}
    try:
        data = json.loads(blob)
        if data.get("owner") != owner or int(data.get("hidden", -1)) != int(hidden):
            return {}
        matrix = np.frombuffer(base64.b64decode(data["values"]), dtype="<f4").reshape(len(data["keys"]), int(hidden))
        return {bytes.fromhex(k): matrix[i].astype(np.float32) for i, k in enumerate(data["keys"])}
    except (ValueError, KeyError, TypeError) as exc:
        logger.info("baseline store not used (%s): baselines are encoded again", exc)
        return {}


# --------------------------------------------------------------------------- reason codes


def _n(value: float) -> int:
    return int(round(float(value)))


def _times(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _money(value: float) -> str:
    return f"{float(value):,.0f}" if abs(value) >= 10 else f"{float(value):.2f}"


_FEATURE_PHRASES: dict[str, Any] = {
    "recency_days": lambda v: f"no order for {_times(_n(v), 'day')}" if v >= 30 else f"last order {_times(_n(v), 'day')} ago",
    "tenure_days": lambda v: f"member for {_times(_n(v), 'day')}",
    "frequency_30d": lambda v: f"{_times(_n(v), 'order')} in the last 30 days",
    "frequency_90d": lambda v: f"{_times(_n(v), 'order')} in the last 90 days",
    "frequency_365d": lambda v: f"{_times(_n(v), 'order')} in the last 365 days",
    "frequency_all": lambda v: f"{_times(_n(v), 'order')} in all",
    "monetary_30d": lambda v: f"{_money(v)} spent in the last 30 days",
    "monetary_90d": lambda v: f"{_money(v)} spent in the last 90 days",
    "monetary_365d": lambda v: f"{_money(v)} spent in the last 365 days",
    "monetary_all": lambda v: f"{_money(v)} spent in all",
    "avg_basket": lambda v: f"average basket {_money(v)}",
    "category_diversity": lambda v: f"bought in {_times(_n(v), 'category', 'categories')}",
    "views_30d": lambda v: f"{_times(_n(v), 'view')} in the last 30 days",
    "views_90d": lambda v: f"{_times(_n(v), 'view')} in the last 90 days",
    "clicks_30d": lambda v: f"{_times(_n(v), 'click')} in the last 30 days",
    "clicks_90d": lambda v: f"{_times(_n(v), 'click')} in the last 90 days",
    "add_to_carts_30d": lambda v: f"{_times(_n(v), 'add to cart', 'adds to cart')} in the last 30 days",
    "add_to_carts_90d": lambda v: f"{_times(_n(v), 'add to cart', 'adds to cart')} in the last 90 days",
    "searches_30d": lambda v: f"{_times(_n(v), 'search', 'searches')} in the last 30 days",
    "searches_90d": lambda v: f"{_times(_n(v), 'search', 'searches')} in the last 90 days",
    "wishlists_30d": lambda v: f"{_times(_n(v), 'wishlist add')} in the last 30 days",
    "wishlists_90d": lambda v: f"{_times(_n(v), 'wishlist add')} in the last 90 days",
    "review_count": lambda v: f"{_times(_n(v), 'review')} written",
    "mean_rating": lambda v: f"average rating {v:.1f}/5" if v > 0 else "no rating given",
    "days_since_last_event": lambda v: f"last active {_times(_n(v), 'day')} ago",
    "purchase_days": lambda v: f"bought on {_times(_n(v), 'day')}" if v > 0 else "never bought",
    "first_purchase_days": lambda v: f"first order {_times(_n(v), 'day')} ago" if v > 0 else "no first order yet",
    "repeat_value": lambda v: f"repeat purchases of {_money(v)} on average",
    "btyd_p_alive": lambda v: f"{v:.0%} likely still a customer",
    "btyd_purchases": lambda v: f"{v:.1f} purchase days expected over the horizon",
    "btyd_value": lambda v: f"{_money(v)} expected per purchase day",
    "btyd_spend": lambda v: f"BG/NBD forecast {_money(v)}",
    "mean_interval": lambda v: f"buys every {_times(_n(v), 'day')} on average",
    "interval_overdue": lambda v: f"{v:.1f}x the usual time since the last purchase",
    "trend_spend": lambda v: f"spend trend {v:.2f}x (last 90 days vs the year)",
    "trend_frequency": lambda v: f"order trend {v:.2f}x (last 90 days vs the year)",
}


def feature_phrase(column: str, value: float) -> str:
    """Return the phrase of a head column at a user's raw value (template ``REASON_TEMPLATE_VERSION``)."""
    render = _FEATURE_PHRASES.get(column)
    if render is None or not math.isfinite(value):
        return f"{column.replace('_', ' ')} {value:g}"
    return str(render(float(value)))


def _short_query(query: str) -> str:
    """A search query as a reason may show it: scrubbed again, quotes dropped, cut at a word to ``QUERY_CHARS``."""
    text = scrub(query).replace("'", "").replace('"', "")
    if len(text) > QUERY_CHARS:
        text = text[:QUERY_CHARS].rsplit(" ", 1)[0] + "..."
    return text


_TIMES_WORDS = {1: "once", 2: "twice"}


@dataclass(frozen=True)
class Item:
    """One readable part of an attribution: a key (``feature`` in the reasons table), a phrase, a contribution."""

    key: str
    phrase: str
    contribution: float


def _segment_of(spans: Sequence[Segment], start: int) -> Segment | None:
    """The innermost segment holding character ``start`` (a category inside its order)."""
    found = None
    for segment in spans:
        if segment.start <= start < segment.end and (found is None or segment.end - segment.start < found.end - found.start):
            found = segment
    return found


def _item_key(segment: Segment | None) -> str:
    """The item key (``text:...``) of a token in ``segment`` (None: outside every segment)."""
    kind = segment.kind if segment is not None else "other"
    if kind == "category":
        return f"text:category:{segment.value.lower()}"
    if kind == "search" and segment.index >= 0:
        return f"text:search:{segment.value.lower()}"
    if kind in ("order", "search", "review"):
        return {"order": "text:orders", "search": "text:searches", "review": "text:reviews"}[kind]
    return f"text:{kind}"


def text_items(attribution: UserAttribution) -> list[Item]:
    """Return the behaviour text's contribution grouped by what it stands for (their sum is the text total).

    Groups: ``text:orders`` (the order items and header, categories apart), ``text:category:<c>``
    per category, ``text:search:<q>`` per distinct query, ``text:reviews``, ``text:totals``,
    ``text:tenure``, ``text:events`` and ``text:other`` (punctuation outside any segment, free
    text that did not parse). A text not split by token (``text_lump``, the nightly's head-only
    path) is the one item ``TEXT_KEY``.
    """
    if attribution.text_lump is not None:
        return [Item(TEXT_KEY, TEXT_PHRASE, float(attribution.text_lump))]
    spans = segments(attribution.text)
    sums: dict[str, float] = {}
    counts: dict[str, set[int]] = {}
    info: dict[str, Any] = {}
    for start, _end, value in attribution.tokens:
        segment = _segment_of(spans, start)
        key = _item_key(segment)
        sums[key] = sums.get(key, 0.0) + value
        if segment is not None:
            counts.setdefault(key, set()).add(segment.index)
            info.setdefault(key, segment)
    orders = [s for s in spans if s.kind == "order" and s.index >= 0]
    reviews = [s for s in spans if s.kind == "review" and s.index >= 0]
    searches = {s.value.lower(): 0 for s in spans if s.kind == "search" and s.index >= 0}
    for s in spans:
        if s.kind == "search" and s.index >= 0:
            searches[s.value.lower()] += 1
    items = []
    for key, value in sums.items():
        if key == "text:orders":
            total = sum(float(s.value) for s in orders if s.value)
            phrase = f"recent orders: {_times(len(orders), 'order')} listed, {_money(total)} in all"
        elif key.startswith("text:category:"):
            n = len({i for i in counts.get(key, set()) if i >= 0})
            phrase = f"ordered {_short_query(key.split(':', 2)[2])} {_TIMES_WORDS.get(n, f'{n} times')}"
        elif key.startswith("text:search:"):
            query = key.split(":", 2)[2]
            phrase = f"searched '{_short_query(query)}' {_TIMES_WORDS.get(searches.get(query, 1), f'{searches.get(query, 1)} times')}"
        elif key == "text:searches":
            phrase = f"{_times(len(searches), 'recent search', 'recent searches')}"
        elif key == "text:reviews":
            ratings = [int(s.value) for s in reviews if s.value.isdigit()]
            mean = f" (average {sum(ratings) / len(ratings):.1f}/5)" if ratings else ""
            phrase = f"{_times(len(reviews), 'recent review')}{mean}"
        elif key in ("text:totals", "text:tenure", "text:events"):
            phrase = info[key].value if key in info else key.split(":", 1)[1]
            if key == "text:events":
                phrase = "recent browsing activity"
        else:
            phrase = "rest of the behaviour text"
        items.append(Item(key, phrase, value))
    return items


def all_items(attribution: UserAttribution) -> list[Item]:
    """Every readable part of one user's attribution (features and text groups), largest absolute contribution first
    (ties by key)."""
    items = [Item(column, feature_phrase(column, attribution.raw_values.get(column, float("nan"))), value)
             for column, value in attribution.features.items()]  # fmt: skip
    return sorted(items + text_items(attribution), key=lambda item: (-abs(round(item.contribution, 6)), item.key))


def _choose(values: np.ndarray, keys: Sequence[str], direction: np.ndarray, top: int) -> np.ndarray:
    """Column indices ``(n, min(top, m))`` of each row's reasons among ``values`` (``(n, m)``, items ``keys``).

    First the items whose value (rounded to 1e-6: float noise does not reorder reasons) has the
    row's ``direction`` (+1 or -1), largest first; then the others, largest absolute first; ties
    by key. One sort for every row (the nightly chooses for thousands of users at once).
    """
    rounded = np.round(np.asarray(values, dtype=np.float64), 6)
    toward = direction[:, None] * rounded
    away = toward <= 0
    order = np.lexsort((np.broadcast_to(np.argsort(np.argsort(np.asarray(keys, dtype=object))), rounded.shape),
                        np.where(away, -np.abs(rounded), -toward), away), axis=-1)  # fmt: skip
    return order[:, :top]


def _chosen(attributions: Sequence[UserAttribution], top: int) -> list[list[Item]]:
    """:func:`reason_items` of each attribution: users with the same items (every nightly user of one model: its head
    columns and the one text item) are chosen together; only the chosen features' phrases are rendered."""
    texts = [text_items(a) for a in attributions]
    batches: dict[tuple[str, ...], list[int]] = {}
    for i, (a, items) in enumerate(zip(attributions, texts, strict=True)):
        batches.setdefault((*a.features, *(item.key for item in items)), []).append(i)
    out: list[list[Item]] = [[] for _ in attributions]
    for keys, rows in batches.items():
        values = np.array([[*attributions[i].features.values(), *(item.contribution for item in texts[i])] for i in rows],
                          dtype=np.float64).reshape(len(rows), len(keys))  # fmt: skip
        direction = np.array([1.0 if attributions[i].prediction >= attributions[i].baseline else -1.0 for i in rows])
        for i, picks in zip(rows, _choose(values, keys, direction, top).tolist(), strict=True):
            a, n_features = attributions[i], len(attributions[i].features)
            out[i] = [texts[i][k - n_features] if k >= n_features else
                      Item(keys[k], feature_phrase(keys[k], a.raw_values.get(keys[k], float("nan"))), a.features[keys[k]])
                      for k in picks]  # fmt: skip
    return out


def reason_items(attribution: UserAttribution, top: int = TOP_REASONS) -> list[Item]:
    """Return the user's ``top`` reasons: the items that move the prediction from the baseline towards where it
    is, largest first; when fewer than ``top`` do, the largest of the others (by absolute size) follow.

    The direction is the sign of ``prediction - baseline`` (a user at the baseline counts as above):
    a high user's reasons are what pushes the score up, a low user's what pushes it down, as
    credit scoring's reason codes give the factors that moved a score its way. Items pulling the
    other way stay in :func:`attribution_table` (``spendpred explain`` prints every item). Ties
    are broken by the key, so the choice is deterministic for a model and input.
    """
    return _chosen([attribution], top)[0]


def _ranked(items: Sequence[Item]) -> list[dict[str, Any]]:
    """Reason rows ``{"rank", "reason", "contribution", "feature"}`` of chosen items (contributions rounded to cents)."""
    return [{"rank": rank, "reason": format_reason(item), "contribution": round(item.contribution, 2), "feature": item.key}
            for rank, item in enumerate(items, start=1)]  # fmt: skip


def format_reason(item: Item) -> str:
    """``<phrase> (+120)``: the phrase and its signed contribution in currency (whole units from 10 up)."""
    value = item.contribution
    size = f"{abs(value):,.0f}" if abs(value) >= 10 else f"{abs(value):.2f}"
    return f"{item.phrase} ({'-' if value < 0 else '+'}{size})"


def reasons(attribution: UserAttribution, top: int = TOP_REASONS) -> list[dict[str, Any]]:
    """Return the user's ``top`` reasons (:func:`reason_items`): ``{"rank", "reason", "contribution", "feature"}``.

    Deterministic: ties are broken by the key. Contributions are rounded to cents.
    """
    return _ranked(reason_items(attribution, top))


REASON_COLUMNS: tuple[str, ...] = ("user_id", "rank", "reason", "contribution", "feature")
"""The columns of a reasons table (``reasons.parquet``; the publish step adds the run-wide ones)."""


def reasons_table(attributions: Sequence[UserAttribution], top: int = TOP_REASONS) -> pd.DataFrame:
    """Return the reasons of every user as one frame with ``REASON_COLUMNS`` (sorted by user, rank)."""
    chosen = _chosen(attributions, top)
    rows = [{"user_id": a.user_id, **r} for a, items in zip(attributions, chosen, strict=True) for r in _ranked(items)]
    frame = pd.DataFrame(rows, columns=list(REASON_COLUMNS))
    return frame.astype({"user_id": str, "rank": "int64", "reason": str, "contribution": "float64", "feature": str})


# --------------------------------------------------------------------------- who gets reasons


SCOPES: tuple[str, ...] = ("default", "all")
"""``SPENDPRED_REASONS_SCOPE``: ``default`` explains the high tier and users whose tier changed; ``all`` everyone."""


def select_users(tiers: pd.DataFrame, previous: pd.DataFrame | None, scope: str = "default") -> np.ndarray:
    """Return the user ids to explain tonight, sorted.

    ``tiers`` holds tonight's ``user_id`` and ``tier``; ``previous`` the previous night's (None:
    no previous night). ``default``: every high-tier user and every user whose tier differs from
    the previous night's (a user new tonight has no previous tier: explained only when high);
    ``all``: everyone. Raises ``ConfigError`` for another scope.
    """
    if scope not in SCOPES:
        raise ConfigError(f"SPENDPRED_REASONS_SCOPE={scope!r} is not a scope: use one of {', '.join(SCOPES)}")
    ids = tiers["user_id"].astype(str)
    if scope == "all":
        return np.sort(ids.to_numpy(dtype=object))
    chosen = tiers["tier"].astype(str) == "high"
    if previous is not None and len(previous):
        before = pd.Series(previous["tier"].astype(str).to_numpy(), index=previous["user_id"].astype(str))
        was = ids.map(before)
        chosen = chosen | (was.notna() & (was != tiers["tier"].astype(str)))
    return np.sort(ids[chosen.to_numpy()].to_numpy(dtype=object))


def attribution_table(attribution: UserAttribution) -> pd.DataFrame:
    """Return every item of one user's attribution (``feature``, ``reason``, ``contribution``), largest first,
    with the baseline, the prediction and the completeness gap as the last rows (what ``spendpred explain`` prints)."""
    items = all_items(attribution)
    rows = [{"feature": i.key, "reason": i.phrase, "contribution": i.contribution} for i in items]
    rows += [
        {"feature": "(baseline)", "reason": "prediction for the baseline input", "contribution": attribution.baseline},
        {"feature": "(gap)", "reason": "completeness gap (sum - (prediction - baseline))", "contribution": attribution.delta},
        {"feature": "(prediction)", "reason": "explained prediction", "contribution": attribution.prediction},
    ]
    return pd.DataFrame(rows, columns=["feature", "reason", "contribution"])


def check_model(model: Any) -> None:
    """Raise ``ModelError`` when ``model`` cannot be explained (no encoder input embeddings)."""
    if not hasattr(model.regressor.encoder, "get_input_embeddings"):
        raise ModelError("this model's encoder has no input embeddings to attribute: retrain with a BERT-family encoder")


def format_explanation(data: Mapping[str, Any]) -> str:
    """Render ``pipeline.explain_user``'s result as text: the header, the reasons, the full attribution table."""
    published = data.get("published_spend")
    lines = [
        f"user {data['user_id']} as of {data['as_of']}: tier {data.get('tier') or '?'}, published spend "
        f"{'?' if published is None else f'{published:,.2f}'} (model version {data['scored_with']})",
        f"explained with version {data['model_version']}: prediction {data['prediction']:,.2f} = baseline "
        f"{data['baseline']:,.2f} + contributions (completeness gap {data['gap']:+.4f}, tolerance {data['tolerance']:.2f})",
        f"reasons (template {data['template_version']}):",
        *[f"  {r['rank']}. {r['reason']}" for r in data["reasons"]],
        "attributions (currency):",
    ]
    width = max((len(str(r["feature"])) for r in data["attributions"]), default=10)
    lines += [f"  {str(r['feature']):<{width}}  {r['contribution']:>+12.4f}  {r['reason']}" for r in data["attributions"]]
    return "\n".join(lines)
