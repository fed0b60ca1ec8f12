"""The one error path of both front ends (the CLI and the Airflow tasks): one line per expected failure.

Inside :class:`one_line` every *expected* failure of a library (an invalid ``SPENDPRED_*``
setting, a database, file-system, HTTP or MLflow error) becomes the ``SpendpredError`` that
:func:`as_error` makes of it: :func:`describe`'s one line, secrets masked
(``spendpred.masking``), transient causes as a ``TransientError`` (``spendpred.errors`` has the
two families). The CLI prints that line (exit 2), an Airflow task fails with it (retried only
when transient); a bug keeps its exception and traceback.

This module sits above the settings and the warehouse (it words an invalid ``Settings`` and
guards against creating a SQLite warehouse file), which it imports where it uses them: the DAG
files import it at parse time, and parsing imports neither. Nothing below the front ends and
the registry imports it.
"""

from __future__ import annotations

import errno as _errno
import logging as _logging
import re as _re
from contextlib import ContextDecorator as _ContextDecorator
from typing import Any as _Any

from spendpred.errors import (
    ConfigError,
    RegistryError,
    RegistryUnavailable,
    SpendpredError,
    StorageError,
    StorageFull,
    TransientError,
    WarehouseError,
    WarehouseUnavailable,
)
from spendpred.masking import mask_secrets, mask_url

_logger = _logging.getLogger("spendpred")


RETRYABLE_CLIENT_STATUS = frozenset({408, 429})
"""HTTP 4xx answers that a retry may fix (request timeout, too many requests); every other 4xx is permanent."""


def mlflow_status(exc: BaseException) -> int | None:
    """Return the HTTP status an ``MlflowException`` stands for (from its error code: ``RESOURCE_DOES_NOT_EXIST``
    is 404, a connection that failed is ``INTERNAL_ERROR``, 500), or ``None`` for any other exception."""
    getter = getattr(exc, "get_http_status_code", None)
    if not (type(exc).__module__ or "").startswith("mlflow") or not callable(getter):
        return None
    try:
        return int(getter())
    except (TypeError, ValueError):
        return 500


def is_transient_mlflow(exc: BaseException) -> bool:
    """Return whether an ``MlflowException`` reports an outage that a retry may fix: a refused or lost
    connection or HTTP 5xx (both 500 in MLflow's codes), 408 or 429; any other 4xx (a bad value, a
    missing or existing object, no permission) is permanent."""
    status = mlflow_status(exc)
    if status is None or _store_fault(exc) is not None:
        return False
    return status >= 500 or status in RETRYABLE_CLIENT_STATUS


_STORE_FAULTS = (
    ("readonly database", "is read-only"),
    ("read-only file system", "is on a read-only disk"),
    ("unable to open database file", "cannot be opened"),
)
"""Causes inside an ``MlflowException`` (MLflow wraps its database store's errors as HTTP 503) that
no retry fixes: the store's file, folder or disk refuses the write. (needle, what it says)"""


def _store_fault(exc: BaseException) -> tuple[str, str] | None:
    """Return ``(MLflow's words, what they mean)`` when an ``MlflowException`` wraps a store that refuses writes, else ``None``."""
    text = str(getattr(exc, "message", None) or exc)
    lowered = text.lower()
    for needle, meaning in _STORE_FAULTS:
        if needle in lowered:
            line = next(line for line in text.splitlines() if needle in line.lower())
            return _re.sub(r"^\([\w.]+\)\s*", "", line.strip())[:200], meaning
    return None




# -- one line per expected failure, secrets masked ------------------------------------------------


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _settings_message(exc: Exception) -> str:
    """One line for a ``pydantic.ValidationError`` of ``spendpred.config.Settings``: each variable and its allowed values."""
    from spendpred.config import Settings

    problems = []
    for error in exc.errors(include_url=False):  # type: ignore[attr-defined]
        name = str(error["loc"][0]) if error.get("loc") else ""
        var = f"SPENDPRED_{name.upper()}"
        field = Settings.model_fields.get(name)
        if error["type"] == "value_error":  # a validator's own message (e.g. the warehouse URL, already masked)
            problems.append(f"{var}: {mask_secrets(str(error['msg']).removeprefix('Value error, '))}")
            continue
        value = "" if name == "warehouse_url" else f"={mask_secrets(str(error.get('input')))}"
        bound = error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
        problems.append(f"{var}{value} is {'out of range' if bound else 'not valid'}: use {_allowed(field)}")
    return "; ".join(problems) + " (set in the environment or in .env)"


