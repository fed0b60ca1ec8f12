"""Point-in-time behaviour snapshots: features, text and labels as of a date, as Parquet.

A snapshot as of date D (``extract_snapshot``) holds one row per user who signed up by the
end of D. Everything is computed from rows with timestamps ``< D + 1 day`` (the cutoff);
the optional label is the completed-order spend in ``(D, D + H]``, i.e. orders with
``cutoff <= ordered_at < D + H + 1 day``. See ``sql/extract/`` for the SQL, which runs in the
warehouse.

Numeric features are float64 without nulls (``FEATURE_COLUMNS``). Sentinels for undefined
values: ``recency_days = tenure_days`` when the user has no completed order (as if the last
purchase were the signup), ``days_since_last_event = tenure_days`` when the user has no
event, ``mean_rating = 0`` without reviews and ``avg_basket = 0`` without completed orders.
All day counts are whole calendar days between the as-of date and the row's date.

The ``text`` column is rendered by ``spendpred.textify`` in one template version, chosen by
the ``text_template`` setting (``SPENDPRED_TEXT_TEMPLATE``; ``v2`` by default, a text that
changes only when the user acts) or the caller, and recorded in the manifest
(``text_template_version``); a model scores only snapshots of the template it was trained on.

Extraction also checks the source-data contract (``source_checks``: negative, non-finite or
implausible amounts, items below one, unknown event types, ratings outside 1..5, orphan rows,
duplicate keys, rows dated in the future) and records the counts in the manifest; the gate
(``spendpred.validation``) refuses a snapshot with any violation.

One bad row costs its user, not the night: a recent item that cannot be read (text that is not
UTF-8, a timestamp that does not parse) loses what cannot be read (the field, as if it were NULL,
or the whole item when its time or a search's query cannot be read) and its user is rendered
from what can be read. Such rows are counted and named by their key (kind, user, time), never by their
content, in one warning and in the manifest (``source_checks["unreadable_rows"]``, which the gate
does not refuse); when more than ``SPENDPRED_MAX_UNREADABLE_SHARE`` of the users have one, the
extract fails with one line and writes no snapshot. No source text reaches a log or a message.

Memory stays flat as users grow: the features and the per-user recent items (a few rows
per user, ranked in SQL) are two streams ordered by ``user_id`` in byte order, merged chunk by
chunk and appended to the Parquet file one row group at a time.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from spendpred import textify, warehouse
from spendpred.errors import ConfigError, DataError
from spendpred.files import sha256_file, temporary_sibling
from spendpred.snapshot import FEATURE_COLUMNS, REPORT_FILES, SNAPSHOT_FILE, Manifest, snapshot_columns
from spendpred.warehouse import SOURCE_TABLES

logger = logging.getLogger(__name__)

_EVENT_FEATURES = {
    "view": "views",
    "click": "clicks",
    "add_to_cart": "add_to_carts",
    "search": "searches",
    "wishlist": "wishlists",
}


def snapshot_schema(with_labels: bool) -> pa.Schema:
    """Return the Arrow schema of ``snapshot.parquet`` (strings and float64, in order)."""
    fields = [pa.field("user_id", pa.string()), pa.field("text", pa.string())]
    fields += [pa.field(name, pa.float64()) for name in snapshot_columns(with_labels)[2:]]
    return pa.schema(fields)


_TEXT_INPUTS = (
    "user_id",
    "tenure_days",
    "frequency_all",
    "monetary_all",
    "days_since_last_event",
    "has_events",
    *(f"{stem}_{w}" for stem in _EVENT_FEATURES.values() for w in ("30d", "90d")),
)

_FEATURE_QUERY_SCHEMA = pa.schema(
    [pa.field("user_id", pa.string())]
    + [pa.field(name, pa.float64()) for name in (*FEATURE_COLUMNS, "past_spend", "label")]
    + [pa.field("has_events", pa.int64())]
)


def query_params(dialect: str, as_of: date, horizon_days: int, with_labels: bool) -> dict[str, Any]:
    """Return the bound parameters of the extract SQL for an as-of date and horizon.

    ``cutoff`` = as_of + 1 day (00:00); windows start at cutoff - N days; ``label_end`` =
    as_of + H + 1 day. Bound as the dialect stores them (``warehouse.bind_values``).
    """
    cutoff = datetime.combine(as_of + timedelta(days=1), datetime.min.time())
    params: dict[str, Any] = {
        "as_of": as_of,
        "cutoff": cutoff,
        "start_30d": cutoff - timedelta(days=30),
        "start_90d": cutoff - timedelta(days=90),
        "start_365d": cutoff - timedelta(days=365),
        "past_start": cutoff - timedelta(days=horizon_days),
        "label_end": cutoff + timedelta(days=horizon_days),
        "with_labels": 1 if with_labels else 0,
        "max_orders": textify.MAX_RECENT_ORDERS,
        "max_searches": textify.MAX_RECENT_SEARCHES,
        "max_reviews": textify.MAX_RECENT_REVIEWS,
    }
    return warehouse.bind_values(dialect, params)


def _sql(name: str, dialect: str) -> str:
    """Load an extract SQL file without its comment lines (bind markers in comments confuse drivers)."""
    text = warehouse.load_sql(f"extract/{name}", dialect)
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))


def _as_datetime(value: Any, where: str = "the source relations") -> datetime | None:
    """Normalise a timestamp from either dialect (datetime, date or ISO text) to a naive datetime.

    Raises ``DataError`` naming ``where`` (never the value: source text stays out of messages).
    """
    if value is None:
        return None
    if isinstance(value, datetime):  # with a time zone (PostgreSQL timestamptz): as UTC, like the session
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time())
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise DataError(
            f"a timestamp in {where} is not in the contract format 'YYYY-MM-DD HH:MM:SS': fix the source rows"
        ) from None
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def source_stats(engine: sa.Engine, cutoff_params: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, str | None]]:
    """Return (row counts, newest timestamps as ISO text) of the source relations before the cutoff."""
    sql = _sql("source_stats", engine.dialect.name)
    with engine.connect() as conn:
        row = conn.execute(sa.text(sql), {"cutoff": cutoff_params["cutoff"]}).mappings().one()
    counts = {t: int(row[f"{t}_count"]) for t in SOURCE_TABLES}
    newest: dict[str, str | None] = {}
    for t in SOURCE_TABLES:
        ts = _as_datetime(row[f"{t}_max"], f"the newest row of {t}")
        newest[t] = ts.isoformat() if ts else None
    return counts, newest


def source_checks(
    engine: sa.Engine, cutoff_params: Mapping[str, Any], *, now: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """Check the source-data contract (``validation.SOURCE_RULES``) on the rows visible to a snapshot.

    Runs ``sql/extract/source_checks.sql`` once and returns, for every rule,
    ``{"violations": n, "examples": [up to MAX_EXAMPLES keys and values, as text]}``: what the
    manifest records and the gate turns into one expectation per rule (``n == 0``). Rows
    dated after the as-of date are never visible; ``timestamp_in_future`` instead counts
    rows dated at or after ``max(cutoff, now's day + FUTURE_TOLERANCE_DAYS)`` (``now``: the
    extraction time, UTC), which no correct warehouse holds.
    """
    from spendpred.validation import FUTURE_TOLERANCE_DAYS, MAX_EXAMPLES, MAX_PLAUSIBLE_MONEY, SOURCE_RULES

    dialect = engine.dialect.name
    today = (now or datetime.now(timezone.utc)).date()
    cutoff = _as_datetime(cutoff_params["cutoff"])
    assert cutoff is not None
    future_limit = max(cutoff, datetime.combine(today + timedelta(days=FUTURE_TOLERANCE_DAYS), datetime.min.time()))
    bound = warehouse.bind_values(
        dialect,
        {
            "cutoff": cutoff,
            "future_limit": future_limit,
            "max_money": float(MAX_PLAUSIBLE_MONEY),
            "event_types": list(textify.EVENT_TYPES),
            "max_examples": MAX_EXAMPLES,
        },
    )
    query = sa.text(_sql("source_checks", dialect)).bindparams(sa.bindparam("event_types", expanding=True))
    checks: dict[str, dict[str, Any]] = {rule: {"violations": 0, "examples": []} for rule in SOURCE_RULES}
    with engine.connect() as conn:
        for row in conn.execute(query, bound).mappings():
            entry = checks.setdefault(str(row["rule"]), {"violations": 0, "examples": []})
            entry["violations"] = int(row["n"])
            entry["examples"].append(str(row["example"]))
    checks["timestamp_in_future"]["since"] = future_limit.isoformat(sep=" ")
    bad = {rule: entry["violations"] for rule, entry in checks.items() if entry["violations"]}
    if bad:
        logger.warning("source data breaks the contract (rows visible to the snapshot): %s", bad)
    return checks


UNREADABLE = "unreadable_rows"
"""The manifest's ``source_checks`` entry for rows the extract could not read (not a gated rule)."""
_RAW = (bytes, bytearray, memoryview)
_TEXT_FIELDS = ("category", "status", "body", "query")


