"""Snapshot steps of both jobs: extract a behaviour snapshot as of a date, validate it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spendpred.config import Settings, get_settings
from spendpred.params import check_train
from spendpred.snapshot import Manifest, RunFolder

logger = logging.getLogger(__name__)


def resolve_horizon(value: int | None, settings: Settings) -> int:
    """Return the horizon H in days: ``value`` checked against the parameter spec, else the ``horizon_days`` setting."""
    return settings.horizon_days if value is None else int(check_train(horizon=value).horizon or settings.horizon_days)


def _extract_into(out_dir: Path, as_of: dt.date, horizon: int, with_labels: bool, url: str | None, settings: Settings) -> Manifest:
    """Extract the snapshot as of ``as_of`` into ``out_dir``; return its manifest."""
    from spendpred import behaviour, warehouse

    with warehouse.opened_engine(url, settings) as engine:
        manifest = behaviour.extract_snapshot(
            engine, as_of, out_dir, horizon_days=horizon, with_labels=with_labels, chunk_rows=settings.chunk_rows
        )
    logger.info("snapshot as of %s: %d users -> %s", as_of, manifest.row_count, out_dir)
    return manifest


def extract_run(run: RunFolder, horizon: int, with_labels: bool, url: str | None, settings: Settings) -> dict[str, Any]:
    """Extract the snapshot of a run folder; return the run's reference with ``rows`` and ``horizon_days``."""
    manifest = _extract_into(run.snapshot_dir, run.as_of, horizon, with_labels, url, settings)
    return {**run.ref(), "rows": manifest.row_count, "horizon_days": horizon}


def extract_snapshot(
    as_of: dt.date, out_dir: str | Path, with_labels: bool = False, horizon_days: int | None = None, url: str | None = None
) -> dict[str, Any]:
    """Extract a behaviour snapshot as of a date into any folder ``out_dir`` (the ``extract`` command).

    Returns ``{"snapshot_dir", "as_of", "rows", "horizon_days"}``.
    """
    from spendpred.errors import ConfigError

    if not str(out_dir).strip():
        raise ConfigError("the output folder is empty: pass --out DIR, a folder for the snapshot (created when missing)")
    settings = get_settings()
    days = resolve_horizon(horizon_days, settings)
    manifest = _extract_into(Path(out_dir), as_of, days, with_labels, url, settings)
    return {"snapshot_dir": str(out_dir), "as_of": as_of.isoformat(), "rows": manifest.row_count, "horizon_days": days}


def validate_snapshot(
    snapshot: RunFolder | Mapping[str, Any] | str | Path, previous_dir: str | Path | None = None
) -> dict[str, Any]:
    """Validate a snapshot with Great Expectations (raises ``ValidationFailed`` on any failure).

    ``snapshot`` is a run folder (or its reference, as XCom carries it) or any snapshot
    folder. Without ``previous_dir`` the row-count plausibility check compares with the
    previous run folder of the same kind (``RunFolder.previous``) when the snapshot lives in
    staging. Returns ``{"success", "report", "rows"}``.
    """
    from spendpred import validation

    if isinstance(snapshot, (str, Path)):
        directory = Path(snapshot)
        run = RunFolder.containing(directory)
    else:
        run = RunFolder.coerce(snapshot)
        directory = run.snapshot_dir
    if previous_dir is not None:
        previous: Path | None = Path(previous_dir)
    else:
        earlier = run.previous() if run is not None else None
        previous = earlier.snapshot_dir if earlier is not None else None
    result = validation.validate_snapshot(directory, previous_dir=previous)  # logs the verdict
    out: dict[str, Any] = {"success": result.success, "report": str(result.report_md), "rows": result.row_count}
    if isinstance(snapshot, Mapping) and snapshot.get("windows") and run is not None:
        for as_of in snapshot["windows"]:  # the earlier stacked training windows pass the same gate
            validation.validate_snapshot(RunFolder(run.kind, dt.date.fromisoformat(str(as_of)), run.root).snapshot_dir)
        out["windows"] = list(snapshot["windows"])
    return out
