"""The data gate: a Great Expectations suite run on every behaviour snapshot.

``validate_snapshot`` checks a snapshot directory (``snapshot.parquet`` + ``manifest.json``,
see ``spendpred.snapshot``) in an ephemeral GX context, with GX analytics switched off and
GX imported only when a validation runs. Three batches are validated:

* ``schema``: a zero-row frame with the Parquet schema: the exact column set of the contract
  and each column's type;
* ``values``: every column but ``text`` (plus ``text_length``, computed row group by row
  group, so the text never sits in memory): non-empty extract, row count plausible against
  the previous snapshot, non-null unique ``user_id``, no nulls, non-negative money, counts
  and labels, ``mean_rating`` within 0..5, no order dated after the as-of date
  (``recency_days >= 0``), recency within tenure, nested windows (30d <= 90d <= 365d
  <= all), and finite, plausible money (every ``MONEY_COLUMNS`` column, ``past_spend`` and
  ``label`` at most ``MAX_PLAUSIBLE_MONEY``: ``inf`` and ``1e300`` are refused);
* ``manifest``: one row of facts from the manifest: row count and checksum agree with the
  Parquet file, the newest source timestamp is at most ``freshness_days`` before the
  as-of date, and the source-data contract was checked at extraction (a manifest written
  before the contract, without ``source_checks``, fails here: re-extract the snapshot);
* ``source``: the source-data contract (``SOURCE_RULES``), one expectation per rule
  (violations == 0) on the counts ``spendpred.behaviour.source_checks`` recorded in the
  manifest from the source rows the snapshot saw; a failure names the rule, the count and
  example rows (order ids, or user and timestamp).

Both outcomes write ``validation.json`` (the full GX results, a summary and the SHA-256 of the
Parquet file validated, which every consumer compares with the file before use) and
``validation.md`` (a readable list of each failed expectation with example values) beside
the snapshot; a failure then raises :class:`spendpred.errors.ValidationFailed`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spendpred.errors import ConfigError, DataError, ValidationFailed
from spendpred.files import open_parquet, sha256_file, write_json_atomic, write_text_atomic
from spendpred.snapshot import (
    FEATURE_COLUMNS,
    MANIFEST_FILE,
    MONEY_COLUMNS,
    SNAPSHOT_FILE,
    Manifest,
    SnapshotDir,
    snapshot_columns,
)

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5
MAX_PLAUSIBLE_MONEY = 1e9
"""The plausibility bound of money: one source order's amount and every money column of a
snapshot (``MONEY_COLUMNS``, ``past_spend``, ``label``: one user's spend) must be finite and at
most this. Larger values are data errors (e.g. ``1e300`` or ``inf`` typed into the source)."""
FUTURE_TOLERANCE_DAYS = 1
"""Source rows dated at or after ``max(cutoff, extraction day + this many days)`` are "in the
future" (a clock or typing error such as a purchase dated 2999-12-31)."""

SOURCE_RULES: dict[str, str] = {
    "order_amount_negative": "orders.amount >= 0",
    "order_amount_not_finite": f"orders.amount is a finite number <= {MAX_PLAUSIBLE_MONEY:g} (no NULL, NaN or infinity)",
    "order_items_below_one": "orders.items >= 1",
    "event_type_unknown": "events.event_type is a known event type",
    "review_rating_out_of_range": "reviews.rating within 1..5",
    "order_user_unknown": "every order belongs to a known user (no orphan orders)",
    "event_user_unknown": "every event belongs to a known user (no orphan events)",
    "review_user_unknown": "every review belongs to a known user (no orphan reviews)",
    "order_id_not_unique": "orders.order_id is unique and not null",
    "user_id_not_unique": "users.user_id is unique and not null",
    "timestamp_in_future": "no source row is dated in the future",
}
"""The source-data contract: rule name (as in ``sql/extract/source_checks.sql`` and the
manifest's ``source_checks``) -> what must hold. Every rule but ``timestamp_in_future`` looks
at the rows visible to the snapshot (timestamps before the end of the as-of date); rows dated
after the as-of date are legitimately in a warehouse and never used by the snapshot (the
extract filters them, and the ``fresh sources`` expectation checks the newest one it saw), so
the time rule instead looks at every row for dates after the extraction day (see
``FUTURE_TOLERANCE_DAYS``)."""
_NESTED_WINDOWS = (
    ("frequency", ("30d", "90d", "365d", "all")),
    ("monetary", ("30d", "90d", "365d", "all")),
    ("views", ("30d", "90d")),
    ("clicks", ("30d", "90d")),
    ("add_to_carts", ("30d", "90d")),
    ("searches", ("30d", "90d")),
    ("wishlists", ("30d", "90d")),
)


@dataclass
class ValidationResult:
    """Outcome of :func:`validate_snapshot` (also written as ``validation.json``/``.md``)."""

    success: bool
    snapshot_dir: Path
    report_json: Path
    report_md: Path
    evaluated: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    row_count: int | None = None

    @property
    def message(self) -> str:
        """One readable paragraph: the verdict, each failed expectation, the report path."""
        if self.success:
            return f"snapshot {self.snapshot_dir} passed validation ({self.evaluated} expectations); report: {self.report_md}"
        lines = [
            f"snapshot {self.snapshot_dir} failed validation: {len(self.failures)} of "
            f"{self.evaluated} expectations failed"
        ]
        lines += [f"  - {_failure_line(f)}" for f in self.failures]
        lines.append(f"full report: {self.report_md} (GX results: {self.report_json})")
        return "\n".join(lines)


def _failure_line(failure: dict[str, Any]) -> str:
    text = f"[{failure['batch']}] {failure['check']} ({failure['expectation']}): {failure['detail']}"
    if failure.get("examples"):
        text += f"; e.g. {json.dumps(failure['examples'], default=str)}"
    return text


# --------------------------------------------------------------------------- frames


def _text_lengths(parquet: pq.ParquetFile) -> pa.Array:
    """Return the UTF-8 length of every ``text`` value (nulls kept), read row group by row group."""
    parts = [pc.utf8_length(batch.column(0)) for batch in parquet.iter_batches(columns=["text"], batch_size=65_536)]
    return pa.concat_arrays(parts).cast(pa.int64()) if parts else pa.array([], pa.int64())


def _manifest_facts(manifest: Manifest, parquet_rows: int, checksum: str) -> dict[str, Any]:
    lag: float = math.nan
    if manifest.max_source_timestamp:
        try:
            newest = datetime.fromisoformat(manifest.max_source_timestamp)
            lag = float((manifest.as_of - newest.date()).days)
        except ValueError:
            lag = math.nan
    return {
        "manifest_row_count": int(manifest.row_count),
        "parquet_row_count": int(parquet_rows),
        "checksum_matches": manifest.checksum == checksum,
        "feature_columns_match": list(manifest.feature_columns) == list(FEATURE_COLUMNS),
        "source_lag_days": lag,
        "source_checks_recorded": manifest.source_checks is not None
        and all(isinstance(manifest.source_checks.get(rule), dict) for rule in SOURCE_RULES),
    }


def _source_facts(manifest: Manifest) -> dict[str, Any]:
    """One row: the violation count of every source rule (``None`` where the manifest lacks it)."""
    checks = manifest.source_checks or {}
    facts: dict[str, Any] = {}
    for rule in SOURCE_RULES:
        entry = checks.get(rule)
        value = entry.get("violations") if isinstance(entry, dict) else None
        facts[rule] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return facts


# --------------------------------------------------------------------------- suites


def _schema_expectations(gxe: Any, expected: list[str], present: dict[str, pa.DataType]) -> list[Any]:
    exps = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=expected, exact_match=True, meta={"check": "columns are exactly those of the snapshot contract"}
        )
    ]
    for name in expected:
        if name not in present:
            continue  # reported once, by the column-set expectation
        is_text = name in ("user_id", "text")
        exps.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=name,
                type_="str" if is_text else "float64",
                meta={"check": f"{name} is {'a string' if is_text else 'float64'}"},
            )
        )
    return exps


