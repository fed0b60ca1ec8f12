"""The one error path of both front ends: ``failures.as_error`` and ``failures.one_line``.

Real library failures (pydantic's error for an invalid setting, SQLAlchemy's for a refused
connection or a missing table, the file system's) become one ``SpendpredError`` line with the
secret masked, transient causes a ``TransientError``; a bug passes unchanged.
"""

from __future__ import annotations

import errno
import traceback
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from spendpred import errors, failures, warehouse
from spendpred.config import Settings
from spendpred.errors import (
    ConfigError,
    PublishInterrupted,
    SpendpredError,
    StorageError,
    StorageFull,
    TransientError,
    ValidationFailed,
    WarehouseError,
    WarehouseUnavailable,
)
from spendpred.failures import as_error, one_line

SECRET = "s3cret"


def _raised(func: object) -> BaseException:
    try:
        func()  # type: ignore[operator]
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
    raise AssertionError("nothing was raised")


def _refused_connection() -> BaseException:
    """SQLAlchemy's error for a PostgreSQL port where nothing listens (port 1), password in the URL."""

    def connect() -> None:
        with warehouse.opened_engine(f"postgresql://bob:{SECRET}@127.0.0.1:1/w") as engine, engine.connect():
            pass

    return _raised(connect)


def _missing_table(tmp_path: Path) -> BaseException:
    def query() -> None:
        with warehouse.opened_engine(f"sqlite:///{tmp_path / 'w.db'}", create=True) as engine, engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM user_spend_scores")

    return _raised(query)


def _one_line(error: SpendpredError | None) -> str:
    assert error is not None
    text = str(error)
    assert "\n" not in text and SECRET not in text
    return text


# -- as_error --------------------------------------------------------------------------------------


def test_an_invalid_setting_becomes_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "0")
    monkeypatch.setenv("SPENDPRED_CHUNK_ROWS", "many")
    error = as_error(_raised(Settings))
    assert type(error) is ConfigError
    text = _one_line(error)
    assert "SPENDPRED_HORIZON_DAYS=0 is out of range" in text and "SPENDPRED_CHUNK_ROWS=many is not valid" in text


def test_an_unreachable_warehouse_is_transient_and_masked() -> None:
    cause = _refused_connection()
    error = as_error(cause)
    assert isinstance(error, WarehouseUnavailable) and isinstance(error, TransientError)
    text = _one_line(error)
    assert text.startswith("cannot connect to the warehouse postgresql+psycopg2://bob:***@127.0.0.1:1/w")
    assert "check the host and port" in text


def test_a_missing_table_is_permanent(tmp_path: Path) -> None:
    error = as_error(_missing_table(tmp_path))
    assert type(error) is WarehouseError and not isinstance(error, TransientError)
    assert "no such table: user_spend_scores" in _one_line(error) and "spendpred db init" in str(error)


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        ("connection to server at \"h\" failed: Connection refused", True),
        ("server closed the connection unexpectedly", True),
        ("database is locked", True),
        ('FATAL:  password authentication failed for user "bob"', False),
        ('FATAL:  database "nope" does not exist', False),
        ("permission denied for table user_spend_scores", False),
        ("attempt to write a readonly database", False),
    ],
)
def test_operational_errors_are_sorted_by_their_cause(text: str, transient: bool) -> None:
    cause = sa.exc.OperationalError("SELECT 1", {}, Exception(text))
    error = as_error(cause)
    assert isinstance(error, WarehouseError)
    assert isinstance(error, TransientError) is transient, text


def test_a_statement_error_that_is_not_operational_is_permanent() -> None:
    error = as_error(sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint")))
    assert type(error) is WarehouseError


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/staging/run"), StorageFull),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/staging/run"), StorageFull),
        (PermissionError(errno.EACCES, "Permission denied", "/staging"), StorageError),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"), StorageError),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a-file/staging"), StorageError),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), TransientError),
    ],
)
def test_file_system_errors(cause: OSError, kind: type[SpendpredError]) -> None:
    error = as_error(cause)
    assert type(error) is kind
    if cause.filename:
        assert cause.filename in _one_line(error)
    assert isinstance(error, TransientError) is (kind is not StorageError)


def test_an_http_connection_error_is_transient_and_masked() -> None:
    import requests

    def get() -> None:
        requests.get(f"http://u:{SECRET}@127.0.0.1:1/health", timeout=2)

    error = as_error(_raised(get))
    assert type(error) is TransientError
    assert _one_line(error).startswith("cannot reach http://u:***@127.0.0.1:1/health")