def _allowed(field: object) -> str:
    """Words for a settings field's allowed values (``a whole number in 1..3650``, ``a number > 0``)."""
    if field is None:
        return "a valid value"
    annotation = getattr(field, "annotation", None)
    whole = annotation is int or "int" in str(annotation) and "float" not in str(annotation)
    low = high = None
    for rule in getattr(field, "metadata", []):
        if getattr(rule, "ge", None) is not None:
            low = rule.ge
        elif getattr(rule, "gt", None) is not None:
            low = rule.gt + 1 if whole else None
            if not whole:
                return f"a number > {rule.gt}" + (f" and <= {high}" if high is not None else "")
        elif getattr(rule, "le", None) is not None:
            high = rule.le
        elif getattr(rule, "lt", None) is not None:
            high = rule.lt - 1 if whole else rule.lt
    kind = "a whole number" if whole else "a number" if "float" in str(annotation) else "a valid value"
    if low is not None and high is not None:
        return f"{kind} in {low}..{high}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


_DB_FIXES = (
    ("password authentication failed", "fix the user name or password"),
    ('role "', "fix the user name or create the role"),
    ('database "', "fix the database name or create the database"),
    ("connection refused", "check the host and port, and that the server is running"),
    ("could not translate host name", "fix the host name"),
    ("timeout", "check the host and port, and that the server is reachable"),
    ("unable to open database file", "check that the SQLite file's folder exists and is writable"),
    ("readonly database", "make the SQLite file writable, or run read-only commands only"),
    ("permission denied", "run write commands as the role that owns the warehouse (read-only roles may only query the views)"),
    (("relation \"", "does not exist"), "run `spendpred db init` to create the tables"),
    (("column \"", "does not exist"), "the relation lacks that column: compare it with the source-data contract (docs/DESIGN.md)"),
    (("function ", "does not exist"), "a source column has a type this query cannot take: compare the columns' types with the "
     "source-data contract (docs/DESIGN.md)"),
    ("does not exist", "check the name it gives (`spendpred db init` creates spendpred's own tables and views)"),
    ("no such table", "run `spendpred db init` to create the tables"),
    ("no such column", "the relation lacks that column: compare it with the source-data contract (docs/DESIGN.md)"),
)
"""(needle or needles that must all occur, fix): the first match gives the fix."""


def _database_message(exc: Exception) -> str:
    """One line for a SQLAlchemy/DBAPI error: the warehouse (password masked), the database's words and the fix."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    text = _first_line(getattr(diag, "message_primary", None) or orig)
    text = _re.sub(r"^(FATAL|ERROR):\s*", "", text)
    lowered = str(orig).lower()
    connecting = bool(getattr(exc, "spendpred_connecting", False))
    fix = next(
        (hint for needles, hint in _DB_FIXES if all(n in lowered for n in ((needles,) if isinstance(needles, str) else needles))),
        "check the host, port, user and database",
    )
    if connecting:
        fix += " in SPENDPRED_WAREHOUSE_URL or --url"
    url = getattr(exc, "spendpred_url", None)
    where = f"the warehouse {url}" if url else "the warehouse"
    return mask_secrets(f"{'cannot connect to' if connecting else 'error from'} {where}: {text}: {fix}")


def _os_message(exc: OSError) -> str:
    """One line for a file-system error, naming the path."""
    import errno

    path = exc.filename if exc.filename is not None else None
    what = exc.strerror or _first_line(exc) or type(exc).__name__
    fixes = {
        errno.EACCES: "make it writable or point SPENDPRED_STAGING_DIR / --out elsewhere",
        errno.EPERM: "make it writable or point SPENDPRED_STAGING_DIR / --out elsewhere",
        errno.EROFS: "the disk is read-only: point SPENDPRED_STAGING_DIR / --out at a writable folder",
        errno.ENOSPC: "free some space or point SPENDPRED_STAGING_DIR / --out at another disk",
        errno.EDQUOT: "free some space or point SPENDPRED_STAGING_DIR / --out at another disk",
        errno.EEXIST: "it exists and is not a folder: choose a folder path",
        errno.ENOTDIR: "a file is in the way: use a folder path",
        errno.EISDIR: "a folder is in the way: use a file path",
        errno.ENOENT: "check the path",
    }
    fix = fixes.get(exc.errno or -1, "check the path and its permissions")
    where = f" {path}" + (f" -> {exc.filename2}" if exc.filename2 else "") if path is not None else ""
    return mask_secrets(f"cannot use{where}: {what}: {fix}")


_TRANSIENT_DB_TYPES = ("OperationalError", "DisconnectionError", "TimeoutError", "InterfaceError")
"""SQLAlchemy/DBAPI error types of outages (unless the text names a permanent cause, below)."""
_PERMANENT_DB_TEXT = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    'role "',
    'database "',
    "permission denied",
    "does not exist",
    "no such table",
    "no such column",
    "readonly database",
    "unable to open database file",
    "syntax error",
)
_TRANSIENT_ERRNOS = frozenset(
    {_errno.ENOSPC, _errno.EDQUOT, _errno.EAGAIN, _errno.EINTR, _errno.ETIMEDOUT, _errno.ECONNREFUSED,
     _errno.ECONNRESET, _errno.ECONNABORTED, _errno.EHOSTUNREACH, _errno.ENETUNREACH, _errno.EPIPE}
)  # fmt: skip
"""File-system and socket errors that may pass on their own (a full disk, a refused or lost connection)."""


def _is_database_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    if not module.startswith(("sqlalchemy", "psycopg2", "psycopg", "sqlite3")):
        return False
    return not module.startswith("sqlalchemy") or hasattr(exc, "orig")


def _transient_database_error(exc: BaseException) -> bool:
    """Whether a database error reports an outage (refused, lost or timed-out connection, a lock) rather than a mistake."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(exc, "connection_invalidated", False):
        return True
    names = {type(exc).__name__, type(orig).__name__}
    if not names & set(_TRANSIENT_DB_TYPES):
        return False
    text = str(orig).lower()
    return not any(needle in text for needle in _PERMANENT_DB_TEXT)


