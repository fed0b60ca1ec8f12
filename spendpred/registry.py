"""MLflow tracking and model registry: set-up, the pyfunc, run logging, promotion, read-back.

* Experiment ``spendpred`` (created with ``Settings.resolved_artifact_root``), registered
  model ``spendpred-regressor``, aliases ``champion`` (what scoring uses) and ``challenger``
  (the latest candidate).
* :func:`log_training_run` records one training: params, per-epoch metrics, the snapshot
  manifest and validation result, the evaluation report and plots, and the model as a pyfunc
  around the bundle folder (safetensors). The pyfunc is logged "from code" (a three-line
  file that instantiates ``SpendPyfuncModel``), so nothing is pickled at all.
  The model becomes a new registered version with alias ``challenger`` and version tags
  (text-template version, loss, feature columns, normaliser, test metrics).
* :func:`promote` applies a decision of :mod:`spendpred.promotion` (the gate lives there, free
  of MLflow): it moves the ``champion`` alias and records the decision as version tags.
* :func:`load_model` and :func:`champion_info` read the registry back.

The tracking URI is never set at import; every function takes ``settings`` (default:
:func:`spendpred.config.get_settings`) and talks to ``Settings.resolved_tracking_uri``.
:func:`get_client` checks the store first and fails fast instead of waiting through MLflow's
retries (minutes): an HTTP server that does not answer within ``PROBE_TIMEOUT_S`` raises
``RegistryUnavailable``, a database store that cannot be opened or created raises
``RegistryUnavailable`` or ``StorageError``; every message names the URI (password masked)
and the fix. For an HTTP server it also bounds MLflow's own retries (``HTTP_LIMITS``, only
where the environment does not set them). An unreachable registry is never reported as
"no champion".
MLflow is imported inside functions (it is slow to import), and ``SpendPyfuncModel`` is
built on first access through the module ``__getattr__``, so the class is importable as
``spendpred.registry.SpendPyfuncModel`` (as the logged code file does) without importing
MLflow when this module is imported.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendpred.config import ARTIFACT_ROOT_SETTING, REMOTE_ARTIFACT_SCHEMES, ArtifactRoot, Settings, get_settings
from spendpred.errors import ConfigError, ModelError, RegistryUnavailable, StorageError
from spendpred.failures import is_transient_mlflow
from spendpred.logs import quiet_libraries, route_mlflow_output
from spendpred.masking import mask_secrets, mask_url
from spendpred.promotion import (
    DEFAULT_GINI_MARGIN,
    DEFAULT_RMSE_TOLERANCE,
    PromotionDecision,
    PromotionMode,
    check_mode,
    decide,
)
from spendpred.snapshot import MANIFEST_FILE, REPORT_FILES

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from spendpred.model import SpendModel

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = "spendpred"
DEFAULT_EXPERIMENT = "Default"
DEFAULT_EXPERIMENT_ID = "0"
"""The experiment MLflow's database store creates with its tables (deleted while empty)."""
GIT_COMMIT_TAG = "mlflow.source.git.commit"
"""Run tag: the commit of the git checkout spendpred's code ran from (absent outside a checkout)."""
GIT_TIMEOUT_S = 3.0
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
_PIP_PACKAGES = ("spendpred", "mlflow", "torch", "transformers", "safetensors", "numpy", "pandas")
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


