"""MLflow tracking and model registry, one module per job; every public name is importable from here.

* :mod:`~spendpred.registry.store`: the names (experiment ``spendpred``, registered model
  ``spendpred-regressor``, aliases ``champion``, what scoring uses, and ``challenger``, the
  latest candidate; the version tags) and the store: :func:`get_client` checks it first and
  fails fast (``RegistryUnavailable`` or ``StorageError`` naming the URI, password masked,
  and the fix) instead of waiting through MLflow's retries; :func:`check_writable` before a
  training; :func:`ensure_experiment` (created with ``Settings.resolved_artifact_root``).
* :mod:`~spendpred.registry.pyfunc`: ``SpendPyfuncModel`` around the bundle folder
  (safetensors), logged "from code" (a three-line file that instantiates it), so nothing is
  pickled at all.
* :mod:`~spendpred.registry.runs`: :func:`log_training_run` records one training (params,
  per-epoch metrics, the snapshot manifest and validation result, the evaluation report and
  plots, the model); the model becomes a new registered version with alias ``challenger``
  and version tags (text-template version, loss, feature columns, normaliser, test metrics).
* :mod:`~spendpred.registry.promoting`: :func:`promote` applies a decision of
  :mod:`spendpred.promotion` (the gate lives there, free of MLflow): it moves the
  ``champion`` alias and records the decision as version tags.
* :mod:`~spendpred.registry.reading`: :func:`load_model`, :func:`require_model`,
  :func:`resolve_version` and :func:`champion_info` read the registry back; an unreachable
  registry is never reported as "no champion".

The tracking URI is never set at import; every function takes ``settings`` (default:
:func:`spendpred.config.get_settings`) and talks to ``Settings.resolved_tracking_uri``.
MLflow is imported inside functions (it is slow to import), and ``SpendPyfuncModel`` is
built on first access through the module ``__getattr__``, so
``from spendpred.registry import SpendPyfuncModel`` (the logged code file's import) works
without importing MLflow when this package is imported.

A test that replaces a function replaces it in the module that uses it
(``monkeypatch.setattr(spendpred.registry.store, "_installed", ...)``): the names here are
the same objects, re-exported, and rebinding one here changes no caller inside the package.
"""

from __future__ import annotations

from typing import Any

from spendpred.registry.promoting import promote
from spendpred.registry.pyfunc import EXAMPLE_TEXT
from spendpred.registry.reading import champion_info, load_model, require_model, resolve_version
from spendpred.registry.runs import (
    GIT_COMMIT_TAG,
    GIT_TIMEOUT_S,
    REGISTERED_MODEL_DESCRIPTION,
    log_training_run,
    source_commit,
    training_run_name,
)
from spendpred.registry.store import (
    BASELINES_TAG,
    BUNDLE_ARTIFACT,
    CHALLENGER,
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_EXPERIMENT_ID,
    EXPERIMENT_NAME,
    HTTP_LIMITS,
    LOGGED_MODEL_NAME,
    METRIC_TAG_PREFIX,
    NO_CHAMPION_MESSAGE,
    PROBE_TIMEOUT_S,
    REGISTERED_MODEL,
    SKIPPED_GATE_TAG,
    TRACKING_SETTING,
    check_artifact_root,
    check_store,
    check_writable,
    ensure_experiment,
    get_client,
    missing_store,
)

__all__ = [
    "BASELINES_TAG",
    "BUNDLE_ARTIFACT",
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_EXPERIMENT_ID",
    "EXAMPLE_TEXT",
    "EXPERIMENT_NAME",
    "GIT_COMMIT_TAG",
    "GIT_TIMEOUT_S",
    "HTTP_LIMITS",
    "LOGGED_MODEL_NAME",
    "METRIC_TAG_PREFIX",
    "NO_CHAMPION_MESSAGE",
    "PROBE_TIMEOUT_S",
    "REGISTERED_MODEL",
    "REGISTERED_MODEL_DESCRIPTION",
    "SKIPPED_GATE_TAG",
    "TRACKING_SETTING",
    "champion_info",
    "check_artifact_root",
    "check_store",
    "check_writable",
    "ensure_experiment",
    "get_client",
    "load_model",
    "log_training_run",
    "missing_store",
    "promote",
    "require_model",
    "resolve_version",
    "source_commit",
    "training_run_name",
]


def __getattr__(name: str) -> Any:
    """Build ``SpendPyfuncModel`` on first access (:mod:`spendpred.registry.pyfunc`); ``AttributeError`` otherwise."""
    if name == "SpendPyfuncModel":
        from spendpred.registry import pyfunc

        cls = pyfunc.SpendPyfuncModel  # the same class object everywhere: pyfunc builds and keeps it
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