def _value_expectations(
    gxe: Any,
    present: dict[str, pa.DataType],
    with_labels: bool,
    previous_rows: int | None,
    row_tolerance: float,
) -> list[Any]:
    exps: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta={"check": "the extract is not empty"}),
    ]
    if previous_rows:
        low = math.ceil(previous_rows * (1 - row_tolerance))
        high = math.floor(previous_rows * (1 + row_tolerance))
        exps.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=max(low, 0),
                max_value=high,
                meta={
                    "check": f"row count within {row_tolerance:.0%} of the previous snapshot ({previous_rows} rows)"
                },
            )
        )
    uid_type = present.get("user_id")
    if uid_type is not None and (pa.types.is_string(uid_type) or pa.types.is_large_string(uid_type)):
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id", meta={"check": "user_id is never null"}),
            gxe.ExpectColumnValuesToBeUnique(column="user_id", meta={"check": "one row per user (user_id unique)"}),
            gxe.ExpectColumnValueLengthsToBeBetween(column="user_id", min_value=1, meta={"check": "user_id is never empty"}),
        ]
    if "text_length" in present:
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column="text_length", meta={"check": "text is never null"}),
            gxe.ExpectColumnValuesToBeBetween(column="text_length", min_value=1, meta={"check": "text is never empty"}),
        ]
    numeric = [c for c in snapshot_columns(with_labels)[2:] if c in present and pa.types.is_floating(present[c])]
    for name in numeric:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name, meta={"check": f"{name} has no nulls"}))
        if name == "recency_days":
            check = "no order dated after the as-of date (recency_days >= 0)"
        elif name == "days_since_last_event":
            check = "no event dated after the as-of date (days_since_last_event >= 0)"
        elif name == "label":
            check = "labels are non-negative"
        elif name in MONEY_COLUMNS or name == "past_spend":
            check = f"money is non-negative ({name} >= 0)"
        else:
            check = f"{name} >= 0"
        kwargs: dict[str, Any] = {"min_value": 0}
        if name == "mean_rating":
            kwargs["max_value"] = 5
            check = "mean_rating within 0..5"
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=name, meta={"check": check}, **kwargs))
        if name in MONEY_COLUMNS or name in ("past_spend", "label"):
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name,
                    max_value=MAX_PLAUSIBLE_MONEY,
                    meta={"check": f"money is finite and plausible ({name} <= {MAX_PLAUSIBLE_MONEY:g})"},
                )
            )
    if {"tenure_days", "recency_days"} <= set(numeric):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="tenure_days",
                column_B="recency_days",
                or_equal=True,
                meta={"check": "recency within tenure (recency_days <= tenure_days)"},
            )
        )
    if {"monetary_all", "past_spend"} <= set(numeric):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="monetary_all",
                column_B="past_spend",
                or_equal=True,
                meta={"check": "past_spend within lifetime spend (past_spend <= monetary_all)"},
            )
        )
    for stem, windows in _NESTED_WINDOWS:
        for short, long_ in zip(windows, windows[1:]):
            a, b = f"{stem}_{long_}", f"{stem}_{short}"
            if {a, b} <= set(numeric):
                exps.append(
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                        column_A=a, column_B=b, or_equal=True, meta={"check": f"nested windows ({b} <= {a})"}
                    )
                )
    return exps


