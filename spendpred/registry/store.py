"""The registry's names and its store: connection, fast failure, the experiment.

* The names every part of the registry shares: experiment ``spendpred``, registered model
  ``spendpred-regressor``, aliases ``champion`` and ``challenger``, the version tags.
* :func:`get_client` checks the store first (:func:`check_store`) and fails fast instead of
  waiting through MLflow's retries (minutes): an HTTP server that does not answer within
  ``PROBE_TIMEOUT_S`` raises ``RegistryUnavailable``, a database store that cannot be opened
  or created raises ``RegistryUnavailable`` or ``StorageError``; every message names the URI
  (password masked) and the fix. For an HTTP server it also bounds MLflow's own retries
  (``HTTP_LIMITS``, only where the environment does not set them).
* :func:`check_writable` is the check before a training (artifact root and store);
  :func:`ensure_experiment` creates or restores the experiment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendpred.config import ARTIFACT_ROOT_SETTING, REMOTE_ARTIFACT_SCHEMES, ArtifactRoot, Settings, get_settings
from spendpred.errors import ConfigError, RegistryUnavailable, StorageError
from spendpred.logs import route_mlflow_output
from spendpred.masking import mask_secrets, mask_url

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = "spendpred"
DEFAULT_EXPERIMENT = "Default"
DEFAULT_EXPERIMENT_ID = "0"
"""The experiment MLflow's database store creates with its tables (deleted while empty)."""
REGISTERED_MODEL = "spendpred-regressor"
CHAMPION = "champion"
CHALLENGER = "challenger"
LOGGED_MODEL_NAME = "model"
BUNDLE_ARTIFACT = "bundle"
METRIC_TAG_PREFIX = "test_"
BASELINES_TAG = "baseline_metrics"
"""Version tag: JSON ``{baseline: {metric: value}}`` on the candidate's held-out users."""
SKIPPED_GATE_TAG = "promotion_skipped_gate"
"""Version tag of a forced promotion past a failing gate: the gate condition the version did not meet."""
NO_CHAMPION_MESSAGE = "no champion yet: run `spendpred train --promote auto` first"
TRACKING_SETTING = "SPENDPRED_MLFLOW_TRACKING_URI"
PROBE_TIMEOUT_S = 5.0
"""How long the reachability probe of an HTTP tracking server (or a database store) waits."""
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
"""MLflow's HTTP retry settings for spendpred's calls (MLflow's defaults retry for about 4 minutes);
set by :func:`get_client` for an HTTP server only where the environment does not set them."""
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
"""MLflow error codes meaning "no such version or alias" (anything else is a registry failure, not an absence)."""


# -- connection -----------------------------------------------------------------------------


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else get_settings()


def _sqlite_store(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (``None`` for other stores or memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    database = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(database).expanduser() if database and database != ":memory:" else None


def missing_store(settings: Settings | None = None) -> Path | None:
    """Return the file of a SQLite tracking store that does not exist yet (no champion, no version), else ``None``.

    Readers use it to answer "nothing registered yet" without creating the store.
    """
    path = _sqlite_store(_settings(settings).resolved_tracking_uri)
    return path if path is not None and not path.exists() else None


def _prepare_store(uri: str) -> None:
    """Create the folder of a SQLite tracking database (MLflow creates the file itself).

    Raises ``StorageError`` naming the store and the fix when the folder cannot be created.
    """
    path = _sqlite_store(uri)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the MLflow store {mask_url(uri)}: {exc.strerror or exc} ({exc.filename or path.parent}): "
            f"make its folder writable, or set {TRACKING_SETTING} to a writable place or a tracking server"
        ) from None


def _probe_reason(exc: BaseException) -> str:
    """A few words for why a connection failed (``connection refused``, ``no answer within 5 s``...)."""
    text = str(exc)
    lowered = text.lower()
    for needle, words in (
        ("connection refused", "connection refused"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("temporary failure in name resolution", "host name not found"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
        ("certificate verify failed", "its TLS certificate is not trusted (MLFLOW_TRACKING_SERVER_CERT_PATH)"),
    ):
        if needle in lowered:
            return words
    if "timed out" in lowered or "timeout" in type(exc).__name__.lower():
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return mask_secrets(first[:200])


def _unreachable(uri: str, reason: str) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"cannot reach the MLflow registry at {mask_url(uri)}: {reason}: start the tracking server (or check the "
        f"network), or fix {TRACKING_SETTING}"
    )


def _probe_http(uri: str) -> None:
    """Raise ``RegistryUnavailable`` unless an HTTP(S) tracking server answers within ``PROBE_TIMEOUT_S``.

    Any HTTP answer counts (``/health`` may need a login or sit behind a proxy); only a refused,
    unresolvable or silent connection fails.
    """
    import requests

    verify: bool | str = True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        verify = False
    elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S, allow_redirects=False, verify=verify).close()
    except requests.RequestException as exc:
        raise _unreachable(uri, _probe_reason(exc)) from None


def _probe_sqlite(uri: str, path: Path, write: bool = False) -> None:
    """Raise ``StorageError`` when an existing SQLite store cannot be opened (a folder, not a database...)
    or, with ``write``, cannot take a write lock (a read-only file, folder or disk)."""
    import sqlite3

    if path.is_dir():
        raise StorageError(f"the MLflow store {mask_url(uri)} is a folder, not a SQLite file: fix {TRACKING_SETTING}")
    try:
        # mode=rw silently falls back to read-only on a write-protected file: only a write lock tells
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=PROBE_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
            if write:  # rewrite one header field with its own value, rolled back: a write that changes nothing
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                    conn.execute(f"PRAGMA user_version = {version}")
                finally:
                    conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc).lower():  # another writer holds it now: busy, not broken (MLflow waits for it)
            logger.debug("the MLflow store %s is busy: %s", mask_url(uri), exc)
            return
        raise StorageError(
            f"cannot {'write to' if write else 'open'} the MLflow store {mask_url(uri)}: {exc}: make the file and its "
            f"folder readable and writable for this user, or point {TRACKING_SETTING} at a writable store"
        ) from None