class UnreadableRows:
    """The recent items an extract could not read: counted and named by their key, never by their content."""

    def __init__(self, max_examples: int = 5) -> None:
        self.rows = 0
        self.users: set[str] = set()
        self.examples: list[str] = []
        self._max_examples = max_examples

    def add(self, rec: Mapping[str, Any]) -> None:
        """Count the item ``rec`` (``user_id``, ``kind``, ``at``) as unreadable."""
        self.rows += 1
        self.users.add(rec["user_id"])
        if len(self.examples) < self._max_examples:
            at = rec["at"]
            when = f" at {at.isoformat(sep=' ')}" if isinstance(at, datetime) else ""
            self.examples.append(f"{rec['kind']} of user {rec['user_id']}{when}")

    def as_dict(self, users: int, max_share: float) -> dict[str, Any]:
        """Return the manifest entry: rows, users, their share of ``users``, the allowed share and example keys."""
        share = len(self.users) / users if users else 0.0
        return {"rows": self.rows, "users": len(self.users), "share": share, "max_share": max_share,
                "examples": list(self.examples)}  # fmt: skip


def _source_text(value: Any) -> str | None:
    """Return a source text value read raw (``{{raw_text(x)}}``) as ``str``; ``UnicodeDecodeError`` if not UTF-8."""
    if isinstance(value, _RAW):
        return bytes(value).decode("utf-8")
    return value


