"""Import the CDNOW purchase log into the warehouse's source relations.

The CDNOW master file (Fader & Hardie) lists every purchase of 23,570 customers who first
bought in the first quarter of 1997, up to mid-1998: a header line, then one purchase per
line with four whitespace-separated fields::

     customer_id  date number_of_cds  dollar_value
     00001 19970101  1   11.77

Mapping onto the contract:

- one ``users`` row per customer: ``user_id`` is the customer number without leading zeros
  (``"00001"`` → ``"1"``), ``signup_at`` the date of the first purchase, ``country`` and
  ``segment`` NULL;
- one ``orders`` row per line: ``order_id = "cdnow-<customer>-<line number>"`` (the line
  number in the file, header = line 1; the same customer may buy twice on one day, so the
  line number is what makes the id unique), ``items`` = CDs, ``amount`` = dollars (rounded
  to cents), ``category = 'music'``, ``status = 'completed'``;
- no events and no reviews.

The file has dates only; every timestamp is that date at **00:00:00**, so an order is
counted on its own day by the point-in-time rule (``< D + 1 day``) and never falls inside a
label window ``(D, D + H]`` that starts on that same day.

Validation: every line is checked before anything is written. A line with other than four
fields, a customer id that is not a whole number, a date that is not a real calendar date
in ``YYYYMMDD`` or not a plausible purchase date (from ``EARLIEST_DATE``, 1970-01-01, to
tomorrow, UTC: a purchase dated 2999-12-31 is a typing error), a number of CDs that is not a whole number of at least 1, or a dollar value
that is negative, not a plain decimal number or too large raises ``DataError`` naming the
file, the line number, the problem and the offending text (cut to a short excerpt:
``masking.excerpt``). Rows with **0 dollars** are kept
(the real file has 80 of them, with at least one CD: free or fully discounted purchases
still count as visits; they add nothing to spend). Rows with **0 CDs** are rejected: an
order holds at least one item in the contract (``items >= 1``) and the real file has none.
Blank lines are ignored. The first line is the header unless it already looks like a
purchase (its first field is a number), in which case the file is read as having no header.

Idempotency: the import runs in one transaction that deletes the CDNOW orders
(``order_id LIKE 'cdnow-%'``) and the users of every customer in the file, then inserts the
file's rows. Importing the same file twice leaves exactly one copy; importing a corrected
file replaces those customers' CDNOW history.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from spendpred import warehouse
from spendpred.errors import DataError
from spendpred.masking import excerpt

logger = logging.getLogger(__name__)

CATEGORY = "music"
STATUS = "completed"
ORDER_ID_PREFIX = "cdnow-"
MAX_AMOUNT = 9_999_999_999.99  # NUMERIC(12, 2)
EARLIEST_DATE = dt.date(1970, 1, 1)
"""The earliest plausible purchase date; the latest is tomorrow (``latest_date``)."""
_FIELDS = "customer_id, YYYYMMDD date, number of CDs, dollar value"
_STAGE_TABLE = "spendpred_cdnow_stage"  # the name used by sql/load/cdnow_*.sql

#: Columns of the table ``parse_cdnow`` returns.
PARSED_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("customer_id", pa.string()),
        ("ordered_at", pa.timestamp("us")),
        ("items", pa.int32()),
        ("amount", pa.float64()),
    ]
)

_DIGITS = re.compile(r"[0-9]+")
_DATE = re.compile(r"[0-9]{8}")
_CDS = re.compile(r"[0-9]{1,9}")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DECIMAL = re.compile(r"\+?([0-9]{1,10}(\.[0-9]*)?|\.[0-9]+)")


def latest_date() -> dt.date:
    """Return the latest plausible purchase date: tomorrow in UTC (a day of tolerance for time zones)."""
    return dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)


def _line_problem(fields: list[str], latest: dt.date | None = None) -> str | None:
    """Return what is wrong with one data line's fields (echoed as short excerpts), or ``None`` when it is valid."""
    if len(fields) != 4:
        return f"expected 4 whitespace-separated fields ({_FIELDS}), found {len(fields)}"
    customer, date, cds, dollars = fields
    if not _DIGITS.fullmatch(customer) or len(customer) > 18:
        return f"customer id {excerpt(customer, 30)} is not a whole number (digits only, at most 18)"
    if not _DATE.fullmatch(date):
        return f"date {excerpt(date, 30)} is not a valid YYYYMMDD date"
    try:
        day = dt.date(int(date[:4]), int(date[4:6]), int(date[6:]))
    except ValueError:
        return f"date {date!r} is not a valid YYYYMMDD date"
    latest = latest or latest_date()
    if not EARLIEST_DATE <= day <= latest:
        bounds = f"from {EARLIEST_DATE:%Y%m%d} to {latest:%Y%m%d}, tomorrow"
        return f"date {date!r} is not a plausible purchase date ({bounds})"
    if not _CDS.fullmatch(cds):
        return f"number of CDs {excerpt(cds, 30)} is not a whole number (digits only, at most 9)"
    if int(cds) < 1:
        return f"number of CDs {cds!r} is less than 1 (every purchase has at least one CD)"
    if _DECIMAL.fullmatch(dollars):
        if float(dollars) > MAX_AMOUNT:
            return f"dollar value {excerpt(dollars, 30)} is too large (at most {MAX_AMOUNT:.2f})"
        return None
    if _NUMBER.fullmatch(dollars):
        if dollars.startswith("-"):
            return f"dollar value {excerpt(dollars, 30)} is negative"
        if float(dollars) > MAX_AMOUNT:
            return f"dollar value {excerpt(dollars, 30)} is too large (at most {MAX_AMOUNT:.2f})"
    return f"dollar value {excerpt(dollars, 30)} is not a plain decimal number"