def _manifest_expectations(gxe: Any, freshness_days: int) -> list[Any]:
    return [
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="manifest_row_count",
            column_B="parquet_row_count",
            meta={"check": "manifest row_count equals the Parquet row count"},
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="checksum_matches",
            value_set=[True],
            meta={"check": "snapshot.parquet matches the manifest checksum (file unchanged since extraction)"},
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="feature_columns_match",
            value_set=[True],
            meta={"check": "manifest feature_columns are those of the contract"},
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="source_lag_days", meta={"check": "the manifest records the newest source timestamp"}
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="source_lag_days",
            min_value=0,
            max_value=freshness_days,
            meta={"check": f"fresh sources: newest source row at most {freshness_days} day(s) before the as-of date"},
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="source_checks_recorded",
            value_set=[True],
            meta={
                "check": "the manifest records every source-data contract check "
                "(a snapshot extracted before the contract: re-extract it)"
            },
        ),
    ]


def _source_expectations(gxe: Any) -> list[Any]:
    """One expectation per source-data contract rule: no violation in the rows the snapshot saw."""
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column=rule,
            min_value=0,
            max_value=0,
            meta={"check": f"source contract {rule}: {description}", "source_rule": rule},
        )
        for rule, description in SOURCE_RULES.items()
    ]


