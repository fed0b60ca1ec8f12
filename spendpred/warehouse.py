"""Warehouse access: engines, SQL files, streaming reads and bulk writes.

Works on SQLite (the zero-set-up default) and PostgreSQL. On PostgreSQL every connection
gets ``search_path = <source schema>, spendpred`` so the same unqualified SQL runs on both
dialects: source relations resolve to the source schema, outputs to ``spendpred``; and
``TimeZone = UTC``, so source timestamps *with* time zone are compared and cut into days in UTC.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from spendpred.config import WAREHOUSE_URL_FORMS, Settings, canonical_warehouse_url, get_settings
from spendpred.errors import ConfigError
from spendpred.masking import mask_secrets, mask_url

logger = logging.getLogger(__name__)

OUTPUT_SCHEMA = "spendpred"
SOURCE_TABLES: tuple[str, ...] = ("users", "orders", "events", "reviews")
"""The contract's source relations (a real warehouse maps its tables onto them with views)."""
SQL_SUBDIRS_FOR_INIT = ("schema", "views")
SQLITE_DATE_FORMAT = "%Y-%m-%d"
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
"""SQLite stores dates and whole-second timestamps as this text (see the warehouse contract)."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def sql_dir() -> Path:
    """Return the project's ``sql/`` folder (beside the package in a source checkout or image)."""
    here = Path(__file__).resolve().parent.parent / "sql"
    if here.is_dir():
        return here
    raise ConfigError(
        f"SQL folder not found at {here}: install spendpred from its source tree "
        "(`pip install -e .`) so that sql/ sits beside the spendpred package"
    )


# Dialect fragments a shared SQL file may use instead of a whole ``name.<dialect>.sql`` copy:
# ``{{byte_order}}`` (a collation sorting text by bytes, the same order on both dialects) and
# ``{{days_between(a, b)}}`` (whole calendar days from the date of ``b`` to the date ``a``) and
# ``{{day(a)}}`` (the calendar date of a timestamp) and ``{{text_id(a)}}`` (an id column, text or
# integer in the warehouse, as something that joins with any other id: text on PostgreSQL, the
# value itself on SQLite, whose comparisons convert by column affinity and whose indexes a CAST
# would defeat) and ``{{raw_text(a)}}`` (a source text column read without decoding: its bytes on
# SQLite, which stores any bytes as TEXT and whose driver fails the whole query on one value that
# is not UTF-8; the value itself on PostgreSQL, whose text is always valid and bytea arrives as bytes).
_FRAGMENTS = {
    "sqlite": {
        "byte_order": "COLLATE BINARY",
        "days_between": "(julianday(date({a})) - julianday(date({b})))",
        "day": "date({a})",
        "text_id": "{a}",
        "raw_text": "CAST({a} AS BLOB)",
    },
    "postgresql": {
        "byte_order": 'COLLATE "C"',
        "days_between": "(CAST({a} AS DATE) - CAST({b} AS DATE))",
        "day": "CAST({a} AS DATE)",
        "text_id": "CAST({a} AS TEXT)",
        "raw_text": "{a}",
    },
}
_DAYS_BETWEEN = re.compile(r"\{\{days_between\((.+?),\s*(.+?)\)\}\}")
_DAY = re.compile(r"\{\{day\((.+?)\)\}\}")
_TEXT_ID = re.compile(r"\{\{text_id\((.+?)\)\}\}")
_RAW_TEXT = re.compile(r"\{\{raw_text\((.+?)\)\}\}")


def render_fragments(sql: str, dialect: str) -> str:
    """Replace the ``{{...}}`` dialect fragments of a SQL text; raises ``ConfigError`` for a left-over one."""
    fragments = _FRAGMENTS.get(dialect)
    if fragments is None or "{{" not in sql:
        return sql
    sql = sql.replace("{{byte_order}}", fragments["byte_order"])
    sql = _DAYS_BETWEEN.sub(lambda m: fragments["days_between"].format(a=m.group(1), b=m.group(2)), sql)
    sql = _DAY.sub(lambda m: fragments["day"].format(a=m.group(1)), sql)
    sql = _TEXT_ID.sub(lambda m: fragments["text_id"].format(a=m.group(1)), sql)
    sql = _RAW_TEXT.sub(lambda m: fragments["raw_text"].format(a=m.group(1)), sql)
    if "{{" in sql:
        raise ConfigError(f"unknown SQL fragment near {sql[sql.index('{{'):][:40]!r}: use {{{{byte_order}}}} or {{{{days_between(a, b)}}}}")
    return sql