def _fail(name: str, line_no: int, problem: str, line_text: str, more: int) -> DataError:
    extra = f" (and {more} more malformed line{'s' if more != 1 else ''})" if more else ""
    return DataError(
        f"{name} line {line_no}: {problem} in {excerpt(line_text.strip())}{extra}; nothing was imported: "
        f"fix the file (each line: {_FIELDS}) and import it again"
    )


def parse_cdnow(path: str | Path) -> pa.Table:
    """Parse and validate a CDNOW master file completely, in memory.

    Returns a ``pyarrow.Table`` with ``PARSED_SCHEMA``: ``line`` (1-based line number in the
    file), ``customer_id`` (number as text without leading zeros), ``ordered_at`` (the date at
    00:00), ``items`` and ``amount`` (rounded to cents), in file order.
    Raises ``DataError`` naming the file, line, problem and text for the first malformed
    line (and how many more there are), or when the file is missing, unreadable, not text,
    or holds no purchase.
    """
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CDNOW file {path} does not exist: pass the path of CDNOW_master.txt") from None
    except OSError as exc:
        raise DataError(f"cannot read CDNOW file {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{name} line {line_no}: bytes that are not UTF-8 text; is this the CDNOW master file?") from exc

    lines = text.split("\n")
    split = [line.split() for line in lines]
    numbers = [i + 1 for i, fields in enumerate(split) if fields]
    if not numbers:
        raise DataError(f"{name} is empty: expected a header line, then one purchase per line ({_FIELDS})")
    first = numbers[0]
    if not _DIGITS.fullmatch(split[first - 1][0]):  # a header line
        numbers = numbers[1:]
    if not numbers:
        raise DataError(f"{name} has a header but no purchase lines ({_FIELDS})")
    rows = [split[n - 1] for n in numbers]
    line_numbers = np.asarray(numbers, dtype=np.int64)

    def first_problem(bad: np.ndarray) -> DataError:
        """Scan line by line (only once the fast checks failed) for the first malformed line.

        ``bad`` is the fast checks' mask; the line check is authoritative and also counts
        the malformed lines after the first one.
        """
        latest = latest_date()
        problems = [(i, p) for i, p in enumerate(_line_problem(r, latest) for r in rows) if p is not None]
        if not problems:  # pragma: no cover - the fast and the line checks agree
            problems = [(int(np.flatnonzero(bad)[0]), "malformed line")]
        i, problem = problems[0]
        return _fail(name, int(line_numbers[i]), problem, lines[line_numbers[i] - 1], len(problems) - 1)

    widths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    if (widths != 4).any():
        raise first_problem(widths != 4)

    customer, date, cds, dollars = (pa.array(col, pa.string()) for col in zip(*rows))
    ok_customer = pc.match_substring_regex(customer, r"^[0-9]{1,18}$")
    ok_date_text = pc.match_substring_regex(date, r"^[0-9]{8}$")
    ok_cds_text = pc.match_substring_regex(cds, r"^[0-9]{1,9}$")
    ok_dollar_text = pc.match_substring_regex(dollars, r"^\+?([0-9]{1,10}(\.[0-9]*)?|\.[0-9]+)$")
    ok_text = pc.and_(pc.and_(ok_customer, ok_date_text), pc.and_(ok_cds_text, ok_dollar_text))
    ok = np.asarray(ok_text, dtype=bool)
    if not ok.all():
        raise first_problem(~ok)

    ymd = np.asarray(pc.cast(date, pa.int64()))
    year, month, day = ymd // 10_000, (ymd // 100) % 100, ymd % 100
    month_ok = (month >= 1) & (month <= 12) & (year >= 1)
    month_start = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    days_in_month = ((month_start + 1).astype("datetime64[D]") - month_start.astype("datetime64[D]")).astype(np.int64)
    date_ok = month_ok & (day >= 1) & (day <= days_in_month)
    earliest, latest = (int(f"{d:%Y%m%d}") for d in (EARLIEST_DATE, latest_date()))
    date_ok &= (ymd >= earliest) & (ymd <= latest)  # plausible purchase dates only
    items = np.asarray(pc.cast(cds, pa.int64()))
    amount = np.asarray(pc.cast(pc.utf8_ltrim(dollars, characters="+"), pa.float64()))
    valid = date_ok & (items >= 1) & (amount <= MAX_AMOUNT)
    if not valid.all():
        raise first_problem(~valid)

    ordered_at = (month_start.astype("datetime64[D]") + (day - 1)).astype("datetime64[us]")
    customer_ids = pc.cast(pc.cast(customer, pa.int64()), pa.string())
    table = pa.Table.from_arrays(
        [
            pa.array(line_numbers),
            customer_ids,
            pa.array(ordered_at, pa.timestamp("us")),
            pa.array(items.astype(np.int32), pa.int32()),
            pa.array(np.round(amount, 2), pa.float64()),
        ],
        schema=PARSED_SCHEMA,
    )
    logger.info("parsed %s: %d purchases of %d customers", name, table.num_rows, len(pc.unique(customer_ids)))
    return table


