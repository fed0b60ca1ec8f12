"""Write one run's scores and tier thresholds to the warehouse, atomically and idempotently.

The write side only: what was published is read back through ``spendpred.report``.

``publish_scores`` validates everything first (nothing is written for bad input), then in
ONE transaction: stages the rows in a temp table (COPY on PostgreSQL), deletes the run's
``as_of`` partition of ``user_spend_scores``, inserts the staged rows, and replaces the
run's ``tier_thresholds``. Publishing the same date twice leaves one set of rows; a failure
anywhere rolls everything back, so readers see the previous contents, never a half-written
partition. On PostgreSQL concurrent publishers queue on a table lock; readers never wait.

The SQL lives in ``sql/publish/``; the read-only grants in ``sql/grants/``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from spendpred import warehouse
from spendpred.config import get_settings
from spendpred.errors import ConfigError, DataError, PublishError, PublishInterrupted
from spendpred.tiers import TIERS, Threshold

logger = logging.getLogger(__name__)

STAGE_TABLE = "spendpred_publish_stage"
SCORE_COLUMNS: tuple[str, ...] = ("user_id", "predicted_spend", "tier")
REASONS_STAGE_TABLE = "spendpred_reasons_stage"
REASON_COLUMNS: tuple[str, ...] = ("user_id", "rank", "reason", "contribution", "feature")
"""The columns of a reasons table (``spendpred.explain.reasons_table``); the run-wide ones are bound."""
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


# --------------------------------------------------------------------------- validation


def _scored_at(value: dt.datetime | None) -> dt.datetime:
    """Return a naive UTC timestamp truncated to seconds (the contract's TIMESTAMP)."""
    if value is None:
        value = dt.datetime.now(dt.timezone.utc)
    if not isinstance(value, dt.datetime):
        raise PublishError(f"scored_at must be a datetime, got {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _first(user_ids: pa.ChunkedArray, mask: pa.ChunkedArray | pa.Array) -> tuple[int, Any]:
    """Return ``(row, user_id)`` of the first row where ``mask`` is true."""
    index = int(np.flatnonzero(np.asarray(pc.fill_null(mask, False)))[0])
    return index, user_ids[index].as_py()


def validate_scores(scores: pa.Table | Any) -> pa.Table:
    """Return ``scores`` as a table of ``user_id`` (string), ``predicted_spend`` (float64), ``tier``.

    The rows come back sorted by ``user_id`` in code-point order (the order of the C and
    C.UTF-8 collations), so that inserting them appends to the primary-key index instead
    of splitting its pages at random (2-3x faster for a million rows).
    Accepts a ``pyarrow.Table`` or a pandas DataFrame; other columns are dropped. Raises
    ``DataError`` naming the row and user when the table is empty, a column is missing,
    a ``user_id`` is null, empty, duplicated or holds a NUL character, a score is null, NaN, infinite or negative,
    or a tier is not one of high, medium, low.
    """
    if not isinstance(scores, pa.Table):
        if hasattr(scores, "to_dict") and hasattr(scores, "columns"):  # a pandas DataFrame
            scores = pa.Table.from_pandas(scores, preserve_index=False)
        else:
            raise DataError(f"scores must be a pyarrow.Table (user_id, predicted_spend, tier), got {type(scores).__name__}")
    missing = [c for c in SCORE_COLUMNS if c not in scores.column_names]
    if missing:
        raise DataError(
            f"scores table lacks column(s) {missing}; it has {scores.column_names}. "
            "Pass user_id, predicted_spend and tier (from spendpred.tiers.assign_tiers)"
        )
    if scores.num_rows == 0:
        raise DataError("no scores to publish (0 rows): an empty run is refused so that the previous partition is kept")
    try:
        user_ids = pc.cast(scores.column("user_id"), pa.string())
    except pa.ArrowInvalid as exc:
        raise DataError(f"column user_id cannot be read as text: {exc}") from exc
    if user_ids.null_count:
        row, _ = _first(user_ids, pc.is_null(user_ids))
        raise DataError(f"user_id is null in row {row}: every score needs a user id")
    empty = pc.equal(pc.utf8_length(user_ids), 0)
    if pc.any(empty).as_py():
        row, _ = _first(user_ids, empty)
        raise DataError(f"user_id is an empty string in row {row}: every score needs a user id")
    nul = pc.match_substring(user_ids, "\x00")
    if pc.any(nul).as_py():
        row, user = _first(user_ids, nul)
        raise DataError(f"user_id {user!r} in row {row} contains a NUL character, which PostgreSQL text cannot hold")
    # sorted once: duplicates are then neighbours, and the rows go out in primary-key order
    order = pc.sort_indices(user_ids)
    sorted_ids = user_ids.take(order)
    repeated = pc.equal(sorted_ids[:-1], sorted_ids[1:])
    if pc.any(repeated).as_py():
        dupes = pc.unique(sorted_ids[:-1].filter(repeated))
        example = dupes[0].as_py()
        times = pc.sum(pc.equal(user_ids, example)).as_py()
        raise DataError(
            f"{len(dupes)} user_id value(s) appear more than once (e.g. {example!r}, "
            f"{times} times): publish one score per user"
        )
    spend_type = scores.schema.field("predicted_spend").type
    if not (pa.types.is_floating(spend_type) or pa.types.is_integer(spend_type) or pa.types.is_decimal(spend_type)):
        raise DataError(f"predicted_spend must be numeric, got {spend_type}")
    spend = pc.cast(scores.column("predicted_spend"), pa.float64())
    if spend.null_count:
        row, user = _first(user_ids, pc.is_null(spend))
        raise DataError(f"predicted_spend is null for user {user!r} (row {row})")
    not_finite = pc.invert(pc.is_finite(spend))
    if pc.any(not_finite).as_py():
        row, user = _first(user_ids, not_finite)
        raise DataError(
            f"predicted_spend is {spend[row].as_py()!r} for user {user!r} (row {row}): scores must be finite"
        )
    negative = pc.less(spend, 0.0)
    if pc.any(negative).as_py():
        row, user = _first(user_ids, negative)
        raise DataError(
            f"predicted_spend is {spend[row].as_py()!r} for user {user!r} (row {row}): scores must be >= 0"
        )
    tiers = pc.cast(scores.column("tier"), pa.string())
    bad_tier = pc.invert(pc.fill_null(pc.is_in(tiers, value_set=pa.array(TIERS)), False))
    if pc.any(bad_tier).as_py():
        row, user = _first(user_ids, bad_tier)
        raise DataError(
            f"tier is {tiers[row].as_py()!r} for user {user!r} (row {row}): use one of {', '.join(TIERS)}"
        )
    return pa.Table.from_arrays([sorted_ids, spend.take(order), tiers.take(order)], names=list(SCORE_COLUMNS))


def _bound(value: Any, tier: str, field: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"threshold {field} of tier {tier!r} is {value!r}: it must be a number or None") from None
    if not math.isfinite(number):
        raise DataError(f"threshold {field} of tier {tier!r} is {value!r}: it must be finite or None")
    return number


def validate_thresholds(thresholds: Sequence[Threshold | Mapping[str, Any]], scores: pa.Table | None = None) -> list[Threshold]:
    """Return the thresholds as ``Threshold`` objects in the order high, medium, low.

    Requires exactly one threshold per tier. When a validated ``scores`` table is given,
    every score must lie in its tier's interval ``[lower_bound, upper_bound)``.
    Raises ``DataError`` naming the tier (and user) otherwise.
    """
    found: dict[str, Threshold] = {}
    for item in thresholds:
        if isinstance(item, Mapping):
            try:
                item = Threshold(str(item["tier"]), item.get("lower_bound"), item.get("upper_bound"))
            except KeyError:
                raise DataError(f"threshold {dict(item)!r} has no 'tier'") from None
        if not isinstance(item, Threshold):
            raise DataError(f"thresholds must be spendpred.tiers.Threshold objects, got {item!r}")
        if item.tier not in TIERS:
            raise DataError(f"threshold tier {item.tier!r} is not one of {', '.join(TIERS)}")
        if item.tier in found:
            raise DataError(f"threshold for tier {item.tier!r} is given twice")
        found[item.tier] = Threshold(
            item.tier, _bound(item.lower_bound, item.tier, "lower_bound"), _bound(item.upper_bound, item.tier, "upper_bound")
        )
    missing = [t for t in TIERS if t not in found]
    if missing:
        raise DataError(
            f"thresholds lack tier(s) {missing}: pass the thresholds returned by spendpred.tiers.assign_tiers"
        )
    ordered = [found[t] for t in TIERS]
    if scores is not None:
        spend = scores.column("predicted_spend")
        tiers = scores.column("tier")
        for threshold in ordered:
            outside: Any = pa.scalar(False)
            if threshold.lower_bound is not None:
                outside = pc.or_(outside, pc.less(spend, threshold.lower_bound))
            if threshold.upper_bound is not None:
                outside = pc.or_(outside, pc.greater_equal(spend, threshold.upper_bound))
            wrong = pc.and_(pc.equal(tiers, threshold.tier), outside)
            if pc.any(wrong).as_py():
                row, user = _first(scores.column("user_id"), wrong)
                raise DataError(
                    f"user {user!r} (row {row}) has tier {threshold.tier!r} but score {spend[row].as_py()!r} lies "
                    f"outside that tier's interval [{threshold.lower_bound}, {threshold.upper_bound}): "
                    "compute tiers and thresholds together with spendpred.tiers.assign_tiers"
                )
    return ordered


def validate_reasons(reasons: pa.Table | Any, scores: pa.Table) -> pa.Table:
    """Return ``reasons`` as a table of ``REASON_COLUMNS`` whose users are all among the validated ``scores``.

    Accepts a ``pyarrow.Table`` or a pandas DataFrame (possibly empty). Raises ``DataError``
    naming the column, row or user when a column is missing, a user was not scored, a
    ``(user_id, rank)`` repeats, a rank is below 1, a reason or feature is empty, or a
    contribution is null or not finite.
    """
    if not isinstance(reasons, pa.Table):
        if hasattr(reasons, "to_dict") and hasattr(reasons, "columns"):
            reasons = pa.Table.from_pandas(reasons, preserve_index=False)
        else:
            raise DataError(f"reasons must be a pyarrow.Table ({', '.join(REASON_COLUMNS)}), got {type(reasons).__name__}")
    missing = [c for c in REASON_COLUMNS if c not in reasons.column_names]
    if missing:
        raise DataError(f"reasons table lacks column(s) {missing}: write it with spendpred.explain.reasons_table")
    try:
        table = pa.Table.from_arrays(
            [pc.cast(reasons.column("user_id"), pa.string()), pc.cast(reasons.column("rank"), pa.int64()),
             pc.cast(reasons.column("reason"), pa.string()), pc.cast(reasons.column("contribution"), pa.float64()),
             pc.cast(reasons.column("feature"), pa.string())],
            names=list(REASON_COLUMNS),
        )  # fmt: skip
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"reasons table has a column of the wrong type: {exc}") from exc
    if table.num_rows == 0:
        return table
    users = table.column("user_id")
    unknown = pc.invert(pc.fill_null(pc.is_in(users, value_set=scores.column("user_id").combine_chunks()), False))
    if pc.any(unknown).as_py():
        row, user = _first(users, unknown)
        raise DataError(f"reasons row {row} is for user {user!r}, who has no score in this run: explain the published scores")
    for column in ("rank", "reason", "contribution", "feature"):
        if table.column(column).null_count:
            row, user = _first(users, pc.is_null(table.column(column)))
            raise DataError(f"reasons row {row} (user {user!r}) has a null {column}")
    bad = pc.or_(pc.less(table.column("rank"), 1), pc.or_(pc.equal(pc.utf8_length(table.column("reason")), 0),
                                                        pc.invert(pc.is_finite(table.column("contribution")))))  # fmt: skip
    if pc.any(bad).as_py():
        row, user = _first(users, bad)
        raise DataError(f"reasons row {row} (user {user!r}) has a rank below 1, an empty reason or a contribution that is not finite")
    keys = pc.binary_join_element_wise(users, pc.cast(table.column("rank"), pa.string()), "\x1f")
    if len(pc.unique(keys)) != table.num_rows:
        raise DataError("reasons hold a (user_id, rank) pair more than once: publish one reason per user and rank")
    return table.take(pc.sort_indices(table, sort_keys=[("user_id", "ascending"), ("rank", "ascending")]))


# --------------------------------------------------------------------------- the transaction


def _execute(conn: sa.Connection, name: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> sa.CursorResult[Any]:
    """Run the single statement of ``sql/publish/<name>`` with bound parameters."""
    sql = warehouse.load_sql(f"publish/{name}", conn.dialect.name)
    return conn.execute(sa.text(sql), params)  # type: ignore[arg-type]


def _stage_rows(conn: sa.Connection, rows: pa.Table, chunk_rows: int) -> int:
    """Create the staging temp table and load ``rows`` into it in chunks; return the count."""
    warehouse.run_script(conn, warehouse.load_sql("publish/stage", conn.dialect.name))
    staged = 0
    for batch in rows.to_batches(max_chunksize=chunk_rows):
        staged += warehouse.bulk_insert(conn, STAGE_TABLE, pa.Table.from_batches([batch]))
    return staged


def _delete_partition(conn: sa.Connection, params: Mapping[str, Any]) -> int:
    """Delete the run's partition of ``user_spend_scores``; return the rows removed."""
    return int(_execute(conn, "delete_partition", {"as_of": params["as_of"]}).rowcount)


def _insert_partition(conn: sa.Connection, params: Mapping[str, Any]) -> int:
    """Insert the staged rows as the run's partition; return the rows inserted."""
    return int(_execute(conn, "insert_partition", params).rowcount)


def _replace_thresholds(conn: sa.Connection, params: Mapping[str, Any], thresholds: Sequence[Threshold]) -> None:
    """Replace the run's rows of ``tier_thresholds``."""
    _execute(conn, "delete_thresholds", {"as_of": params["as_of"]})
    _execute(
        conn,
        "insert_threshold",
        [
            {
                "as_of": params["as_of"],
                "tier": t.tier,
                "lower_bound": t.lower_bound,
                "upper_bound": t.upper_bound,
                "model_version": params["model_version"],
            }
            for t in thresholds
        ],
    )


def _replace_reasons(conn: sa.Connection, params: Mapping[str, Any], reasons: pa.Table | None, chunk_rows: int) -> int:
    """Replace the run's rows of ``user_spend_reasons`` (none when ``reasons`` is None); return the rows inserted."""
    _execute(conn, "delete_reasons", {"as_of": params["as_of"]})
    if reasons is None or reasons.num_rows == 0:
        return 0
    warehouse.run_script(conn, warehouse.load_sql("publish/stage_reasons", conn.dialect.name))
    for batch in reasons.to_batches(max_chunksize=chunk_rows):
        warehouse.bulk_insert(conn, REASONS_STAGE_TABLE, pa.Table.from_batches([batch]))
    inserted = int(_execute(conn, "insert_reasons", params).rowcount)
    warehouse.run_script(conn, warehouse.load_sql("publish/unstage_reasons", conn.dialect.name))
    return inserted


def publish_scores(
    engine: sa.Engine,
    as_of: dt.date,
    scores: pa.Table,
    thresholds: Sequence[Threshold | Mapping[str, Any]],
    model_name: str,
    model_version: str,
    scored_at: dt.datetime | None = None,
    chunk_rows: int | None = None,
    reasons: pa.Table | Any | None = None,
    reason_template: str = "v1",
) -> int:
    """Replace the ``as_of`` partition of ``user_spend_scores``, its ``tier_thresholds`` and its ``user_spend_reasons``.

    ``reasons`` (``REASON_COLUMNS``, users among ``scores``; ``spendpred.explain.reasons_table``)
    replace the partition's reasons in the same transaction, with ``reason_template`` as their
    template version; without them the partition's old reasons are deleted (they described the
    replaced scores).

    ``scores`` holds ``user_id``, ``predicted_spend``, ``tier``; ``thresholds`` one
    ``Threshold`` per tier (as returned by ``spendpred.tiers.assign_tiers``); ``scored_at``
    defaults to now (UTC). Rows are staged in chunks of ``chunk_rows`` (default: the
    ``chunk_rows`` setting). Returns the number of rows published.

    Raises ``DataError`` for invalid scores or thresholds and ``PublishError`` for invalid
    arguments or a database failure; in every case nothing is changed in the warehouse.
    """
    started = time.perf_counter()
    if not isinstance(as_of, dt.date) or isinstance(as_of, dt.datetime):
        raise PublishError(f"as_of must be a date (datetime.date, e.g. 2024-06-30), got {as_of!r}")
    day = as_of
    for field, value in (("model_name", model_name), ("model_version", model_version)):
        if not isinstance(value, str) or not value.strip():
            raise PublishError(f"{field} must be a non-empty string, got {value!r}")
    stamp = _scored_at(scored_at)
    rows = validate_scores(scores)
    checked = validate_thresholds(thresholds, rows)
    reason_rows = validate_reasons(reasons, rows) if reasons is not None else None
    chunk = int(chunk_rows or get_settings().chunk_rows)
    if chunk <= 0:
        raise PublishError(f"chunk_rows must be positive, got {chunk_rows!r}")
    params = warehouse.bind_values(
        engine.dialect.name,
        {"as_of": day, "model_name": model_name, "model_version": model_version, "scored_at": stamp,
         "template_version": reason_template},
    )  # fmt: skip
    # raw DBAPI cursors (COPY, scripts) raise the driver's own errors, not SQLAlchemy's
    dbapi_error: type[Exception] = getattr(engine.dialect.dbapi, "Error", sa.exc.SQLAlchemyError)
    marks = [time.perf_counter()]
    try:
        with engine.begin() as conn:
            staged = _stage_rows(conn, rows, chunk)
            marks.append(time.perf_counter())
            removed = _delete_partition(conn, params)
            inserted = _insert_partition(conn, params)
            if inserted != staged:
                raise PublishError(f"staged {staged} rows but inserted {inserted}; rolled back, previous contents kept")
            _replace_thresholds(conn, params, checked)
            explained = _replace_reasons(conn, params, reason_rows, chunk)
            warehouse.run_script(conn, warehouse.load_sql("publish/unstage", conn.dialect.name))
            marks.append(time.perf_counter())
        marks.append(time.perf_counter())
    except (sa.exc.SQLAlchemyError, dbapi_error) as exc:
        hint = ""
        text = str(exc).lower()
        if "does not exist" in text or "no such table" in text:
            hint = " (are the output tables there? run `spendpred db init` first)"
        detail = getattr(exc, "orig", None) or exc
        # a lost connection or a lock timeout may pass: Airflow retries PublishInterrupted
        operational = isinstance(exc, sa.exc.OperationalError) or type(exc).__name__ == "OperationalError"
        failure = PublishInterrupted if operational and not hint else PublishError
        raise failure(
            f"publishing {rows.num_rows} scores for {day} failed and was rolled back; "
            f"the previous contents are kept{hint}: {str(detail).strip()}"
        ) from exc
    sizes = {t: int(pc.sum(pc.equal(rows.column("tier"), t)).as_py() or 0) for t in TIERS}
    logger.info(
        "published %d scores for %s (model %s v%s; replaced %d rows) in %.2fs "
        "(validate %.2fs, stage %.2fs, swap %.2fs, commit %.2fs); tiers %s; %d reason rows",
        inserted,
        day,
        model_name,
        model_version,
        removed,
        time.perf_counter() - started,
        marks[0] - started,
        marks[1] - marks[0],
        marks[2] - marks[1],
        marks[3] - marks[2],
        sizes,
        explained,
    )
    return inserted


# --------------------------------------------------------------------------- grants


_GRANTED_ARRAY = re.compile(r"\bgranted\s+text\[\]\s*:=\s*ARRAY\[(?P<names>[^\]]*)\]", re.IGNORECASE)


def readonly_views() -> tuple[str, ...]:
    """Return what a read-only role may read: the views (schema ``spendpred``) it is granted SELECT on, in order.

    ``sql/grants/readonly.postgresql.sql`` owns the list (its ``granted`` array, which the script
    grants and nothing else); this reads it from there, so the script and the code cannot
    disagree. Raises ``ConfigError`` when the script holds no such list.
    """
    found = _GRANTED_ARRAY.search(warehouse.load_sql("grants/readonly", "postgresql"))
    views = tuple(re.findall(r"'([a-z_][a-z0-9_]*)'", found.group("names"))) if found else ()
    if not views:
        raise ConfigError(
            "sql/grants/readonly.postgresql.sql has no 'granted text[] := ARRAY[...]' list of views: restore it from git"
        )
    return views


def grant_readonly(engine: sa.Engine, role: str) -> None:
    """Give ``role`` read access to the downstream views (:func:`readonly_views`) and nothing else (PostgreSQL).

    Runs ``sql/grants/readonly.postgresql.sql`` with the role name passed as a setting
    (never pasted into SQL). The role must exist. Raises ``ConfigError`` for a SQLite
    warehouse, an invalid role name or a missing role, and, changing nothing, for a role that
    could still write: the connected role, a superuser, a role owning the ``spendpred`` schema
    or its tables (or a member of such a role), or one keeping write rights through another
    role or PUBLIC (the script's checks; rights granted to the role itself are revoked).
    """
    if engine.dialect.name != "postgresql":
        raise ConfigError("read-only grants need PostgreSQL: SQLite has no roles (share a read-only copy instead)")
    if not isinstance(role, str) or not _ROLE_NAME.match(role):
        raise ConfigError(
            f"invalid role name {role!r}: use letters, digits and underscores (at most 63, not starting with a digit)"
        )
    script = warehouse.load_sql("grants/readonly", "postgresql")
    with engine.begin() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
        if exists is None:
            raise ConfigError(f"role {role!r} does not exist: create it first, e.g. CREATE ROLE {role} LOGIN PASSWORD '...'")
        conn.execute(sa.text("SELECT set_config('spendpred.readonly_role', :role, true)"), {"role": role})
        try:
            warehouse.run_script(conn, script)
        except engine.dialect.dbapi.Error as exc:  # the script's own refusals (RAISE EXCEPTION): one line, nothing changed
            diag = getattr(exc, "diag", None)
            if getattr(exc, "pgcode", None) != "P0001" or diag is None:
                raise
            hint = f": {diag.message_hint}" if diag.message_hint else ""
            raise ConfigError(f"refusing read-only grant, nothing changed: {diag.message_primary}{hint}") from None
    logger.info("granted read-only access to the spendpred views to role %s", role)