def _probe_sqlite(uri: str, path: Path) -> None:
    """Raise ``StorageError`` when an existing SQLite store cannot be opened for writing (a folder, not a database...)."""
    import sqlite3

    if path.is_dir():
        raise StorageError(f"the MLflow store {mask_url(uri)} is a folder, not a SQLite file: fix {TRACKING_SETTING}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=PROBE_TIMEOUT_S)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(
            f"cannot open the MLflow store {mask_url(uri)}: {exc}: make the file and its folder readable and writable, "
            f"or fix {TRACKING_SETTING}"
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


# -- the pyfunc wrapper -------------------------------------------------------------------------


def _build_pyfunc_class() -> type:
    """Create ``SpendPyfuncModel`` (needs MLflow, so it is built on first access)."""
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    class SpendPyfuncModel(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc around a spendpred model bundle (the ``bundle`` artifact).

        The instance holds no weights: ``load_context`` loads ``SpendModel`` from the
        bundle folder and ``predict`` takes a DataFrame with the snapshot columns (``text``
        and the feature columns; others are ignored) and returns predicted spend.
        """

        def load_context(self, context: Any) -> None:
            from spendpred.model import SpendModel

            self.model = SpendModel.load(context.artifacts[BUNDLE_ARTIFACT])

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> np.ndarray:
            """Return predicted spend (numpy float64, >= 0) for each row of ``model_input``."""
            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            batch_size = int((params or {}).get("batch_size", 256))
            return self.model.predict(model_input, batch_size=batch_size)

        # MLflow reads predict's type hints when the class is created; postponed annotations are
        # strings naming function-local imports it cannot resolve, so give it the objects.
        predict.__annotations__ = {
            "context": Any, "model_input": pd.DataFrame, "params": dict[str, Any] | None, "return": np.ndarray,
        }

    SpendPyfuncModel.__module__ = __name__
    SpendPyfuncModel.__qualname__ = "SpendPyfuncModel"
    return SpendPyfuncModel


def __getattr__(name: str) -> Any:
    """Build ``SpendPyfuncModel`` on first access (module attribute hook); raise ``AttributeError`` otherwise."""
    if name == "SpendPyfuncModel":
        cls = _build_pyfunc_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MODEL_CODE = '''"""MLflow models-from-code entry point of spendpred-regressor (written by spendpred.registry)."""

import mlflow

from spendpred.registry import SpendPyfuncModel

mlflow.models.set_model(SpendPyfuncModel())
'''
"""The pyfunc's code file: the model is logged from code, so nothing is pickled."""


def _signature(feature_columns: Sequence[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "text"), *(ColSpec("double", column) for column in feature_columns)])
    outputs = Schema([ColSpec("double", "predicted_spend")])
    params = ParamSchema([ParamSpec("batch_size", "long", 256)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


EXAMPLE_TEXT = (
    "member for 1 year. 3 completed orders, 182.40 spent. last 30 days: 6 views, 1 search. "
    "last active 2 days ago. orders: 12 days ago 54.90 books; 80 days ago 99.00 electronics. "
    'searches: 2 days ago "running shoes".'
)
"""A made-up behaviour text for the logged model's input example (never a real user's text)."""

REGISTERED_MODEL_DESCRIPTION = (
    "Purchasing-power regressor of spendpred: predicts each user's completed-order spend over the "
    "next horizon (currency) from a behaviour text and numeric features. Aliases: 'champion' is "
    "scored nightly by spendpred_nightly_scoring; 'challenger' is the latest candidate of "
    "spendpred_weekly_retrain."
)


def _input_example(feature_columns: Sequence[str]) -> Any:
    """One synthetic row matching the signature (the text above, neutral zero features)."""
    import pandas as pd

    return pd.DataFrame([{"text": EXAMPLE_TEXT, **{column: 0.0 for column in feature_columns}}])


def _version_description(params: Mapping[str, Any], meta: Mapping[str, Any], metrics: Mapping[str, float]) -> str:
    """A one-paragraph description of a registered version: data, training and test metrics."""
    shown = ", ".join(
        f"{key}={params[key]}" for key in ("as_of", "horizon_days", "epochs", "freeze", "train_users") if key in params
    )
    scores = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items() if key in ("normalised_gini", "top10_capture", "rmse"))
    return (
        f"Trained by spendpred ({shown}; loss {meta['loss']}, text template {meta['text_template_version']}). "
        f"Test metrics: {scores or 'none recorded'}."
    )


def _pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc (listed, not inferred: inference loads the model).

    Local version labels are dropped (``torch==2.x+cpu`` -> ``torch==2.x``) so a GPU serving
    environment can install its own build; ``spendpred`` itself comes from this repository.
    """
    requirements = []
    for package in _PIP_PACKAGES:
        try:
            requirements.append(f"{package}=={metadata.version(package).split('+')[0]}")
        except metadata.PackageNotFoundError:
            requirements.append(package)
    return requirements


# -- logging a training run ---------------------------------------------------------------------


def _read_bundle_meta(bundle_dir: Path) -> dict[str, Any]:
    meta_path = bundle_dir / "bundle.json"
    if not meta_path.is_file():
        raise ModelError(f"{meta_path} is missing: save the trained model with SpendModel.save first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path} is corrupt ({exc}): save the trained model again") from exc
    for key in ("loss", "feature_columns", "text_template_version"):
        if key not in meta:
            raise ModelError(f"{meta_path} lacks {key!r}: save the trained model again")
    return meta


def _read_manifest_as_of(snapshot: Path) -> str | None:
    """The ``as_of`` of a snapshot folder's manifest (``None`` when unreadable)."""
    try:
        value = json.loads((snapshot / MANIFEST_FILE).read_text(encoding="utf-8")).get("as_of")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _used_features(meta: Mapping[str, Any]) -> list[str]:
    return list(meta["feature_columns"]) if meta.get("use_features", True) else []


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "model"


def _finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, Path):
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def training_run_name(as_of: str | None, params: Mapping[str, Any]) -> str:
    """Return a retrain's MLflow run name: ``retrain <as_of> loss=<loss> freeze=<freeze>``.

    ``as_of`` is the training snapshot's date (``None``: left out); the loss and freeze come
    from ``params`` (``TrainConfig.to_dict()``), so runs of one date with other settings differ.
    """
    parts = ["retrain"]
    if as_of:
        parts.append(str(as_of))
    parts += [f"{key}={params[key]}" for key in ("loss", "freeze") if params.get(key) not in (None, "")]
    return " ".join(parts)


@lru_cache(maxsize=1)
def source_commit() -> str | None:
    """Return the git commit (40 hex digits) of the checkout spendpred's code is tracked in, else ``None``.

    ``None`` when the package is not a tracked file of a git work tree (an installed wheel, a
    copy inside an ignored folder), git is missing, or it does not answer within
    ``GIT_TIMEOUT_S``. Read once per process.
    """
    import subprocess

    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        if not git("ls-files", "--", Path(__file__).name):  # not tracked here: not a checkout of spendpred
            return None
        commit = git("rev-parse", "--verify", "--quiet", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None


def log_training_run(
    *,
    bundle_dir: str | Path,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    test_metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]] | None = None,
    snapshot_dir: str | Path | None = None,
    evaluation_dir: str | Path | None = None,
    run_name: str | None = None,
    run_tags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> tuple[str, str]:
    """Log one training run and register its model as a new ``spendpred-regressor`` version.

    Logs ``params``; each ``history`` entry's numbers with ``step=entry["epoch"]`` (its
    position + 1 when absent); ``test_metrics`` as ``test_<metric>`` and ``baseline_metrics``
    (``{name: metrics}``) as ``test_<name>_<metric>``; from ``snapshot_dir`` the files
    manifest.json, validation.json and validation.md (under ``snapshot/``); every file of
    ``evaluation_dir`` (report.md, metrics.json, plots; under ``evaluation/``); the bundle as
    a pyfunc model. The run is named ``run_name`` (default :func:`training_run_name` of the
    snapshot's date and the params) and tagged with the code's git commit (``GIT_COMMIT_TAG``,
    :func:`source_commit`) when it runs from a checkout. The new version gets alias ``challenger`` and tags
    ``text_template_version``, ``loss``, ``feature_columns``, ``use_features``,
    ``normaliser`` and ``test_<metric>``.

    Returns ``(run_id, version)``. Raises ``ModelError`` when ``bundle_dir`` is not a saved
    bundle and ``ConfigError`` when a named folder does not exist.
    """
    import mlflow

    quiet_libraries()  # no upload progress bars in task logs
    settings = _settings(settings)
    bundle = Path(bundle_dir)
    meta = _read_bundle_meta(bundle)
    snapshot = Path(snapshot_dir) if snapshot_dir is not None else None
    evaluation = Path(evaluation_dir) if evaluation_dir is not None else None
    for label, folder in (("snapshot_dir", snapshot), ("evaluation_dir", evaluation)):
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"{label}={folder} is not a folder: pass the folder the step wrote")

    client = get_client(settings)
    experiment_id = ensure_experiment(client, settings)
    all_params = {
        "loss": meta["loss"],
        "text_template_version": meta["text_template_version"],
        "use_features": meta.get("use_features", True),
        "max_length": meta.get("max_length"),
        **params,
    }
    metrics = {f"{METRIC_TAG_PREFIX}{key}": value for key, value in _finite_metrics(test_metrics).items()}
    for name, values in (baseline_metrics or {}).items():
        for key, value in _finite_metrics(values).items():
            metrics[f"{METRIC_TAG_PREFIX}{_slug(name)}_{key}"] = value

    if run_name is None:
        as_of = _read_manifest_as_of(snapshot) if snapshot is not None else None
        run_name = training_run_name(as_of, all_params)
    tags = dict(run_tags or {})
    commit = source_commit()
    if commit is not None:
        tags.setdefault(GIT_COMMIT_TAG, commit)
    with _tracking(settings), mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        run_id = run.info.run_id
        mlflow.log_params({str(key): _param_value(value) for key, value in all_params.items()})
        for position, entry in enumerate(history, start=1):
            step = int(entry.get("epoch", position))
            epoch_metrics = {k: v for k, v in _finite_metrics(entry).items() if k != "epoch"}
            if epoch_metrics:
                mlflow.log_metrics(epoch_metrics, step=step)
        if metrics:
            mlflow.log_metrics(metrics)
        if snapshot is not None:
            for name in (MANIFEST_FILE, *REPORT_FILES):
                if (snapshot / name).is_file():
                    mlflow.log_artifact(str(snapshot / name), artifact_path="snapshot")
                else:
                    logger.warning("snapshot folder %s has no %s; not logged", snapshot, name)
        if evaluation is not None:
            mlflow.log_artifacts(str(evaluation), artifact_path="evaluation")
        with tempfile.TemporaryDirectory(prefix="spendpred-pyfunc-") as code_dir:
            # the input example is made up: a real user's behaviour text never enters the registry
            code_file = Path(code_dir) / "spendpred_pyfunc.py"
            code_file.write_text(_MODEL_CODE, encoding="utf-8")
            model_info = mlflow.pyfunc.log_model(
                name=LOGGED_MODEL_NAME,
                python_model=str(code_file),
                artifacts={BUNDLE_ARTIFACT: str(bundle)},
                signature=_signature(_used_features(meta)),
                input_example=_input_example(_used_features(meta)),
                pip_requirements=_pip_requirements(),
                registered_model_name=REGISTERED_MODEL,
            )
    version = str(model_info.registered_model_version)
    client.update_registered_model(REGISTERED_MODEL, description=REGISTERED_MODEL_DESCRIPTION)
    client.update_model_version(
        REGISTERED_MODEL, version, description=_version_description(all_params, meta, _finite_metrics(test_metrics))
    )
    client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
    version_tags = {
        "text_template_version": str(meta["text_template_version"]),
        "loss": str(meta["loss"]),
        "feature_columns": json.dumps(list(meta["feature_columns"])),
        "use_features": json.dumps(bool(meta.get("use_features", True))),
        "normaliser": json.dumps(meta.get("normaliser", {})),
        **{f"{METRIC_TAG_PREFIX}{key}": repr(value) for key, value in _finite_metrics(test_metrics).items()},
        # the peers on the same held-out users, shown beside the champion on the page and in reports
        BASELINES_TAG: json.dumps({name: _finite_metrics(values) for name, values in (baseline_metrics or {}).items()}),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    logger.info(
        "logged run %s in experiment %r; registered %s version %s as %s",
        run_id, EXPERIMENT_NAME, REGISTERED_MODEL, version, CHALLENGER,
    )
    return run_id, version


# -- promotion --------------------------------------------------------------------------------


def _champion_version(client: MlflowClient) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        if is_transient_mlflow(exc):
            raise _unavailable(exc, f"reading the {CHAMPION} of {REGISTERED_MODEL}", _client_uri(client)) from exc
        raise


def promote(
    client: MlflowClient,
    version: str | int,
    candidate_metrics: Mapping[str, float],
    champion_metrics_on_same_users: Mapping[str, float] | None,
    gini_margin: float = DEFAULT_GINI_MARGIN,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
    mode: PromotionMode = "auto",
    *,
    actor: str | None = None,
    reason: str | None = None,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    held_out_users: int | None = None,
    win_share: float | None = None,
    baselines_ahead: Mapping[str, Mapping[str, float]] | None = None,
) -> PromotionDecision:
    """Decide with :func:`spendpred.promotion.decide` whether ``version`` becomes champion, then apply it.

    ``baselines``, ``held_out_users``, ``win_share`` and ``baselines_ahead`` are passed on to the gate.

    A promoted version gets the ``champion`` alias. Every decision is written as version tags
    ``promotion`` (first, promoted, rejected, unchanged, skipped, forced), ``promotion_reason``
    and ``promotion_decided_at``; a promotion adds ``promoted_at`` and ``previous_champion``,
    ``mode="force"`` adds ``promoted_by`` (``actor``: the Airflow user who triggered the run, or
    the CLI's ``--actor``; default the OS user) and, past a failing gate, ``promotion_skipped_gate``
    (the condition it did not meet, ``PromotionDecision.skipped_gate``).

    Returns the :class:`~spendpred.promotion.PromotionDecision`. Raises ``ConfigError`` for an
    unknown mode, a negative tolerance, or missing metrics when a champion exists in auto mode;
    ``ModelError`` when the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    check_mode(mode, gini_margin, rmse_tolerance)
    version = str(version)
    try:
        client.get_model_version(REGISTERED_MODEL, version)
    except MlflowException as exc:
        if is_transient_mlflow(exc):
            raise _unavailable(exc, f"reading {REGISTERED_MODEL} version {version}", _client_uri(client)) from exc
        if exc.error_code not in _NOT_FOUND_CODES:
            raise  # refused (permissions...), not absent: failures.describe words it as a RegistryError
        raise ModelError(f"{REGISTERED_MODEL} version {version} does not exist: {exc.message}") from exc
    previous = _champion_version(client)
    actor = actor or getpass.getuser()
    decision = decide(
        version, previous, candidate_metrics, champion_metrics_on_same_users, mode, gini_margin, rmse_tolerance,
        actor=actor, reason=reason, baselines=baselines, held_out_users=held_out_users, win_share=win_share,
        baselines_ahead=baselines_ahead,
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {"promotion": decision.outcome, "promotion_reason": decision.reason[:4900], "promotion_decided_at": now}
    if decision.promoted:
        client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
        tags["promoted_at"] = now
        if previous is not None and previous != version:
            tags["previous_champion"] = previous
    if mode == "force":
        tags["promoted_by"] = actor
        if decision.skipped_gate:
            tags[SKIPPED_GATE_TAG] = decision.skipped_gate[:4900]
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    logger.info(
        "promotion of %s version %s (%s): %s - %s",
        REGISTERED_MODEL, version, mode, "PROMOTED" if decision.promoted else "not promoted", decision.reason,
    )
    return decision


# -- reading the registry back ------------------------------------------------------------------


def resolve_version(client: MlflowClient, alias_or_version: str | int) -> ModelVersion:
    """Return the ``ModelVersion`` for an alias (``"champion"``) or a version number.

    Raises ``ModelError`` with the fix when there is no champion, the alias is unset or the
    version does not exist; ``RegistryUnavailable`` (never "no champion") when the registry
    could not be read.
    """
    from mlflow.exceptions import MlflowException

    ref = str(alias_or_version).strip()
    try:
        if ref.isdigit():
            return client.get_model_version(REGISTERED_MODEL, ref)
        return client.get_model_version_by_alias(REGISTERED_MODEL, ref)
    except MlflowException as exc:
        if is_transient_mlflow(exc):
            raise _unavailable(exc, f"resolving {REGISTERED_MODEL} {ref!r}", _client_uri(client)) from exc
        if exc.error_code not in _NOT_FOUND_CODES:  # refused (permissions...), not absent: say so, not "no champion"
            raise ModelError(
                f"the MLflow registry {mask_url(_client_uri(client))} refused to resolve {REGISTERED_MODEL} {ref!r}: "
                f"{_detail(exc)}: check the access rights on the tracking server, or fix {TRACKING_SETTING}"
            ) from exc
        raise _not_found(ref, _detail(exc)) from exc


_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
"""MLflow error codes meaning "no such version or alias" (anything else is a registry failure, not an absence)."""


def _not_found(ref: str, detail: str | None = None) -> ModelError:
    """The ``ModelError`` for a version or alias that the registry does not hold."""
    why = f" ({detail})" if detail else ""
    if ref.isdigit():
        return ModelError(
            f"{REGISTERED_MODEL} version {ref} does not exist{why}; list versions in the MLflow UI or use alias 'champion'"
        )
    if ref == CHAMPION:
        return ModelError(NO_CHAMPION_MESSAGE)
    return ModelError(f"no version of {REGISTERED_MODEL} has alias {ref!r}{why}; use 'champion', 'challenger' or a version number")


def require_model(alias_or_version: str | int = CHAMPION, settings: Settings | None = None) -> ModelVersion:
    """Return the registered version that scoring would load, checked before anything is extracted.

    A SQLite store that does not exist yet holds no version, and is not created by asking.
    Raises ``ModelError`` when there is no champion or no such version or alias,
    ``RegistryUnavailable`` or ``StorageError`` (see :func:`check_store`) when the registry
    cannot be read.
    """
    if missing_store(settings) is not None:
        raise _not_found(str(alias_or_version).strip())
    return resolve_version(get_client(settings), alias_or_version)


def load_model(
    alias_or_version: str | int = CHAMPION,
    *,
    settings: Settings | None = None,
    device: str = "auto",
    dst_dir: str | Path | None = None,
) -> tuple[SpendModel, ModelVersion]:
    """Download a registered version's bundle and load it.

    ``alias_or_version`` is an alias (``"champion"``, ``"challenger"``) or a version number.
    The bundle is downloaded into ``dst_dir`` when given (kept), else into a temporary folder
    removed after loading. Returns ``(SpendModel, ModelVersion)``.
    Raises ``ModelError`` when there is no champion ("run `spendpred train --promote auto`
    first"), the version does not exist, or its artifact is missing or corrupt.
    """
    import mlflow.artifacts

    from spendpred.model import SpendModel

    settings = _settings(settings)
    if missing_store(settings) is not None:  # nothing registered yet: say so without creating the store
        raise _not_found(str(alias_or_version).strip())
    client = get_client(settings)
    model_version = resolve_version(client, alias_or_version)
    version = str(model_version.version)

    def _load(folder: Path) -> SpendModel:
        quiet_libraries()  # no "Downloading artifacts" bar in task logs
        try:
            # the logged model's own location (file://, s3://, mlflow-artifacts://...), so that
            # no models:/ URI has to be resolved through MLflow's global registry URI
            root = client.get_model_version_download_uri(REGISTERED_MODEL, version).rstrip("/")
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root}/artifacts/{BUNDLE_ARTIFACT}",
                dst_path=str(folder),
                tracking_uri=settings.resolved_tracking_uri,
            )
        except Exception as exc:  # MlflowException, OSError: the artifact store lacks the files
            raise ModelError(
                f"{REGISTERED_MODEL} version {version}: cannot download its model artifact ({exc}); "
                "the artifact store is missing the files: pick another version or retrain"
            ) from exc
        try:
            return SpendModel.load(local, device=device)
        except ModelError as exc:
            raise ModelError(f"{REGISTERED_MODEL} version {version}: {exc}") from exc

    if dst_dir is not None:
        target = Path(dst_dir)
        target.mkdir(parents=True, exist_ok=True)
        model = _load(target)
    else:
        with tempfile.TemporaryDirectory(prefix="spendpred-model-") as tmp:
            model = _load(Path(tmp))
    logger.info("loaded %s version %s (%s)", REGISTERED_MODEL, version, alias_or_version)
    return model, model_version


def _baselines(tags: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """The ``baseline_metrics`` tag as ``{baseline: {metric: value}}`` (empty when absent or unreadable)."""
    try:
        data = json.loads(tags.get(BASELINES_TAG) or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): {str(m): float(v) for m, v in values.items()} for k, values in data.items() if isinstance(values, dict)}


def champion_info(settings: Settings | None = None) -> dict[str, Any] | None:
    """Return the champion's ``{"name", "version", "run_id", "created_at", "aliases",
    "metrics", "tags"}`` for display, or ``None`` when there is no champion yet.

    ``metrics`` are the ``test_*`` version tags as floats. A SQLite store that does not exist
    yet has no champion (and is not created). Raises ``RegistryUnavailable`` (never ``None``)
    when the registry cannot be reached, ``ModelError`` or ``StorageError`` when the tracking
    store cannot be read.
    """
    from mlflow.exceptions import MlflowException

    settings = _settings(settings)
    if missing_store(settings) is not None:
        return None
    try:
        client = get_client(settings)
        try:
            model_version = resolve_version(client, CHAMPION)
        except RegistryUnavailable:
            raise
        except ModelError:
            return None
    except MlflowException as exc:
        if is_transient_mlflow(exc):
            raise _unavailable(exc, f"reading the {CHAMPION}", settings.resolved_tracking_uri) from exc
        raise ModelError(
            f"cannot read the MLflow registry at {mask_url(settings.resolved_tracking_uri)}: {_detail(exc)}; "
            f"check {TRACKING_SETTING}"
        ) from exc
    tags = dict(model_version.tags or {})
    metrics: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX):]] = float(value)
            except ValueError:
                continue
    created = datetime.fromtimestamp(model_version.creation_timestamp / 1000, tz=UTC)
    return {
        "name": REGISTERED_MODEL,
        "version": str(model_version.version),
        "run_id": model_version.run_id,
        "created_at": created.isoformat(timespec="seconds"),
        "aliases": list(model_version.aliases or []),
        "metrics": metrics,
        "baselines": _baselines(tags),
        "tags": tags,
    }