def _describe_source(failure: dict[str, Any], rule: str, source_checks: dict[str, Any] | None) -> dict[str, Any]:
    """Name the count and example rows of a failed source rule (from the manifest), not GX's one-row frame."""
    entry = (source_checks or {}).get(rule)
    if not isinstance(entry, dict) or not isinstance(entry.get("violations"), (int, float)):
        return failure  # not recorded: already reported by the manifest batch
    count = int(entry["violations"])
    return {
        **failure,
        "detail": f"{count} violating source row(s) visible to the snapshot",
        "examples": [str(e) for e in (entry.get("examples") or [])][:MAX_EXAMPLES],
    }


# --------------------------------------------------------------------------- results


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _describe(batch: str, result: dict[str, Any]) -> dict[str, Any]:
    """Turn one failed GX result into a readable failure record."""
    config = result.get("expectation_config", {})
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
    meta = config.get("meta") or {}
    res = result.get("result") or {}
    exc = result.get("exception_info") or {}
    examples: list[Any] = []
    if exc.get("raised_exception"):
        detail = f"could not be evaluated: {exc.get('exception_message')}"
    elif "unexpected_count" in res:
        detail = (
            f"{res.get('unexpected_count')} of {res.get('element_count')} rows unexpected "
            f"({float(res.get('unexpected_percent') or 0):.1f}%)"
        )
        # rows named by user_id with their offending value where GX gives them (the values batch),
        # else the offending values (e.g. the lag in days), never GX's bare row positions
        named = res.get("partial_unexpected_index_list") or []
        if named and all(isinstance(row, dict) for row in named):
            examples = list(named)
        else:
            examples = list(res.get("partial_unexpected_list") or named)
    elif (res.get("details") or {}).get("mismatched"):
        mismatched = res["details"]["mismatched"]
        detail = "; ".join(f"{kind} columns {sorted(cols)}" for kind, cols in sorted(mismatched.items()) if cols)
    else:
        detail = f"observed {res.get('observed_value')!r}"
        bounds = {k: kwargs[k] for k in ("min_value", "max_value", "value_set") if k in kwargs}
        if bounds:
            detail += f", expected {bounds}"
    return _jsonable(
        {
            "batch": batch,
            "check": meta.get("check", config.get("type", "?")),
            "expectation": config.get("type", "?"),
            "kwargs": kwargs,
            "detail": detail,
            "examples": examples[:MAX_EXAMPLES],
        }
    )