def _readable(rec: dict[str, Any], unreadable: UnreadableRows) -> dict[str, Any] | None:
    """Return the recent item ``rec`` with its text decoded and its time parsed, as much as can be read.

    A text field that is not UTF-8 becomes ``None`` (as if the warehouse held NULL there: a review
    without its body, an order without its category); an item whose time cannot be read, or a
    search whose query cannot, is dropped (``None``). Either way the row is counted in ``unreadable``.
    """
    try:
        rec["at"] = _as_datetime(_source_text(rec["at"]))
    except (UnicodeDecodeError, DataError):
        rec["at"] = None
        unreadable.add(rec)
        return None
    damaged = False
    for name in _TEXT_FIELDS:
        try:
            rec[name] = _source_text(rec.get(name))
        except UnicodeDecodeError:
            rec[name], damaged = None, True
    if damaged:
        unreadable.add(rec)
    if rec["kind"] == "search" and not rec.get("query"):
        return None
    return rec


def _item_groups(
    engine: sa.Engine, params: Mapping[str, Any], chunk_rows: int, unreadable: UnreadableRows | None = None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(user_id, rows)`` of the recent-items stream, one group per user, in stream order.

    What cannot be read is left out and counted in ``unreadable`` (``_readable``). Raises ``DataError``
    if the stream is not ordered by user_id in byte order.
    """
    sql = _sql("recent_items", engine.dialect.name)
    unreadable = unreadable if unreadable is not None else UnreadableRows()
    current: str | None = None
    rows: list[dict[str, Any]] = []
    for chunk in warehouse.stream_query(engine, sql, params, chunk_rows=chunk_rows):
        for rec in chunk.to_pylist():
            uid = rec["user_id"]
            if uid != current:
                if current is not None:
                    if uid < current:
                        raise DataError(
                            f"recent items are not ordered by user_id in byte order ({uid!r} after "
                            f"{current!r}): the extract SQL must ORDER BY user_id COLLATE \"C\" (PostgreSQL) "
                            "or BINARY (SQLite)"
                        )
                    yield current, rows
                current, rows = uid, []
            if _readable(rec, unreadable) is not None:
                rows.append(rec)
    if current is not None:
        yield current, rows


class _ItemMerger:
    """Merge-join helper: hands out the recent items of users asked for in ascending order."""

    def __init__(self, groups: Iterator[tuple[str, list[dict[str, Any]]]]) -> None:
        self._groups = groups
        self._head: tuple[str, list[dict[str, Any]]] | None = None
        self._done = False
        self._last_uid: str | None = None
        self._last_rows: list[dict[str, Any]] = []
        self._advance()

    def _advance(self) -> None:
        try:
            self._head = next(self._groups)
        except StopIteration:
            self._head, self._done = None, True

    def take(self, uid: str) -> list[dict[str, Any]]:
        """Return the item rows of ``uid``; users must be asked for in non-decreasing order."""
        if self._last_uid is not None:
            if uid == self._last_uid:
                return self._last_rows  # a duplicated user in the source: same items
            if uid < self._last_uid:
                raise DataError(
                    f"features are not ordered by user_id in byte order ({uid!r} after {self._last_uid!r}): "
                    "the extract SQL must ORDER BY user_id COLLATE \"C\" (PostgreSQL) or BINARY (SQLite)"
                )
        while self._head is not None and self._head[0] < uid:  # items of users not in the snapshot
            self._advance()
        rows: list[dict[str, Any]] = []
        if self._head is not None and self._head[0] == uid:
            rows = self._head[1]
            self._advance()
        self._last_uid, self._last_rows = uid, rows
        return rows


def behaviour_of(feature_row: Mapping[str, Any], items: list[dict[str, Any]], as_of: date) -> textify.UserBehaviour:
    """Build the ``textify.UserBehaviour`` of one user from a feature row and its recent items."""
    orders, searches, reviews = [], [], []
    for rec in items:
        at = _as_datetime(rec["at"])
        if at is None:
            continue
        kind = rec["kind"]
        if kind == "order":
            orders.append(
                textify.OrderItem(at=at, amount=float(rec["amount"] or 0.0), category=rec["category"], status=rec["status"] or "")
            )
        elif kind == "search":
            searches.append(textify.SearchItem(at=at, query=rec.get("query") or ""))
        elif kind == "review":
            reviews.append(textify.ReviewItem(at=at, rating=int(rec["rating"] or 0), body=rec["body"]))
    has_events = bool(feature_row.get("has_events"))
    return textify.UserBehaviour(
        as_of=as_of,
        tenure_days=int(feature_row["tenure_days"]),
        completed_orders=int(feature_row["frequency_all"]),
        completed_spend=float(feature_row["monetary_all"]),
        events_30d={k: int(feature_row[f"{v}_30d"]) for k, v in _EVENT_FEATURES.items()},
        events_90d={k: int(feature_row[f"{v}_90d"]) for k, v in _EVENT_FEATURES.items()},
        days_since_last_event=int(feature_row["days_since_last_event"]) if has_events else None,
        orders=orders,
        searches=searches,
        reviews=reviews,
        user_id=feature_row["user_id"],
    )


_SQLITE_UNDECODABLE = re.compile(r"Could not decode to UTF-8 column '([^']*)'")


def _without_source_text(exc: BaseException) -> BaseException:
    """Return the error to raise for ``exc``: a ``DataError`` without the value when a driver could not decode source text.

    SQLite's driver fails a whole query on one TEXT value that is not UTF-8, with the value in
    its message; a PostgreSQL database in SQL_ASCII does the same through ``UnicodeDecodeError``.
    Any other error is returned as it is.
    """
    text = str(getattr(exc, "orig", None) or exc)
    match = _SQLITE_UNDECODABLE.search(text)
    if match or isinstance(exc, UnicodeDecodeError) or isinstance(getattr(exc, "orig", None), UnicodeDecodeError):
        column = f"column {match.group(1)!r} of " if match else ""
        return DataError(
            f"a value in {column}the source relations is not valid UTF-8 text (value not shown) and the extract cannot "
            "leave its row out (an id or a timestamp): fix its encoding in the warehouse, or expose the column "
            "through a view that converts it"
        )
    return exc


class _source_text_kept_out:  # noqa: N801 - used like contextlib's context managers
    """Within the block, a driver's failure to decode source text becomes ``_without_source_text``'s ``DataError``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, (sa.exc.DBAPIError, UnicodeDecodeError)):
            error = _without_source_text(exc)
            if error is not exc:
                raise error from None
        return False