def test_spendpred_errors_keep_their_class_and_become_one_masked_line() -> None:
    already = PublishInterrupted("publishing failed and was rolled back: connection lost")
    assert as_error(already) is already
    report = ValidationFailed("snapshot /s failed validation: 2 of 9 expectations failed\n  - [rows] a\n  - [money] b")
    error = as_error(report)
    assert type(error) is ValidationFailed
    assert str(error) == "snapshot /s failed validation: 2 of 9 expectations failed; [rows] a; [money] b"
    leaky = ConfigError(f"bad URL postgresql://bob:{SECRET}@h/w")
    assert type(as_error(leaky)) is ConfigError and _one_line(as_error(leaky)) == "bad URL postgresql://bob:***@h/w"


def test_a_bug_is_not_an_expected_error() -> None:
    assert as_error(KeyError("x")) is None
    assert as_error(ZeroDivisionError()) is None
    assert as_error(sa.exc.ArgumentError("Could not parse SQLAlchemy URL")) is None


# -- one_line --------------------------------------------------------------------------------------


def test_one_line_as_a_decorator_converts_and_hides_the_library_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "0")

    @one_line()
    def step() -> int:
        """A task body."""
        return Settings().horizon_days

    assert step.spendpred_one_line is True and step.__name__ == "step" and step.__doc__ == "A task body."
    with pytest.raises(ConfigError) as info:
        step()
    assert str(info.value).startswith("SPENDPRED_HORIZON_DAYS=0 is out of range: use a whole number in 1..")
    assert info.value.__suppress_context__ and info.value.__cause__ is None
    shown = "".join(traceback.format_exception(info.value))
    assert "pydantic" not in shown and "validation error for Settings" not in shown
    monkeypatch.delenv("SPENDPRED_HORIZON_DAYS")
    assert step() == 90  # the same wrapper, called again, works


def test_one_line_keeps_transient_causes_transient() -> None:
    with pytest.raises(WarehouseUnavailable) as info, one_line():
        raise _refused_connection()
    assert SECRET not in str(info.value) and "\n" not in str(info.value)


def test_one_line_lets_bugs_and_control_flow_through() -> None:
    class Skip(Exception):  # like AirflowSkipException: not a failure spendpred describes
        pass

    with pytest.raises(KeyError), one_line():
        raise KeyError("a bug keeps its own exception")
    with pytest.raises(Skip), one_line():
        raise Skip("dry run")
    original = ConfigError("already one line")
    with pytest.raises(ConfigError) as info, one_line():
        raise original
    assert info.value is original


def test_one_line_refuses_a_missing_sqlite_warehouse_and_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'warehouse.db'}"

    @one_line()
    def read() -> None:
        warehouse.get_engine(url).dispose()

    with pytest.raises(ConfigError, match="does not exist: run `spendpred db init`"):
        read()
    assert not (tmp_path / "typo").exists()
    with one_line(creates_warehouse=True):
        warehouse.get_engine(url).dispose()
    assert (tmp_path / "typo").is_dir()
    # outside the block, the default (creating allowed) is back
    warehouse.get_engine(f"sqlite:///{tmp_path / 'other' / 'w.db'}").dispose()
    assert (tmp_path / "other").is_dir()


def test_one_line_keeps_the_return_type_airflow_reads() -> None:
    """Airflow resolves a task's return annotation in the wrapper's globals (contextlib's): it must be resolved already."""

    @one_line()
    def task_body() -> dict[str, Any]:
        return {}

    assert task_body.__annotations__["return"] == dict[str, Any]


def test_every_message_is_masked_even_when_the_library_echoes_the_url() -> None:
    cause = OSError(errno.EACCES, "Permission denied", f"/srv/x?url=postgresql://bob:{SECRET}@h/w")
    assert SECRET not in str(as_error(cause))
    assert failures.describe(cause) == str(as_error(cause))


# -- MLflow: a client error is permanent, an outage transient ------------------------------------


def _rest(code: str, message: str) -> Exception:
    from mlflow.exceptions import RestException

    return RestException({"error_code": code, "message": message})