def _probe_database(uri: str) -> None:
    """Raise ``RegistryUnavailable`` when a database store (PostgreSQL, MySQL...) does not accept a connection.

    MLflow itself retries opening it for about 100 s; this tries once, ``PROBE_TIMEOUT_S`` at most.
    """
    import sqlalchemy as sa

    connect_args = {"connect_timeout": int(PROBE_TIMEOUT_S)} if uri.startswith(("postgres", "mysql")) else {}
    try:
        engine = sa.create_engine(uri, connect_args=connect_args)
    except Exception as exc:  # noqa: BLE001 - an unknown dialect or driver: let MLflow say what it needs
        logger.debug("cannot probe the MLflow store %s: %s", mask_url(uri), exc)
        return
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise _unreachable(uri, _probe_reason(orig)) from None
    finally:
        engine.dispose()


def check_store(settings: Settings | None = None) -> str:
    """Fail fast when the tracking store cannot be used; return its URI.

    An HTTP(S) server must answer (``RegistryUnavailable`` otherwise, within ``PROBE_TIMEOUT_S``),
    and MLflow's HTTP retries are bounded (``HTTP_LIMITS``, where unset); a database store must
    accept a connection (``RegistryUnavailable``); an existing SQLite store must open for writing
    and the folder of a new one must be creatable (``StorageError``). Creates at most the folder
    of a new SQLite store.
    """
    uri = _settings(settings).resolved_tracking_uri
    scheme = uri.partition(":")[0].lower()
    if scheme in ("http", "https"):
        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        _probe_http(uri)
    elif scheme == "sqlite":
        path = _sqlite_store(uri)
        if path is not None and path.exists():
            _probe_sqlite(uri, path)
        else:
            _prepare_store(uri)
    elif "://" in uri and scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        _probe_database(uri)
    return uri


def check_writable(settings: Settings | None = None) -> None:
    """Fail fast, before anything is extracted or trained, when a training could not be registered.

    The artifact root (``SPENDPRED_MLFLOW_ARTIFACT_ROOT``) must be a location MLflow accepts
    (:func:`spendpred.config.parse_artifact_root`); the tracking store passes :func:`check_store`
    (without creating a new SQLite store: only that its folder could be); then
    :func:`check_artifact_root`. Raises ``ConfigError``, ``RegistryUnavailable`` or
    ``StorageError`` naming the setting and the fix; creates and changes nothing.
    """
    settings = _settings(settings)
    root = settings.artifact_root
    uri = settings.resolved_tracking_uri
    store = _sqlite_store(uri)
    if store is not None and not store.exists():
        _require_writable_folder(store.parent, f"the MLflow store {mask_url(uri)}", TRACKING_SETTING)
    else:
        check_store(settings)
        if store is not None:
            _probe_sqlite(uri, store, write=True)  # a read-only store fails here, not after the training
    check_artifact_root(root, uri)


def check_artifact_root(root: ArtifactRoot, tracking_uri: str) -> None:
    """Check an artifact root as far as is cheap, contacting nothing but the local disk.

    A local folder (a path or ``file://``) must be writable or creatable; ``mlflow-artifacts:``
    needs an HTTP(S) tracking server (the server stores the files: ``mlflow server
    --serve-artifacts``); a store whose MLflow client needs a package (``s3://``: boto3,
    ``gs://``: google-cloud-storage...) needs it installed here. Raises ``ConfigError`` or
    ``StorageError`` naming ``SPENDPRED_MLFLOW_ARTIFACT_ROOT`` and the fix.
    """
    if root.path is not None:
        _require_writable_folder(root.path, f"the MLflow artifact root {root.path}", ARTIFACT_ROOT_SETTING)
        return
    shown = mask_url(root.uri)
    if root.scheme == "mlflow-artifacts" and tracking_uri.partition(":")[0].lower() not in ("http", "https"):
        raise ConfigError(
            f"{ARTIFACT_ROOT_SETTING}={shown} stores artifacts through an MLflow tracking server, but "
            f"{TRACKING_SETTING} is {mask_url(tracking_uri)}, not http(s)://: point {TRACKING_SETTING} at the server "
            f"(mlflow server --serve-artifacts), or set {ARTIFACT_ROOT_SETTING} to a folder"
        )
    needs = REMOTE_ARTIFACT_SCHEMES.get(root.scheme)
    if needs is not None and not _installed(needs[0]):
        raise ConfigError(
            f"{ARTIFACT_ROOT_SETTING}={shown}: MLflow needs the Python package {needs[1]!r} to store "
            f"artifacts on {root.scheme}://, and it is not installed here: install it on every worker, or use "
            f"mlflow-artifacts:/path with a tracking server that serves the artifacts"
        )


