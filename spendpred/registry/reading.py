"""Reading the registry back: a version by alias or number, the model it holds, the champion for display.

:func:`resolve_version`, :func:`require_model` (the check before anything is extracted),
:func:`load_model` (downloads a version's bundle, or reads it from the local model cache, and loads it) and :func:`champion_info`. A
SQLite store that does not exist yet holds nothing and is not created by asking; an
unreachable registry is never reported as "no champion".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
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

MODEL_CACHE_DIR = "model-cache"
"""The local cache of downloaded bundles: ``<staging>/model-cache/v<version>-<run_id>/bundle/`` (:func:`model_cache_dir`)."""
MODEL_CACHE_KEEP = 3
"""Bundles the model cache keeps: the most recently used (each MiniLM bundle is about 90 MB)."""
_STALE_TEMP_S = 24 * 3600
"""A download folder of the cache older than this was left by a killed task and is removed."""


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


def model_cache_dir(settings: Settings | None = None) -> Path:
    """Return the local model cache folder: ``<staging>/model-cache``, or ``<home>/model-cache`` when staging is on
    object storage. Not created here."""
    settings = _settings(settings)
    staging = settings.resolved_staging_dir
    return (staging if isinstance(staging, Path) else Path(settings.home)) / MODEL_CACHE_DIR


def load_model(
    alias_or_version: str | int = CHAMPION,
    *,
    settings: Settings | None = None,
    device: str = "auto",
    dst_dir: str | Path | None = None,
) -> tuple[SpendModel, ModelVersion]:
    """Download a registered version's bundle (or take it from the local model cache) and load it.

    ``alias_or_version`` is an alias (``"champion"``, ``"challenger"``) or a version number.
    The bundle is downloaded into ``dst_dir`` when given (kept). Otherwise, with
    ``SPENDPRED_MODEL_CACHE`` on (the default), it is read from :func:`model_cache_dir`
    ``/v<version>-<run_id>/`` (checked against the bundle's own sha256 list before use; a
    damaged entry is downloaded again with one warning), or downloaded into it (a temporary
    folder renamed into place once the bundle loaded, so a half-written entry is never read);
    with the cache off, into a temporary folder removed after loading. Returns
    ``(SpendModel, ModelVersion)``. Raises ``ModelError`` when there is no champion ("run
    `spendpred train --promote auto` first"), the version does not exist, or its artifact is
    missing or corrupt.
    """
    import mlflow.artifacts

    from spendpred.model import SpendModel

    settings = _settings(settings)
    if missing_store(settings) is not None:  # nothing registered yet: say so without creating the store
        raise _not_found(str(alias_or_version).strip())
    client = get_client(settings)
    model_version = resolve_version(client, alias_or_version)
    version = str(model_version.version)

    def _download(folder: Path) -> Path:
        quiet_libraries()  # no "Downloading artifacts" bar in task logs
        try:
            # the logged model's own location (file://, s3://, mlflow-artifacts://...), so that
            # no models:/ URI has to be resolved through MLflow's global registry URI
            root = client.get_model_version_download_uri(REGISTERED_MODEL, version).rstrip("/")
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{root}/artifacts/{BUNDLE_ARTIFACT}",
                    dst_path=str(folder),
                    tracking_uri=settings.resolved_tracking_uri,
                )
            )
        except Exception as exc:  # MlflowException, OSError: the artifact store lacks the files
            raise ModelError(
                f"{REGISTERED_MODEL} version {version}: cannot download its model artifact ({exc}); "
                "the artifact store is missing the files: pick another version or retrain"
            ) from exc

    def _open(local: Path) -> SpendModel:
        try:
            return SpendModel.load(local, device=device)  # checks every file's sha256 against bundle.json first
        except ModelError as exc:
            raise ModelError(f"{REGISTERED_MODEL} version {version}: {exc}") from exc

    if dst_dir is not None:
        target = Path(dst_dir)
        target.mkdir(parents=True, exist_ok=True)
        model = _open(_download(target))
    elif settings.model_cache:
        key = f"v{version}-{model_version.run_id or 'norun'}"
        model = _load_cached(model_cache_dir(settings), key, _download, _open)
    else:
        with tempfile.TemporaryDirectory(prefix="spendpred-model-") as tmp:
            model = _open(_download(Path(tmp)))
    logger.info("loaded %s version %s (%s)", REGISTERED_MODEL, version, alias_or_version)
    return model, model_version


def _load_cached(
    cache: Path, key: str, download: Callable[[Path], Path], open_bundle: Callable[[Path], SpendModel]
) -> SpendModel:
    """Load the bundle cached as ``cache/key/bundle``, or download it there first.

    A cached entry is used only when its files match the bundle's sha256 list (``SpendModel.load``);
    a damaged one is removed and downloaded again, with one warning. A download goes into a hidden
    temporary folder of ``cache``, is loaded (so verified), then renamed to ``key``: a reader never
    sees a half-written entry, and of two tasks downloading at once the first rename wins. When the
    cache folder cannot be written the bundle is downloaded into a temporary folder as without cache.
    Raises ``ModelError`` (from ``download``/``open_bundle``).
    """
    entry = cache / key
    if entry.is_dir():
        try:
            model = open_bundle(entry / BUNDLE_ARTIFACT)
        except ModelError as exc:
            logger.warning("model cache entry %s is damaged (%s): downloading the bundle again", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _touch(entry)
            logger.info("model bundle %s read from the model cache", key)
            return model
    try:
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    except OSError as exc:
        logger.warning("model cache %s is not writable (%s): downloading the bundle without caching it", cache, exc)
        with tempfile.TemporaryDirectory(prefix="spendpred-model-") as tmp:
            return open_bundle(download(Path(tmp)))
    try:
        local = download(work)
        model = open_bundle(local)
        if local.resolve() == (work / BUNDLE_ARTIFACT).resolve():
            try:
                os.rename(work, entry)  # atomic on one file system; fails when another task cached it first
            except OSError:
                pass
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone after a successful rename
    _prune(cache, keep=entry)
    return model


def _touch(entry: Path) -> None:
    """Mark a cache entry as just used (its folder's mtime orders the entries for :func:`_prune`)."""
    try:
        os.utime(entry)
    except OSError:
        pass


def _prune(cache: Path, keep: Path) -> None:
    """Remove all but the ``MODEL_CACHE_KEEP`` most recently used entries of ``cache`` (never ``keep``),
    and download folders older than a day (left by killed tasks)."""
    try:
        children = [p for p in cache.iterdir() if p.is_dir()]
        now = time.time()
        for stale in (p for p in children if p.name.startswith(".") and now - p.stat().st_mtime > _STALE_TEMP_S):
            shutil.rmtree(stale, ignore_errors=True)
        entries = sorted((p for p in children if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:  # another task pruned at the same time
        return
    for old in [p for p in entries if p != keep][max(MODEL_CACHE_KEEP - 1, 0):]:
        logger.info("model cache: removing %s (least recently used)", old.name)
        shutil.rmtree(old, ignore_errors=True)


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