def as_error(exc: BaseException) -> SpendpredError | None:
    """Return the ``SpendpredError`` a front end reports for ``exc``, or ``None`` for a bug.

    Its message is :func:`describe`'s one line (secrets masked). A ``SpendpredError`` whose
    message is already that line is returned itself; one with a multi-line message or a secret
    comes back as the same class with the line. An invalid setting becomes ``ConfigError``; a
    database error ``WarehouseUnavailable`` (transient: refused, lost or timed-out connection,
    lock) or ``WarehouseError``; an MLflow error ``RegistryUnavailable`` (transient: no connection,
    HTTP 5xx, 408, 429) or ``RegistryError`` (any other 4xx: retrying cannot help); a file-system error ``StorageFull`` (transient: full disk or
    quota), ``TransientError`` (a refused or lost socket) or ``StorageError``. Raises nothing.
    """
    message = describe(exc)
    if message is None:
        return None
    if isinstance(exc, SpendpredError):
        if message == str(exc):
            return exc
        try:
            error: SpendpredError = type(exc)(message)
        except Exception:  # noqa: BLE001 - a subclass with its own constructor: keep the family
            error = TransientError(message) if isinstance(exc, TransientError) else SpendpredError(message)
        return error
    if type(exc).__name__ == "ValidationError":
        return ConfigError(message)
    if _is_database_error(exc):
        return (WarehouseUnavailable if _transient_database_error(exc) else WarehouseError)(message)
    if mlflow_status(exc) is not None:
        return (RegistryUnavailable if is_transient_mlflow(exc) else RegistryError)(message)
    if isinstance(exc, OSError):
        if (type(exc).__module__ or "").startswith(("requests", "urllib3")):
            return TransientError(message)  # a refused or lost HTTP connection
        if exc.errno in (_errno.ENOSPC, _errno.EDQUOT):
            return StorageFull(message)
        if exc.errno in _TRANSIENT_ERRNOS or isinstance(exc, (ConnectionError, TimeoutError)):
            return TransientError(message)
        return StorageError(message)
    return SpendpredError(message)


class one_line(_ContextDecorator):  # noqa: N801 - used like contextlib's context managers
    """The one error path of both front ends, as a context manager or a decorator.

    Within it an expected failure leaves as :func:`as_error`'s ``SpendpredError`` carrying one
    line (secrets masked; transient causes stay ``TransientError``, so Airflow retries only
    those), raised without its cause (the original is logged at DEBUG, shown by ``--verbose``);
    a bug, ``KeyboardInterrupt`` or an Airflow control exception passes unchanged. Unless
    ``creates_warehouse``, a SQLite warehouse file that does not exist is refused, not created
    (``spendpred.warehouse.existing_warehouse_only``). The CLI wraps every command in it and each
    Airflow task of the DAGs is decorated with it (``@one_line()`` under ``@task``); a function so
    decorated has ``spendpred_one_line = True``.
    """

    def __init__(self, *, creates_warehouse: bool = False) -> None:
        self.creates_warehouse = creates_warehouse
        self._guard: _Any = None

    def _recreate_cm(self) -> one_line:
        return type(self)(creates_warehouse=self.creates_warehouse)  # a fresh guard per call

    def __call__(self, func: _Any) -> _Any:
        import typing

        wrapped = super().__call__(func)
        try:  # resolved where ``func`` was written: Airflow reads the return type through the wrapper
            wrapped.__annotations__ = typing.get_type_hints(func)
        except Exception:  # noqa: BLE001 - unresolvable names: keep the text, as functools.wraps copied it
            pass
        wrapped.spendpred_one_line = True
        return wrapped

    def __enter__(self) -> one_line:
        from spendpred.warehouse import existing_warehouse_only

        self._guard = existing_warehouse_only(not self.creates_warehouse)
        self._guard.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: _Any) -> bool:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.__exit__(None, None, None)
        if exc is None or not isinstance(exc, Exception):
            return False
        error = as_error(exc)
        if error is None or error is exc:
            return False  # a bug, or already one line: re-raised as it is
        _logger.debug("failure behind the error line", exc_info=exc)
        raise error from None