@pytest.mark.parametrize(
    ("code", "status", "fix"),
    [
        ("INVALID_PARAMETER_VALUE", 400, "fix the value it names"),
        ("RESOURCE_ALREADY_EXISTS", 400, "fix the value it names"),
        ("RESOURCE_DOES_NOT_EXIST", 404, "check the model, version, alias or run it names"),
        ("UNAUTHENTICATED", 401, "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ("PERMISSION_DENIED", 403, "give the tracking server's user the rights"),
    ],
)
def test_an_mlflow_client_error_is_permanent_and_one_line(code: str, status: int, fix: str) -> None:
    exc = _rest(code, f"Bad request for http://bob:{SECRET}@mlflow:5000\nsecond line")
    error = as_error(exc)
    assert isinstance(error, errors.RegistryError) and not isinstance(error, TransientError)
    message = str(error)
    assert message.startswith(f"MLflow refused the request ({code}, HTTP {status}): Bad request for http://bob:***@mlflow")
    assert fix in message and message.endswith("retrying cannot help")
    assert SECRET not in message and "\n" not in message and f"{code}: Bad" not in message
    assert not failures.is_transient_mlflow(exc)


@pytest.mark.parametrize("code", ["REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "408", "INTERNAL_ERROR",
                                  "TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "502"])  # fmt: skip
def test_an_mlflow_outage_stays_transient(code: str) -> None:
    exc = _rest(code, "try later")
    error = as_error(exc)
    assert isinstance(error, errors.RegistryUnavailable) and isinstance(error, TransientError)
    assert str(error).startswith("the MLflow registry failed (") and "retrying may help" in str(error)
    assert failures.is_transient_mlflow(exc)


def test_an_mlflow_connection_failure_is_transient_and_masked() -> None:
    from mlflow.exceptions import MlflowException

    # what MLflow's REST client raises when the server does not answer (error code INTERNAL_ERROR)
    exc = MlflowException(f"API request to http://bob:{SECRET}@127.0.0.1:5000/api/2.0/mlflow/experiments/get failed "
                          "with exception HTTPConnectionPool(...): Max retries exceeded (Connection refused)")  # fmt: skip
    error = as_error(exc)
    assert isinstance(error, errors.RegistryUnavailable)
    assert "http://bob:***@127.0.0.1:5000" in str(error) and SECRET not in str(error)


def test_one_line_fails_an_mlflow_client_error_without_retry() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    with pytest.raises(SpendpredError) as caught, one_line():
        raise MlflowException("Invalid value 'x' for parameter 'max_results'", error_code=INVALID_PARAMETER_VALUE)
    assert not isinstance(caught.value, TransientError)  # NO_RETRY_POLICY fails a non-transient SpendpredError at once
    assert caught.value.__cause__ is None and "\n" not in str(caught.value)
    with pytest.raises(TransientError), one_line():
        raise _rest("TEMPORARILY_UNAVAILABLE", "maintenance")


def test_mlflow_on_a_read_only_store_is_named_and_permanent(tmp_path: Path) -> None:
    """MLflow wraps its SQLite store's "readonly database" as HTTP 503; retrying cannot fix it, and the line says which store."""
    import mlflow

    store = tmp_path / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{store}").search_experiments()  # creates the store
    read_only = mlflow.MlflowClient(f"sqlite:///file:{store}?mode=ro&uri=true")
    cause = _raised(lambda: read_only.create_experiment("x"))
    assert failures.mlflow_status(cause) == 503  # MLflow's own classification: temporarily unavailable
    error = as_error(cause)
    assert isinstance(error, errors.RegistryError) and not isinstance(error, TransientError)
    message = _one_line(error)
    assert message.startswith("the MLflow tracking store is read-only (attempt to write a readonly database)")
    assert "SPENDPRED_MLFLOW_TRACKING_URI" in message and "retrying cannot help" in message


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ('relation "users" does not exist', "run `spendpred db init`"),
        ('column "amount" does not exist', "the relation lacks that column"),
        ("function round(double precision, integer) does not exist", "a source column has a type this query cannot take"),
        ('schema "x" does not exist', "check the name it gives"),
        ("no such column: amount", "the relation lacks that column"),
    ],
)
def test_a_missing_object_gets_the_fix_for_its_kind(text: str, fix: str) -> None:
    message = _one_line(as_error(sa.exc.ProgrammingError("SELECT 1", {}, Exception(text))))
    assert f"{text}: {fix}" in message
    assert ("db init" in message) is ("relation" in text or "schema" in text)
