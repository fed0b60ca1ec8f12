"""Sharded scoring: one shard's users through a model into a Parquet file, and the shards back together.

Users belong to shard ``splits.shard_of(user_id, n)`` (a stable hash), so each shard is an
independent task (an Airflow mapped task, or one iteration of ``spendpred score``), and a
rerun of a shard rewrites the same users. Functions here take paths and a loaded model and
know nothing of staging, MLflow or Airflow (``spendpred.pipeline.score`` wires them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spendpred.errors import DataError, ModelError
from spendpred.files import temporary_sibling

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


def require_same_template(model_template: str | None, snapshot_template: str, model_label: str) -> None:
    """Raise ``ModelError`` unless the model was trained on the snapshot's text-template version."""
    if model_template != snapshot_template:
        raise ModelError(
            f"{model_label} was trained on text template {model_template!r} but the snapshot uses "
            f"{snapshot_template!r}: retrain the model on the current template (`spendpred train`) or score "
            "with a matching version"
        )


def score_shard_file(
    model: Any, snapshot_file: Path, out_path: Path, shard: int, shards: int, threads: int | None = None
) -> int:
    """Predict spend for the users of one shard and write them to ``out_path``; return the user count.

    ``model`` has ``feature_columns`` and ``predict(frame, num_threads=...)`` (a ``SpendModel``).
    The snapshot is read in batches of ``READ_BATCH_ROWS``; the output (``user_id`` string,
    ``predicted_spend`` float64 rounded to ``PUBLISHED_DECIMALS``, see :func:`round_published`)
    is written under a temporary name and renamed at the end, so a failed shard leaves no
    partial file. Tiers are computed from these rounded values, so published scores and tiers
    agree and neither depends on the shard count.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spendpred.splits import shard_of

    parquet = pq.ParquetFile(snapshot_file)
    columns = ["user_id", "text", *model.feature_columns]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out_path)
    schema = pa.schema([("user_id", pa.string()), ("predicted_spend", pa.float64())])
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                frame = batch.to_pandas()
                frame = frame[shard_of(frame["user_id"], int(shards)) == int(shard)]
                if frame.empty:
                    continue
                predicted = round_published(model.predict(frame, num_threads=threads))
                writer.write_table(pa.table({"user_id": frame["user_id"].to_numpy(), "predicted_spend": predicted}, schema=schema))
                rows += len(frame)
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


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
