"""Sharded scoring: one shard's users through a model into a Parquet file, and the shards back together.

Users belong to shard ``splits.shard_of(user_id, n)`` (a stable hash), so each shard is an
independent task (an Airflow mapped task, or one iteration of ``spendpred score``), and a
rerun of a shard rewrites the same users. Functions here take paths and a loaded model and
know nothing of staging, MLflow or Airflow (``spendpred.pipeline.score`` wires them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spendpred.embeddings import CacheStats, ShardCache, text_digests
from spendpred.errors import DataError, ModelError
from spendpred.files import open_parquet, temporary_sibling

logger = logging.getLogger(__name__)

READ_BATCH_ROWS = 50_000
"""Snapshot rows read per batch: memory stays flat whatever the number of users."""

PUBLISHED_DECIMALS = 2
"""Decimals of a published ``predicted_spend`` (cents: it is a currency amount).

Rounding here, in the one place every score passes before it is written
(:func:`score_shard_file`), absorbs the floating-point noise (about 1e-7 relative) that
different batch compositions or batch sizes leave in the model output, so a user's published
score, and the tier computed from it, do not depend on how users were sharded or batched.
``SpendModel.predict`` pads every batch to a fixed shape, so for one batch size and device the
unrounded output is already bit-identical whatever the shard: rounding boundaries are not hit
by sharding at all, and only rarely across batch sizes or machines."""


def round_published(values: Any) -> Any:
    """Return ``values`` (array-like of float) rounded to ``PUBLISHED_DECIMALS`` as float64, ``-0.0`` as ``0.0``.

    Round half to even on the binary value (``numpy.round``): deterministic for equal inputs.
    """
    import numpy as np

    return np.round(np.asarray(values, dtype=np.float64), PUBLISHED_DECIMALS) + 0.0


class Totals:
    """A shard's total predicted spend and total structural forecast, in whole cents (exact integers).

    Integers add up to the same run total whatever the shard split, so the trend anchor's
    factor (``spendpred.model.losses.anchor_factor``) does not depend on the shard count.
    """

    def __init__(self) -> None:
        self.predicted_cents = 0
        self.forecast_cents: int | None = None

    def add(self, predicted: Any, forecast: Any | None) -> None:
        self.predicted_cents += int(np.round(np.asarray(predicted, dtype=np.float64) * 100).astype(np.int64).sum())
        if forecast is not None:
            cents = np.round(np.clip(np.asarray(forecast, dtype=np.float64), 0, 1e12) * 100).astype(np.int64).sum()
            self.forecast_cents = (self.forecast_cents or 0) + int(cents)

    def as_dict(self) -> dict[str, int | None]:
        return {"predicted_cents": self.predicted_cents, "forecast_cents": self.forecast_cents}


def apply_anchor(table: Any, results: Sequence[Mapping[str, Any]], anchor: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """Scale the gathered scores by the trend anchor's factor; return the new table and what was done.

    ``results`` are the shards' results, each with ``totals`` (:meth:`Totals.as_dict`).
    The factor is 1 (the table is returned unchanged) without an anchor or without every
    shard's forecast. Scaled scores are rounded to ``PUBLISHED_DECIMALS`` again (:func:`scale_scores`).
    """
    from spendpred.model.losses import anchor_factor

    totals = [r.get("totals") or {} for r in results]
    predicted = sum(int(t.get("predicted_cents") or 0) for t in totals) / 100
    forecasts = [t.get("forecast_cents") for t in totals]
    forecast = None if not totals or any(f is None for f in forecasts) else sum(int(f) for f in forecasts) / 100
    factor = anchor_factor(dict(anchor) if anchor else None, predicted, forecast or 0.0)
    info = {"factor": factor, "predicted_total": predicted, "forecast_total": forecast,
            "reference_ratio": (anchor or {}).get("reference_ratio")}  # fmt: skip
    return scale_scores(table, factor), info


def scale_scores(table: Any, factor: float) -> Any:
    """Return ``table`` with ``predicted_spend`` multiplied by ``factor`` and rounded to ``PUBLISHED_DECIMALS`` again
    (the table itself when the factor is 1): the trend anchor and the level correction both scale this way."""
    import pyarrow as pa

    if factor == 1.0:
        return table
    scaled = round_published(table.column("predicted_spend").to_numpy() * factor)
    index = table.schema.get_field_index("predicted_spend")
    return table.set_column(index, "predicted_spend", pa.array(scaled, pa.float64()))


def require_same_template(model_template: str | None, snapshot_template: str, model_label: str) -> None:
    """Raise ``ModelError`` unless the model was trained on the snapshot's text-template version."""
    if model_template != snapshot_template:
        raise ModelError(
            f"{model_label} was trained on text template {model_template!r} but the snapshot uses "
            f"{snapshot_template!r}: retrain the model on the current template (`spendpred train`) or score "
            "with a matching version"
        )