def load_sql(name: str, dialect: str) -> str:
    """Return the text of ``sql/<name>.<dialect>.sql`` if it exists, else ``sql/<name>.sql``,
    with its dialect fragments rendered (see ``render_fragments``).

    Raises ``ConfigError`` when neither file exists.
    """
    base = sql_dir()
    for candidate in (base / f"{name}.{dialect}.sql", base / f"{name}.sql"):
        if candidate.is_file():
            return render_fragments(candidate.read_text(encoding="utf-8"), dialect)
    raise ConfigError(f"no SQL file for {name!r} (dialect {dialect}) under {base}")


def sql_files(subdir: str, dialect: str) -> list[Path]:
    """Return the SQL files of ``sql/<subdir>`` for a dialect, sorted by name.

    ``X.<dialect>.sql`` replaces ``X.sql``; files for other dialects are ignored.
    """
    folder = sql_dir() / subdir
    if not folder.is_dir():
        return []
    chosen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.sql")):
        parts = path.name[: -len(".sql")].split(".")
        stem, file_dialect = (parts[0], parts[1]) if len(parts) > 1 else (parts[0], None)
        if file_dialect is None:
            chosen.setdefault(stem, path)
        elif file_dialect == dialect:
            chosen[stem] = path
    return [chosen[k] for k in sorted(chosen)]


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements at semicolons that end a line.

    Comment-only chunks are dropped. ``$$``-quoted bodies are kept whole.
    """
    statements: list[str] = []
    current: list[str] = []
    in_dollar = False
    for line in script.splitlines():
        current.append(line)
        if line.count("$$") % 2 == 1:
            in_dollar = not in_dollar
        if not in_dollar and line.rstrip().endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    cleaned = []
    for stmt in statements:
        body = "\n".join(ln for ln in stmt.splitlines() if not ln.strip().startswith("--")).strip()
        if body:
            cleaned.append(stmt.strip().rstrip(";"))
    return cleaned


_MAY_CREATE_SQLITE: ContextVar[bool] = ContextVar("spendpred_may_create_sqlite", default=True)
"""Whether :func:`get_engine` may create a missing SQLite file when its caller does not say (see ``existing_warehouse_only``)."""


@contextmanager
def existing_warehouse_only(only: bool = True) -> Iterator[None]:
    """Within the block, :func:`get_engine` refuses a SQLite URL whose file does not exist (unless
    called with ``create=True``): front ends wrap every step that only reads or scores, so a
    mistyped path is reported instead of becoming a new, empty warehouse. ``only=False`` allows it.
    """
    token = _MAY_CREATE_SQLITE.set(not only)
    try:
        yield
    finally:
        _MAY_CREATE_SQLITE.reset(token)


def normalize_url(url: str) -> str:
    """Return ``url`` as SQLAlchemy takes it (``postgres://`` becomes ``postgresql+psycopg2://``);
    raises ``ConfigError`` for an unsupported scheme, naming the URL with its password masked."""
    try:
        return canonical_warehouse_url(url)
    except ValueError:
        scheme = str(url).partition("://")[0] if "://" in str(url) else str(url).partition(":")[0]
        raise ConfigError(
            f"unsupported warehouse backend {scheme.split('+')[0][:20]!r} in {mask_url(url)}: use {WAREHOUSE_URL_FORMS}"
        ) from None


def sqlite_file(url: str) -> Path | None:
    """Return the file of a SQLite ``url`` (``None`` for PostgreSQL, an in-memory database or a bad URL)."""
    try:
        parsed = make_url(normalize_url(url))
    except Exception:  # noqa: BLE001 - get_engine reports a bad URL
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):  # a sqlite URI: the path up to its query
        return Path(parsed.database[len("file:") :].split("?", 1)[0])
    return Path(parsed.database)


def get_engine(url: str | None = None, settings: Settings | None = None, *, create: bool | None = None) -> sa.Engine:
    """Return a SQLAlchemy engine for the warehouse.

    ``url`` defaults to the settings' warehouse URL (a SQLite file under ``var/``);
    ``postgres://`` and ``postgresql://`` mean ``postgresql+psycopg2://``. With ``create``
    true, the parent folder of a SQLite file is created here and the file on first connect;
    with ``create`` false a missing SQLite file raises ``ConfigError`` naming the fix and
    nothing is created. ``create=None`` (the default) allows creating, except inside
    ``existing_warehouse_only()``. Every database error raised through the engine carries the
    URL with its password masked (``spendpred_url``), for ``spendpred.failures.describe``.
    Raises ``ConfigError`` for an unsupported or unparsable URL (password masked).
    """
    settings = settings or get_settings()
    url = normalize_url(url or settings.resolved_warehouse_url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise ConfigError(f"invalid warehouse URL {mask_url(url)}: {mask_secrets(str(exc))}: use {WAREHOUSE_URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        may_create = _MAY_CREATE_SQLITE.get() if create is None else create
        file = sqlite_file(url)
        missing = file if file is not None and not file.exists() else None
        if missing is not None and not may_create:
            raise ConfigError(
                f"warehouse file {missing} does not exist: run `spendpred db init` (or fix SPENDPRED_WAREHOUSE_URL or --url)"
            )
        if missing is not None and parsed.database and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # switching to WAL writes a header into an empty (zero-byte) file: only where creating is allowed
            if may_create or file is None or not file.is_file() or file.stat().st_size > 0:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return _named_in_errors(engine)
    if backend == "postgresql":
        source = settings.source_schema or "public"
        if not _IDENTIFIER.match(source):
            raise ConfigError(f"SPENDPRED_SOURCE_SCHEMA={source!r} is not a valid schema name")
        engine = sa.create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"options": f"-c search_path={source},{OUTPUT_SCHEMA} -c TimeZone=UTC"},
        )
        return _named_in_errors(engine)
    raise ConfigError(f"unsupported warehouse backend {backend!r} in {mask_url(url)}: use {WAREHOUSE_URL_FORMS}")


def _named_in_errors(engine: sa.Engine) -> sa.Engine:
    """Mark every error raised through ``engine`` with its URL (password masked) and whether it came on connect."""
    masked = mask_url(engine.url)

    @sa.event.listens_for(engine, "handle_error")
    def _name_the_warehouse(context: Any) -> None:
        error = context.sqlalchemy_exception
        if error is not None:
            error.spendpred_url = masked
            error.spendpred_connecting = context.connection is None

    return engine


@contextmanager
def opened_engine(url: str | None = None, settings: Settings | None = None, *, create: bool | None = None) -> Iterator[sa.Engine]:
    """Yield :func:`get_engine`'s engine and dispose of it (its pooled connections) afterwards."""
    engine = get_engine(url, settings, create=create)
    try:
        yield engine
    finally:
        engine.dispose()


def url_from_connection(
    conn_type: str | None,
    host: str | None,
    login: str | None = None,
    password: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Return a SQLAlchemy URL for the fields of an Airflow connection (``spendpred_warehouse``).

    ``postgres``/``postgresql`` become ``postgresql+psycopg2://`` (libpq options such as
    ``sslmode`` in the extras become query parameters), ``sqlite`` uses ``host`` (or, for a
    connection given as a ``sqlite:////path`` URI, ``schema``) as the file path; an extra ``sqlalchemy_url`` overrides everything. Raises ``ConfigError`` for other types.
    """
    extra = dict(extra or {})
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    kind = (conn_type or "").lower()
    if kind in {"postgres", "postgresql"}:
        libpq = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name", "options")
        url = URL.create(
            "postgresql+psycopg2",
            username=login or None,
            password=password or None,
            host=host or None,
            port=int(port) if port else None,
            database=schema or None,
            query={k: str(extra[k]) for k in libpq if extra.get(k) not in (None, "")},
        )
        return url.render_as_string(hide_password=False)
    if kind == "sqlite":
        path = host or schema  # the UI form puts the path in host; a sqlite:////path URI in schema
        if not path:
            raise ConfigError(f"connection 'spendpred_warehouse' (sqlite) needs the database file path in 'host'")
        return f"sqlite:///{path}"
    raise ConfigError(
        f"connection 'spendpred_warehouse' has type {conn_type!r}: use a postgres or sqlite connection, "
        "or put a full SQLAlchemy URL in its extra as {\"sqlalchemy_url\": \"...\"}"
    )


def run_script(conn: sa.Connection, script: str) -> None:
    """Execute every statement of a SQL script on ``conn`` (inside the caller's transaction)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for statement in split_statements(script):
            cursor.execute(statement)  # verbatim: scripts carry no parameters
    finally:
        cursor.close()


def init_db(engine: sa.Engine) -> list[str]:
    """Create the source relations, output tables and views of the contract; idempotent.

    Returns the names of the SQL files applied, in order.
    """
    dialect = engine.dialect.name
    applied: list[str] = []
    with engine.begin() as conn:
        for subdir in SQL_SUBDIRS_FOR_INIT:
            for path in sql_files(subdir, dialect):
                run_script(conn, path.read_text(encoding="utf-8"))
                applied.append(f"{subdir}/{path.name}")
    logger.info("warehouse initialised (%s): %s", dialect, ", ".join(applied))
    return applied


def bind_values(dialect: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return bound parameters as ``dialect`` stores them.

    On SQLite, dates become ``YYYY-MM-DD`` and datetimes ``YYYY-MM-DD HH:MM:SS`` text (the
    contract's formats, so comparisons are plain string comparisons); PostgreSQL gets the
    objects. Other values pass unchanged.
    """
    if dialect != "sqlite":
        return dict(values)
    bound: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dt.datetime):
            value = value.strftime(SQLITE_TIMESTAMP_FORMAT)
        elif isinstance(value, dt.date):
            value = value.strftime(SQLITE_DATE_FORMAT)
        bound[key] = value
    return bound


def table_counts(engine: sa.Engine, tables: Sequence[str] = SOURCE_TABLES) -> dict[str, int]:
    """Return ``{table: row count}`` for the given tables (names checked, not bound)."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for table in tables:
            _check_identifier(table)
            counts[table] = int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())
    return counts


def stream_query(
    engine: sa.Engine,
    sql: str,
    params: Mapping[str, Any] | None = None,
    chunk_rows: int = 50_000,
    schema: pa.Schema | None = None,
) -> Iterator[pa.Table]:
    """Run a query and yield its rows as Arrow tables of at most ``chunk_rows`` rows.

    On PostgreSQL a server-side cursor is used, so memory does not grow with the result.
    When ``schema`` is given every chunk is built with it (stable types across chunks);
    otherwise types are inferred per chunk, with NUMERIC read as float64.
    """
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(
            sa.text(sql), dict(params or {})
        )
        names = list(result.keys())
        for rows in result.partitions(chunk_rows):
            columns = list(zip(*rows)) if rows else [() for _ in names]
            if schema is not None:
                arrays = [pa.array(list(col), type=schema.field(name).type) for name, col in zip(names, columns)]
                yield pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in names]))
            else:
                yield pa.Table.from_arrays([_inferred(col) for col in columns], names=names)


def _inferred(values: Sequence[Any]) -> pa.Array:
    """Infer an Arrow array; decimals (PostgreSQL NUMERIC) become float64 so chunks agree."""
    array = pa.array(list(values))
    if pa.types.is_decimal(array.type):
        array = array.cast(pa.float64())
    return array


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"invalid table or column name {name!r}")


