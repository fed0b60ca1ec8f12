"""Reading the registry back: a version by alias or number, the model it holds, the champion for display.

:func:`resolve_version`, :func:`require_model` (the check before anything is extracted),
:func:`load_model` (downloads a version's bundle and loads it) and :func:`champion_info`. A
SQLite store that does not exist yet holds nothing and is not created by asking; an
unreachable registry is never reported as "no champion".
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendpred.config import Settings
from spendpred.errors import ModelError, RegistryUnavailable
from spendpred.failures import is_transient_mlflow
from spendpred.logs import quiet_libraries
from spendpred.masking import mask_url
from spendpred.registry.store import (
    _NOT_FOUND_CODES,
    BASELINES_TAG,
    BUNDLE_ARTIFACT,
    CHAMPION,
    METRIC_TAG_PREFIX,
    NO_CHAMPION_MESSAGE,
    REGISTERED_MODEL,
    TRACKING_SETTING,
    _client_uri,
    _detail,
    _settings,
    _unavailable,
    get_client,
    missing_store,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from spendpred.model import SpendModel

logger = logging.getLogger(__name__)


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