def _network_message(exc: OSError) -> str:
    """One line for an HTTP client's connection error (``requests``/``urllib3``), naming the URL (password masked)."""
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None) or getattr(exc, "url", None)
    where = f" {mask_url(url)}" if url else ""
    reason = _re.sub(r"<[^>]*>", "", _first_line(exc)).strip() or type(exc).__name__
    return mask_secrets(f"cannot reach{where}: {reason}: check that the server is running and reachable")


_MLFLOW_FIXES = {
    401: "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for a user of the tracking server",
    403: "give the tracking server's user the rights it names (MLFLOW_TRACKING_USERNAME)",
    404: "check the model, version, alias or run it names, and SPENDPRED_MLFLOW_TRACKING_URI",
}


def _mlflow_message(exc: BaseException) -> str:
    """One line for an ``MlflowException``: MLflow's code and HTTP status, its first line (masked) and the fix."""
    status = mlflow_status(exc)
    code = str(getattr(exc, "error_code", "") or "INTERNAL_ERROR")
    fault = _store_fault(exc)
    if fault is not None:
        return mask_secrets(
            f"the MLflow tracking store {fault[1]} ({fault[0]}): make the store's file and folder writable for this user, "
            "or point SPENDPRED_MLFLOW_TRACKING_URI at a writable store; retrying cannot help"
        )
    detail = _first_line(getattr(exc, "message", None) or exc).removeprefix(f"{code}: ")[:300] or type(exc).__name__
    if is_transient_mlflow(exc):
        return mask_secrets(
            f"the MLflow registry failed ({code}, HTTP {status}): {detail}: check that the tracking server is up and "
            "reachable (SPENDPRED_MLFLOW_TRACKING_URI); retrying may help"
        )
    fix = _MLFLOW_FIXES.get(status or 0, "fix the value it names")
    return mask_secrets(f"MLflow refused the request ({code}, HTTP {status}): {detail}: {fix}; retrying cannot help")


def describe(exc: BaseException) -> str | None:
    """Return the one-line message (secrets masked) for an *expected* failure, or ``None`` for a bug.

    Expected: any ``SpendpredError``; an invalid ``SPENDPRED_*`` setting (pydantic's error for
    ``Settings``); a database error (warehouse unreachable, permission denied); a file-system
    error (read-only or full disk, permission denied); an HTTP client's connection error (a
    server refusing or not answering); an ``MlflowException`` (a tracking server's answer or
    MLflow's own check). Front ends report it through :class:`one_line` (the CLI
    prints it and exits 2, an Airflow task fails with it).
    """
    if isinstance(exc, SpendpredError):  # a multi-line message (a validation report) becomes "; "-separated
        return mask_secrets("; ".join(line.strip().removeprefix("- ") for line in str(exc).splitlines() if line.strip()))
    kind = type(exc)
    if kind.__name__ == "ValidationError" and getattr(exc, "title", None) == "Settings":
        return _settings_message(exc)  # type: ignore[arg-type]
    module = kind.__module__ or ""
    if module.startswith(("sqlalchemy", "psycopg2", "psycopg", "sqlite3")) and hasattr(exc, "args"):
        if module.startswith("sqlalchemy") and not hasattr(exc, "orig"):
            return None  # an ArgumentError and the like: a bug, not the environment
        return _database_message(exc)  # type: ignore[arg-type]
    if module.startswith(("requests", "urllib3")) and isinstance(exc, OSError):
        return _network_message(exc)
    if mlflow_status(exc) is not None:
        return _mlflow_message(exc)
    if isinstance(exc, OSError):
        return _os_message(exc)
    return None
