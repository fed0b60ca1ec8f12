"""Snapshot steps of both jobs: extract a behaviour snapshot as of a date, validate it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spendpred.config import Settings, get_settings
from spendpred.params import check_train
from spendpred.snapshot import Manifest, RunFolder, staged_snapshot, working_copy

logger = logging.getLogger(__name__)


def resolve_horizon(value: int | None, settings: Settings) -> int:
    """Return the horizon H in days: ``value`` (a checked ``TrainParams.horizon``), else the ``horizon_days`` setting."""
    return settings.horizon_days if value is None else value


def _extract_into(
    out_dir: Path, as_of: dt.date, horizon: int, with_labels: bool, url: str | None, settings: Settings,
    template: str | None = None,
) -> Manifest:
    """Extract the snapshot as of ``as_of`` into ``out_dir``; return its manifest.

    Texts use ``template`` (None: ``SPENDPRED_TEXT_TEMPLATE``).

    The warehouse is opened first, then the snapshot is written into a hidden folder beside
    ``out_dir`` and moved in only when the extract succeeded (``snapshot.staged_snapshot``): a
    failed extract (unreachable warehouse, missing tables, full disk) creates no folder and
    leaves the snapshot that was there, validated or not, as it was.
    """
    from spendpred import behaviour, warehouse

    with warehouse.opened_engine(url, settings) as engine, staged_snapshot(out_dir) as tmp:
        manifest = behaviour.extract_snapshot(
            engine, as_of, tmp, horizon_days=horizon, with_labels=with_labels, chunk_rows=settings.chunk_rows,
            template_version=template,
        )
    logger.info("snapshot as of %s: %d users -> %s", as_of, manifest.row_count, out_dir)
    return manifest


def preflight(kind: str, url: str | None = None, settings: Settings | None = None) -> None:
    """Check, reading and writing nothing, what an extract of ``kind`` (``train``/``score``) needs.

    The settings are valid, the warehouse accepts a connection and holds the source relations
    (``SELECT ... WHERE 1 = 0``: no row is read; a missing SQLite file is refused inside
    ``failures.one_line``/``warehouse.existing_warehouse_only``), and the run's staging folder
    could be created and written. A front end calls it before it checks what it
    needs next (the model, the registry), so that a failing run creates nothing and names the
    first problem on the way. A scoring run's tier rule (``SPENDPRED_TIER_*``) is checked here too,
    not after the extract and the scoring. Raises ``ConfigError`` (settings, tier rule, missing warehouse file), the
    database's error (unreachable, wrong credentials, missing tables), the ``OSError`` of the
    staging folder, or ``StorageError``/``StagingUnavailable`` for object storage.
    """
    from spendpred import warehouse
    from spendpred.errors import ConfigError
    from spendpred.snapshot import KINDS, check_can_create, staging_root

    if kind not in KINDS:
        raise ConfigError(f"run kind {kind!r} is not one of {', '.join(KINDS)}")
    settings = settings or get_settings()
    staging = staging_root(settings)  # ConfigError for an unsupported SPENDPRED_STAGING_DIR
    if kind == "score":
        from spendpred.tiers import TierRule

        try:
            TierRule.from_mapping(settings.tier_rule_values())
        except ConfigError as exc:
            raise ConfigError(
                f"the SPENDPRED_TIER_* settings hold an invalid tier rule: {exc} (set in the environment or in .env)"
            ) from None
    with warehouse.opened_engine(url, settings) as engine, engine.connect() as conn:
        for table in warehouse.SOURCE_TABLES:  # names from the contract, not from input
            conn.exec_driver_sql(f"SELECT 1 FROM {table} WHERE 1 = 0").close()
    if isinstance(staging, Path):
        check_can_create(staging / kind)
    else:  # object storage: a small object written and deleted (credentials, endpoint, bucket)
        from spendpred.staging import store

        store(staging).probe(kind)


def extract_run(
    run: RunFolder, horizon: int, with_labels: bool, url: str | None, settings: Settings, template: str | None = None
) -> dict[str, Any]:
    """Extract the snapshot of a run folder; return the run's reference with ``rows`` and ``horizon_days``.

    Texts use ``template`` (None: ``SPENDPRED_TEXT_TEMPLATE``).

    A failed extract creates nothing in staging: no run folder, no partial snapshot (see ``_extract_into``).
    On object storage the snapshot is extracted into a working copy and then published (its old
    validation withdrawn, the staging manifest last).
    """
    with working_copy(run) as work:
        manifest = _extract_into(work.snapshot_dir, run.as_of, horizon, with_labels, url, settings, template)
        work.push("snapshot")
    return {**run.ref(), "rows": manifest.row_count, "horizon_days": horizon}


def extract_snapshot(
    as_of: dt.date, out_dir: str | Path, with_labels: bool = False, horizon_days: int | None = None, url: str | None = None
) -> dict[str, Any]:
    """Extract a behaviour snapshot as of a date into any folder ``out_dir`` (the ``extract`` command).

    ``out_dir`` is created when missing, and only when the extract succeeds. ``horizon_days`` is
    checked here, once, with the parameter spec (``TrainParams.horizon``). Returns
    ``{"snapshot_dir", "as_of", "rows", "horizon_days"}``. Raises ``ConfigError`` for a bad
    horizon, an empty ``out_dir`` or one that is a file.
    """
    from spendpred.errors import ConfigError

    horizon = check_train(horizon=horizon_days).horizon
    if not str(out_dir).strip():
        raise ConfigError("the output folder is empty: pass --out DIR, a folder for the snapshot (created when missing)")
    settings = get_settings()
    days = resolve_horizon(horizon, settings)
    manifest = _extract_into(Path(out_dir), as_of, days, with_labels, url, settings)
    return {"snapshot_dir": str(out_dir), "as_of": as_of.isoformat(), "rows": manifest.row_count, "horizon_days": days}


def validate_snapshot(
    snapshot: RunFolder | Mapping[str, Any] | str | Path, previous_dir: str | Path | None = None
) -> dict[str, Any]:
    """Validate a snapshot with Great Expectations (raises ``ValidationFailed`` on any failure).

    ``snapshot`` is a run folder (or its reference, as XCom carries it) or any snapshot
    folder; a training run's stacked windows (``RunFolder.windows``) are validated too.
    Without ``previous_dir`` the row-count plausibility check compares with the
    previous run folder of the same kind (``RunFolder.previous``) when the snapshot lives in
    staging. Returns ``{"success", "report", "rows"}`` (and the run's ``windows`` when it has some).
    """
    from spendpred import validation

    if isinstance(snapshot, (str, Path)):
        directory = Path(snapshot)
        run = RunFolder.containing(directory)
        return _validated(validation.validate_snapshot(directory, previous_dir=_previous(run, previous_dir)), run)
    with working_copy(snapshot) as run:
        out = _validate_run(run, previous_dir)
        for window in run.window_folders():  # the earlier stacked training windows pass the same gate
            _validate_run(window, None)
        if run.windows:
            out["windows"] = run.ref()["windows"]
    return out


def _previous(run: RunFolder | None, previous_dir: str | Path | None) -> Path | None:
    """The snapshot folder the row-count check compares with: ``previous_dir``, else ``run.previous()``'s."""
    if previous_dir is not None:
        return Path(previous_dir)
    earlier = run.previous() if run is not None else None
    return earlier.snapshot_dir if earlier is not None else None


def _validate_run(run: RunFolder, previous_dir: str | Path | None) -> dict[str, Any]:
    """Validate a run folder's snapshot (pulled first, reports pushed after, failed or not, on object storage)."""
    from spendpred import validation

    run.pull("snapshot")
    try:
        result = validation.validate_snapshot(run.snapshot_dir, previous_dir=_previous(run, previous_dir))  # logs the verdict
    finally:
        if run.is_remote and run.validation_json.is_file():  # a failed gate's report is staged too
            run.push("validation")
    return _validated(result, run)


def _validated(result: Any, run: RunFolder | None) -> dict[str, Any]:
    """The step's result: ``{"success", "report", "rows"}`` (the report's URL on object storage)."""
    report = run.location("snapshot", result.report_md.name) if run is not None and run.is_remote else str(result.report_md)
    return {"success": result.success, "report": report, "rows": result.row_count}