def cdnow_tables(parsed: pa.Table) -> dict[str, pa.Table]:
    """Map a parsed CDNOW table onto the contract's ``users`` and ``orders`` relations.

    Returns ``{"users": ..., "orders": ...}`` with exactly the contract columns: one user per
    customer (``signup_at`` = first purchase, sorted by customer number) and one completed
    ``music`` order per purchase line, in file order. Pure; raises nothing for a table that
    ``parse_cdnow`` produced.
    """
    firsts = parsed.group_by("customer_id").aggregate([("ordered_at", "min")])
    order = np.argsort(np.asarray(pc.cast(firsts.column("customer_id"), pa.int64())), kind="stable")
    firsts = firsts.take(pa.array(order))
    n_users = firsts.num_rows
    users = pa.table(
        {
            "user_id": firsts.column("customer_id"),
            "signup_at": firsts.column("ordered_at_min"),
            "country": pa.nulls(n_users, pa.string()),
            "segment": pa.nulls(n_users, pa.string()),
        }
    )
    n_orders = parsed.num_rows
    orders = pa.table(
        {
            "order_id": pc.binary_join_element_wise(
                pc.binary_join_element_wise(ORDER_ID_PREFIX, parsed.column("customer_id"), ""),
                pc.cast(parsed.column("line"), pa.string()),
                "-",
            ),
            "user_id": parsed.column("customer_id"),
            "ordered_at": parsed.column("ordered_at"),
            "amount": parsed.column("amount"),
            "items": parsed.column("items"),
            "category": pa.array([CATEGORY] * n_orders, pa.string()),
            "status": pa.array([STATUS] * n_orders, pa.string()),
        }
    )
    return {"users": users, "orders": orders}


def import_cdnow(engine: sa.Engine, path: str | Path) -> dict[str, int]:
    """Load a CDNOW master file into ``users`` and ``orders``; idempotent.

    The file is parsed and validated completely first; then, in one transaction, the CDNOW
    orders and the users of the file's customers are deleted and the file's rows inserted
    (creating the schema first when needed). Returns ``{"users": n, "orders": n,
    "replaced_users": n, "replaced_orders": n}`` (``replaced_*``: rows of an earlier import
    that were replaced). Raises ``DataError`` for a missing or malformed file, before
    anything is written, and when a row clashes with the warehouse (the transaction is then
    rolled back).
    """
    began = time.perf_counter()
    path = Path(path)
    tables = cdnow_tables(parse_cdnow(path))
    warehouse.init_db(engine)
    dbapi = engine.dialect.loaded_dbapi
    try:
        with engine.begin() as conn:
            # the session's own temporary table, always schema-qualified: never a real table
            dialect = conn.dialect.name
            stage = ("pg_temp." if dialect == "postgresql" else "temp.") + _STAGE_TABLE
            warehouse.run_script(conn, warehouse.load_sql("load/cdnow_stage", dialect))
            warehouse.bulk_insert(conn, stage, tables["users"].select(["user_id"]))
            replaced_orders = conn.execute(
                sa.text(warehouse.load_sql("load/cdnow_delete_orders", dialect)), {"pattern": ORDER_ID_PREFIX + "%"}
            ).rowcount
            replaced_users = conn.execute(sa.text(warehouse.load_sql("load/cdnow_delete_users", dialect))).rowcount
            n_users = warehouse.bulk_insert(conn, "users", tables["users"])
            n_orders = warehouse.bulk_insert(conn, "orders", tables["orders"])
            conn.exec_driver_sql(f"DROP TABLE {stage}")  # fixed, schema-qualified temp name
    except (dbapi.IntegrityError, sa.exc.IntegrityError) as exc:
        raise DataError(
            f"importing {path.name} failed on a row that clashes with the warehouse, nothing was written: "
            f"{str(exc).splitlines()[0]} (an order id of the form cdnow-<customer>-<line> already belongs "
            "to another user: remove that order or import into a clean warehouse)"
        ) from exc
    counts = {
        "users": n_users,
        "orders": n_orders,
        "replaced_users": max(int(replaced_users), 0),
        "replaced_orders": max(int(replaced_orders), 0),
    }
    logger.info("imported %s into the warehouse: %s (%.1fs)", path.name, counts, time.perf_counter() - began)
    return counts