def require_same_horizon(model_horizon: int | None, scoring_horizon: int, model_label: str) -> None:
    """Raise ``ModelError`` unless the model predicts spend over the horizon the scores are read for.

    ``predicted_spend`` is spend over the model's label horizon; the monitoring evaluates it, and
    consumers read it, over ``SPENDPRED_HORIZON_DAYS``. A model trained for another horizon (the
    retrain's ``horizon`` param) would publish numbers that mean something else: on CDNOW, a
    180-day model read as 90 days looked 2.8x too high. ``None`` (a bundle that predates the
    record) is accepted.
    """
    if model_horizon is not None and int(model_horizon) != int(scoring_horizon):
        raise ModelError(
            f"{model_label} predicts spend over {int(model_horizon)} days but scores are published and evaluated over "
            f"SPENDPRED_HORIZON_DAYS={int(scoring_horizon)}: set SPENDPRED_HORIZON_DAYS={int(model_horizon)}, or score "
            f"with a version trained with horizon={int(scoring_horizon)}"
        )


def score_shard_file(
    model: Any,
    snapshot_file: Path,
    out_path: Path,
    shard: int,
    shards: int,
    threads: int | None = None,
    cache: ShardCache | None = None,
    precision: str = "auto",
    batch_size: int | None = None,
) -> CacheStats:
    """Predict spend for the users of one shard and write them to ``out_path``; return what it cost.

    ``model`` is a ``SpendModel`` (``feature_columns``, ``hidden_size``, ``head_features``,
    ``encode``, ``predict_pooled`` and ``population_forecast``). The snapshot is read in
    batches of ``READ_BATCH_ROWS``; each batch's texts are encoded (``precision``,
    ``batch_size`` and ``threads`` as in ``SpendModel.predict``), except those found
    unchanged in ``cache`` (a ``spendpred.embeddings.ShardCache``), and the head runs for
    every user with the batch's features. The output (``user_id`` string, ``predicted_spend`` float64 rounded to
    ``PUBLISHED_DECIMALS``, see :func:`round_published`) is written under a temporary name and
    renamed at the end, so a failed shard leaves no partial file; the cache's new file is
    committed only after that. Tiers are computed from these rounded values, so published
    scores and tiers agree and neither depends on the shard count or the cache.

    Returns ``CacheStats``: users scored, cache hits and misses, seconds in the encoder.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spendpred.model.features import check_texts
    from spendpred.splits import shard_of

    parquet = open_parquet(snapshot_file)
    columns = ["user_id", "text", *model.feature_columns]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out_path)
    schema = pa.schema([("user_id", pa.string()), ("predicted_spend", pa.float64())])
    stats = CacheStats(cache_state=cache.state if cache is not None else "off", key=cache.key if cache is not None else None)
    totals = Totals()
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                frame = batch.to_pandas()
                frame = frame[shard_of(frame["user_id"], int(shards)) == int(shard)]
                if frame.empty:
                    continue
                texts = check_texts(frame, "scoring snapshot")
                features = model.head_features(frame, "scoring snapshot")
                user_ids = frame["user_id"].to_numpy(dtype=object)
                pooled = np.empty((len(frame), model.hidden_size), dtype=np.float32)
                digests = text_digests(texts) if cache is not None else []
                hits = np.zeros(len(frame), dtype=bool)
                if cache is not None:
                    hits, cached = cache.lookup(user_ids, digests)
                    pooled[hits] = cached
                misses = np.flatnonzero(~hits)
                if len(misses):
                    began = time.perf_counter()
                    pooled[misses] = model.encode(
                        [texts[i] for i in misses], batch_size=batch_size, precision=precision, num_threads=threads
                    )
                    stats.encode_seconds += time.perf_counter() - began
                predicted = round_published(model.predict_pooled(pooled, features, num_threads=threads))
                writer.write_table(pa.table({"user_id": user_ids, "predicted_spend": predicted}, schema=schema))
                totals.add(predicted, model.population_forecast(frame))
                if cache is not None:
                    cache.add(user_ids, digests, pooled)
                stats.users += len(frame)
                stats.hits += int(hits.sum())
                stats.misses += len(misses)
        tmp.replace(out_path)
    except BaseException:
        if cache is not None:
            cache.discard()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    if cache is not None:
        cache.commit()
        stats.written = cache.written
        stats.cache_state = cache.state
    stats.totals = totals.as_dict()
    return stats


def check_coverage(results: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Return ``(shards, model_version)`` when the scored shards cover ``0..n-1`` once with one version.

    Each result has ``shard``, ``shards`` and ``model_version``. Raises ``DataError`` naming
    what to rerun otherwise.
    """
    if not results:
        raise DataError("no scored shards were given: run score_shard for every planned shard first")
    counts = {int(r["shards"]) for r in results}
    versions = {str(r["model_version"]) for r in results}
    seen = sorted(int(r["shard"]) for r in results)
    if len(counts) != 1 or seen != list(range(next(iter(counts)))):
        raise DataError(f"scored shards {seen} do not cover 0..{max(counts) - 1} exactly once: rerun the missing shards")
    if len(versions) != 1:
        raise DataError(f"shards were scored by different model versions {sorted(versions)}: rescore all shards with one version")
    return next(iter(counts)), next(iter(versions))


def gather(paths: Sequence[Path], expected_rows: int) -> Any:
    """Return the scored shard files as one ``pyarrow.Table``; raises ``DataError`` unless it holds ``expected_rows`` users."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(pq.read_table(path) for path in paths)
    if table.num_rows != expected_rows:
        raise DataError(f"scored {table.num_rows} users but the snapshot holds {expected_rows}: rescore the shards")
    return table