def _installed(module: str) -> bool:
    """Whether ``module`` (dotted) could be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a missing parent package (google, azure)
        return False


def _require_writable_folder(folder: Path, what: str, setting: str) -> None:
    """Raise ``StorageError`` unless ``folder`` is a writable folder or could be created (``snapshot.check_can_create``); changes nothing."""
    from spendpred.snapshot import check_can_create

    try:
        check_can_create(folder)
    except OSError as exc:
        reason = "a file is in the way" if isinstance(exc, NotADirectoryError) else exc.strerror or str(exc)
        raise StorageError(
            f"{what} cannot be written: {reason} ({exc.filename}): make it writable, or set {setting} elsewhere"
        ) from None


def get_client(settings: Settings | None = None) -> MlflowClient:
    """Return an ``MlflowClient`` on the settings' tracking URI (also used as registry URI).

    The store is checked first (:func:`check_store`: fast ``RegistryUnavailable`` or
    ``StorageError`` instead of MLflow's minutes of retries); creates the folder of a new SQLite
    store; sets nothing global but MLflow's HTTP retry limits where unset (``HTTP_LIMITS``) and
    MLflow's output, which goes through Python logging, not stderr (``logs.route_mlflow_output``).
    """
    from mlflow import MlflowClient

    route_mlflow_output()  # "Created version '2'" at INFO in the task log, not a red stderr line
    uri = check_store(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _detail(exc: Exception) -> str:
    """The first line of an MLflow error's message, secrets masked, at most 300 characters."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return mask_secrets(text.splitlines()[0][:300] if text else type(exc).__name__)


def _client_uri(client: Any) -> str:
    """The tracking URI of an ``MlflowClient`` (for messages)."""
    uri = getattr(client, "tracking_uri", None)
    return uri if isinstance(uri, str) and uri else get_settings().resolved_tracking_uri


def _unavailable(exc: Exception, doing: str, uri: str | None = None) -> RegistryUnavailable:
    """The ``RegistryUnavailable`` for an MLflow outage (``is_transient_mlflow``) met while ``doing`` something."""
    where = mask_url(uri or get_settings().resolved_tracking_uri)
    return RegistryUnavailable(
        f"the MLflow registry {where} failed while {doing}: {_detail(exc)}: check that the tracking server is up, "
        f"or fix {TRACKING_SETTING}"
    )


@contextmanager
def _tracking(settings: Settings) -> Iterator[None]:
    """Point MLflow's fluent API at the settings' store for the block, then restore it.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; the previous module
    state and environment are put back exactly (the fluent API is process-global, so this is
    not meant for concurrent threads).
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    route_mlflow_output()
    uri = settings.resolved_tracking_uri
    _prepare_store(uri)
    saved_env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking = getattr(tracking_utils, "_tracking_uri", None)
    saved_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        mlflow.set_registry_uri(saved_registry)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _retire_default_experiment(client: MlflowClient) -> None:
    """Delete MLflow's ``Default`` experiment (id 0) when it holds no run.

    MLflow's database store (and a tracking server) inserts it when it creates its tables;
    spendpred logs only to ``spendpred``, so an empty ``Default`` is only a stray entry in the
    UI. Deleting marks it deleted (hidden; MLflow does not insert it again). One with runs, or
    a store that refuses, is left alone.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    try:
        default = client.get_experiment(DEFAULT_EXPERIMENT_ID)
        if default is None or default.name != DEFAULT_EXPERIMENT or default.lifecycle_stage != "active":
            return
        if client.search_runs([DEFAULT_EXPERIMENT_ID], max_results=1, run_view_type=ViewType.ALL):
            return
        client.delete_experiment(DEFAULT_EXPERIMENT_ID)
    except MlflowException as exc:  # not found, or no right to delete: a cosmetic clean-up, never an error
        logger.debug("MLflow's Default experiment left as it is: %s", _detail(exc))


def ensure_experiment(client: MlflowClient, settings: Settings | None = None) -> str:
    """Return the id of experiment ``spendpred``, creating it (artifacts under
    ``Settings.resolved_artifact_root``) or restoring it when it was deleted; MLflow's empty
    ``Default`` experiment is deleted (:func:`_retire_default_experiment`).
    """
    from mlflow.exceptions import MlflowException

    settings = _settings(settings)
    _retire_default_experiment(client)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        try:
            return str(
                client.create_experiment(EXPERIMENT_NAME, artifact_location=settings.resolved_artifact_root)
            )
        except MlflowException:  # created concurrently by another process
            experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        logger.warning("experiment %r was deleted; restoring it", EXPERIMENT_NAME)
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)