def _check_unreadable(unreadable: UnreadableRows, users: int, max_share: float, as_of: date) -> dict[str, Any]:
    """Return the manifest entry of the unreadable rows; warn naming their keys; ``DataError`` above ``max_share``."""
    entry = unreadable.as_dict(users, max_share)
    if not unreadable.rows:
        return entry
    keys = "; ".join(unreadable.examples) + ("; ..." if unreadable.rows > len(unreadable.examples) else "")
    what = (
        f"{unreadable.rows} source row(s) of {len(unreadable.users)} of {users} user(s) ({entry['share']:.2%}) "
        f"as of {as_of} cannot be read (text not UTF-8 or an unparsable timestamp; content not shown): {keys}"
    )
    if entry["share"] > max_share:
        raise DataError(
            f"{what}: more than SPENDPRED_MAX_UNREADABLE_SHARE={max_share:g} of the users, so no snapshot was written: "
            "fix the encoding of those rows in the warehouse (or raise the setting)"
        )
    logger.warning("%s: what cannot be read is left out, those users are rendered from the rest", what)
    return entry


def extract_snapshot(
    engine: sa.Engine,
    as_of: date,
    out_dir: Path,
    horizon_days: int,
    with_labels: bool,
    chunk_rows: int = 50_000,
    template_version: str | None = None,
    *,
    max_tokens: int = textify.DEFAULT_MAX_TOKENS,
    count_tokens: textify.TokenCounter | None = None,
    max_unreadable_share: float | None = None,
) -> Manifest:
    """Extract the behaviour snapshot as of ``as_of`` into ``out_dir``; return its manifest.

    Writes ``out_dir/snapshot.parquet`` (one row per user who signed up by the end of
    ``as_of``: ``user_id``, ``text``, ``FEATURE_COLUMNS``, ``past_spend`` and, when
    ``with_labels``, ``label`` = completed spend in (as_of, as_of + horizon_days]) and
    ``out_dir/manifest.json``. Features and text use only rows before as_of + 1 day. The
    texts are rendered with ``template_version`` (default: the ``text_template`` setting,
    ``SPENDPRED_TEXT_TEMPLATE``), which the manifest records. Any
    earlier ``validation.json``/``validation.md`` in ``out_dir`` is removed (it described an
    older file). Files are replaced atomically, so a failed run leaves no half snapshot.

    A recent item that cannot be read (text not UTF-8, a timestamp that does not parse) is left
    out and counted (``source_checks["unreadable_rows"]``: rows, users, example keys); its user
    is rendered from the rest. ``max_unreadable_share`` (default: ``SPENDPRED_MAX_UNREADABLE_SHARE``)
    bounds the share of users with such a row.

    Raises ``ConfigError`` for a bad horizon, chunk size or template version, and
    ``DataError`` when the source rows break the contract (e.g. unparsable timestamps), when
    more users than ``max_unreadable_share`` have unreadable rows, or when a value the extract
    cannot leave out (an id, a feature's timestamp) is not UTF-8; no message shows source text.
    """
    if horizon_days <= 0:
        raise ConfigError(f"horizon_days must be a positive number of days, got {horizon_days}")
    if chunk_rows <= 0:
        raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
    if template_version is None or max_unreadable_share is None:
        from spendpred.config import get_settings

        settings = get_settings()
        template_version = settings.text_template if template_version is None else template_version
        if max_unreadable_share is None:
            max_unreadable_share = settings.max_unreadable_share
    if not 0.0 <= max_unreadable_share <= 1.0:
        raise ConfigError(f"max_unreadable_share must be in 0..1, got {max_unreadable_share}")
    version = textify.check_template(template_version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out_dir / name).unlink(missing_ok=True)

    dialect = engine.dialect.name
    params = query_params(dialect, as_of, horizon_days, with_labels)
    started = time.monotonic()
    logger.info(
        "extracting snapshot as of %s (horizon %d days, labels %s, text template %s, %s warehouse) into %s",
        as_of, horizon_days, with_labels, version, dialect, out_dir,
    )
    with _source_text_kept_out():
        counts, newest = source_stats(engine, params)
        contract = source_checks(engine, params)

    schema = snapshot_schema(with_labels)
    columns = snapshot_columns(with_labels)
    final = out_dir / SNAPSHOT_FILE
    tmp = temporary_sibling(final)
    rows_written = 0
    unreadable = UnreadableRows()
    item_groups = _item_groups(engine, params, chunk_rows, unreadable)
    try:
        merger = _ItemMerger(item_groups)
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for chunk in warehouse.stream_query(
                engine, _sql("features", dialect), params, chunk_rows=chunk_rows, schema=_FEATURE_QUERY_SCHEMA
            ):
                cols = chunk.select(_TEXT_INPUTS).to_pydict()  # only what the text needs, as lists
                texts = []
                for i in range(chunk.num_rows):
                    rec = {name: cols[name][i] for name in _TEXT_INPUTS}
                    behaviour_row = behaviour_of(rec, merger.take(rec["user_id"]), as_of)
                    texts.append(
                        textify.render(behaviour_row, max_tokens=max_tokens, count_tokens=count_tokens, template=version)
                    )
                del cols
                arrays = [chunk.column("user_id"), pa.array(texts, pa.string())]
                arrays += [chunk.column(name) for name in columns[2:]]
                table = pa.Table.from_arrays(arrays, names=columns)
                writer.write_table(table.cast(schema))
                rows_written += table.num_rows
                logger.info("snapshot %s: %d users written", as_of, rows_written)
            if rows_written == 0:
                writer.write_table(schema.empty_table())
        contract[UNREADABLE] = _check_unreadable(unreadable, rows_written, max_unreadable_share, as_of)
        os.replace(tmp, final)
    except (sa.exc.DBAPIError, UnicodeDecodeError) as exc:
        error = _without_source_text(exc)
        if error is exc:
            raise
        raise error from None
    finally:
        item_groups.close()  # ends the second stream (and returns its connection) even on failure
        tmp.unlink(missing_ok=True)

    stamps = [v for v in newest.values() if v]
    manifest = Manifest(
        as_of=as_of,
        horizon_days=int(horizon_days),
        with_labels=bool(with_labels),
        row_count=rows_written,
        text_template_version=version,
        feature_columns=list(FEATURE_COLUMNS),
        source_row_counts=counts,
        max_source_timestamp=max(stamps) if stamps else None,
        checksum=sha256_file(final),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        max_source_timestamps=newest,
        source_checks=contract,
    )
    manifest.write(out_dir)
    logger.info(
        "snapshot as of %s: %d users, %.1f s, sources %s", as_of, rows_written, time.monotonic() - started, counts
    )
    if rows_written == 0:
        logger.warning("snapshot as of %s is empty: no user signed up before %s", as_of, params["cutoff"])
    return manifest