def _write_reports(
    snapshot_dir: Path, payload: dict[str, Any], result: ValidationResult, checks: list[dict[str, Any]]
) -> None:
    write_json_atomic(result.report_json, payload, sort_keys=False)
    lines = [
        f"# Validation of snapshot `{snapshot_dir}`",
        "",
        f"- result: **{'PASSED' if result.success else 'FAILED'}**",
        f"- as of: {payload.get('as_of')}",
        f"- rows: {result.row_count}",
        f"- expectations: {result.evaluated} evaluated, {len(result.failures)} failed",
        f"- parameters: {json.dumps(payload.get('parameters', {}), default=str)}",
        f"- checked at: {payload.get('checked_at')}",
        "",
    ]
    if result.failures:
        lines += ["## Failed expectations", ""]
        for i, failure in enumerate(result.failures, 1):
            lines += [
                f"### {i}. {failure['check']}",
                "",
                f"- batch: `{failure['batch']}`",
                f"- expectation: `{failure['expectation']}` {json.dumps(failure['kwargs'], default=str)}",
                f"- result: {failure['detail']}",
            ]
            if failure.get("examples"):
                lines.append(f"- examples: `{json.dumps(failure['examples'], default=str)}`")
            lines.append("")
    if checks:
        lines += ["## All expectations", "", "| batch | check | result |", "| --- | --- | --- |"]
        lines += [f"| {c['batch']} | {c['check']} | {'ok' if c['success'] else 'FAILED'} |" for c in checks]
        lines.append("")
    write_text_atomic(result.report_md, "\n".join(lines))


def _finish(
    snapshot_dir: Path,
    success: bool,
    evaluated: int,
    failures: list[dict[str, Any]],
    row_count: int | None,
    payload: dict[str, Any],
    checks: list[dict[str, Any]],
) -> ValidationResult:
    result = ValidationResult(
        success=success,
        snapshot_dir=snapshot_dir,
        report_json=SnapshotDir(snapshot_dir).validation_json,
        report_md=SnapshotDir(snapshot_dir).validation_md,
        evaluated=evaluated,
        failures=failures,
        row_count=row_count,
    )
    payload.update(
        {
            "success": success,
            "summary": {"evaluated": evaluated, "failed": len(failures), "failures": failures, "row_count": row_count},
        }
    )
    _write_reports(snapshot_dir, payload, result, checks)
    if not success:
        logger.error("%s", result.message)
        raise ValidationFailed(result.message)
    logger.info("%s", result.message)
    return result


def _precheck_failure(check: str, detail: str) -> dict[str, Any]:
    return {"batch": "files", "check": check, "expectation": "file check", "kwargs": {}, "detail": detail, "examples": []}


# --------------------------------------------------------------------------- entry point