def _sqlite_ready(table: pa.Table) -> pa.Table:
    """Turn timestamps and dates into the text formats the SQLite contract uses."""
    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            # whole seconds first: Arrow's %S prints fractions for sub-second units
            column = pc.strftime(pc.cast(column, pa.timestamp("s", field.type.tz), safe=False), format=SQLITE_TIMESTAMP_FORMAT)
        elif pa.types.is_date(field.type):
            column = pc.strftime(column, format=SQLITE_DATE_FORMAT)
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def bulk_insert(conn: sa.Connection, table: str, data: pa.Table) -> int:
    """Append ``data`` (column names = table columns) to ``table`` inside the caller's transaction.

    PostgreSQL: ``COPY ... FROM STDIN`` in CSV; SQLite: ``executemany``. Returns the row count.
    """
    _check_identifier(table)
    for name in data.column_names:
        _check_identifier(name)
    if data.num_rows == 0:
        return 0
    cols = ", ".join(data.column_names)
    if conn.dialect.name == "postgresql":
        buffer = io.BytesIO()
        pacsv.write_csv(data, buffer, write_options=pacsv.WriteOptions(include_header=False))
        buffer.seek(0)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)", buffer)
        finally:
            cursor.close()
        return data.num_rows
    ready = _sqlite_ready(data)
    placeholders = ", ".join("?" for _ in data.column_names)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for batch in ready.to_batches(max_chunksize=50_000):
            pylists = [col.to_pylist() for col in batch.columns]
            cursor.executemany(f"INSERT INTO {table} ({cols}) VALUES ({placeholders})", list(zip(*pylists)))
    finally:
        cursor.close()
    return data.num_rows