def validate_snapshot(
    snapshot_dir: Path,
    previous_dir: Path | None = None,
    row_tolerance: float = 0.5,
    freshness_days: int = 2,
) -> ValidationResult:
    """Validate a snapshot directory with Great Expectations; return the (successful) result.

    ``previous_dir`` is the previous snapshot (its manifest's ``row_count`` bounds this one
    within ``row_tolerance``, e.g. 0.5 = ±50%); ``freshness_days`` bounds the days between
    the newest source timestamp and the as-of date. Writes ``validation.json`` and
    ``validation.md`` into ``snapshot_dir`` in every case.

    Raises ``ValidationFailed`` (listing each failed expectation with example values and
    the report path) when any expectation fails or the snapshot files are missing or
    unreadable; ``ConfigError`` for bad tolerances; ``DataError`` when ``snapshot_dir``
    does not exist or ``previous_dir`` has no readable manifest.
    """
    snapshot_dir = Path(snapshot_dir)
    if not snapshot_dir.is_dir():
        raise DataError(f"snapshot folder {snapshot_dir} does not exist: run `spendpred extract` first")
    if not 0 <= row_tolerance:
        raise ConfigError(f"row_tolerance must be >= 0 (a fraction such as 0.5), got {row_tolerance}")
    if freshness_days < 0:
        raise ConfigError(f"freshness_days must be >= 0, got {freshness_days}")
    previous_rows: int | None = None
    if previous_dir is not None:
        previous_rows = Manifest.read(Path(previous_dir)).row_count
    parameters = {
        "previous_dir": str(previous_dir) if previous_dir else None,
        "previous_row_count": previous_rows,
        "row_tolerance": row_tolerance,
        "freshness_days": freshness_days,
    }
    payload: dict[str, Any] = {
        "snapshot_dir": str(snapshot_dir),
        "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parameters": parameters,
    }

    # files first: without a readable manifest and Parquet file nothing else can be checked
    failures: list[dict[str, Any]] = []
    manifest: Manifest | None = None
    parquet: pq.ParquetFile | None = None
    try:
        manifest = SnapshotDir(snapshot_dir).manifest
        payload["as_of"] = manifest.as_of.isoformat()
    except DataError as exc:
        failures.append(_precheck_failure(f"{MANIFEST_FILE} is readable", str(exc)))
    path = SnapshotDir(snapshot_dir).parquet
    try:
        parquet = open_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        failures.append(_precheck_failure(f"{SNAPSHOT_FILE} is readable", f"{path}: {exc}"))
    if failures or manifest is None or parquet is None:
        return _finish(snapshot_dir, False, len(failures), failures, None, payload, [])

    arrow_schema = parquet.schema_arrow
    present = {f.name: f.type for f in arrow_schema}
    row_count = parquet.metadata.num_rows
    expected = snapshot_columns(manifest.with_labels)
    value_columns = [c for c in arrow_schema.names if c != "text"]
    values = parquet.read(columns=value_columns) if value_columns else pa.table({})
    if "text" in present:
        values = values.append_column("text_length", _text_lengths(parquet))
    value_types = {f.name: f.type for f in values.schema}
    checksum = sha256_file(path)
    facts = _manifest_facts(manifest, row_count, checksum)
    payload["manifest_facts"] = facts
    payload["checksum"] = checksum  # what consumers compare the file with (SnapshotDir.require_validated)

    os.environ["GX_ANALYTICS_ENABLED"] = "False"  # GX analytics stay off, whatever the environment says
    from spendpred.logs import quiet_libraries

    quiet_libraries()  # before the import: GX logs hundreds of registry lines while importing
    import great_expectations as gx  # lazy: heavy, and not needed to import spendpred
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("snapshot")
    values_frame = values.to_pandas()
    del values  # keep one copy of the columns in memory
    batches = {
        "schema": (arrow_schema.empty_table().to_pandas(), _schema_expectations(gxe, expected, present)),
        "values": (values_frame, _value_expectations(gxe, value_types, manifest.with_labels, previous_rows, row_tolerance)),
        "manifest": (pd.DataFrame([facts]), _manifest_expectations(gxe, freshness_days)),
    }
    if manifest.source_checks is not None:  # else refused by the manifest batch (not recorded)
        batches["source"] = (pd.DataFrame([_source_facts(manifest)], dtype="float64"), _source_expectations(gxe))
    gx_results: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    evaluated = 0
    for name, (frame, expectations) in batches.items():
        definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_all")
        # expectations given up front: adding them one by one re-serialises the suite each time
        suite = context.suites.add(gx.ExpectationSuite(name=f"spendpred_snapshot_{name}", expectations=expectations))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"snapshot_{name}", data=definition, suite=suite)
        )
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
        if name == "values" and "user_id" in frame.columns:
            result_format["unexpected_index_column_names"] = ["user_id"]
        outcome = _jsonable(validation.run(batch_parameters={"dataframe": frame}, result_format=result_format).to_json_dict())
        gx_results[name] = outcome
        for item in outcome.get("results", []):
            evaluated += 1
            config = item.get("expectation_config", {})
            checks.append(
                {"batch": name, "check": (config.get("meta") or {}).get("check", config.get("type")), "success": item.get("success")}
            )
            if not item.get("success"):
                failure = _describe(name, item)
                rule = (config.get("meta") or {}).get("source_rule")
                if name == "source" and rule:
                    failure = _describe_source(failure, rule, manifest.source_checks)
                failures.append(failure)
    payload["gx"] = gx_results
    return _finish(snapshot_dir, not failures, evaluated, failures, row_count, payload, checks)
