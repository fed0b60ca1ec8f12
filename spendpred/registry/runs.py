"""Logging one training run: params, metrics, snapshot and evaluation files, the model as a new version.

:func:`log_training_run` records one training: params, per-epoch metrics, the snapshot
manifest and validation result, the evaluation report and plots, and the model as a pyfunc
around the bundle folder (:mod:`spendpred.registry.pyfunc`). The model becomes a new
registered version with alias ``challenger`` and version tags (text-template version, loss,
feature columns, normaliser, test metrics). The run is named after its settings
(:func:`training_run_name`) and tagged with the code's git commit (:func:`source_commit`).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
import tempfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from spendpred.config import Settings
from spendpred.errors import ConfigError, ModelError
from spendpred.logs import quiet_libraries
from spendpred.registry.pyfunc import _MODEL_CODE, _input_example, _pip_requirements, _signature
from spendpred.registry.store import (
    BASELINES_TAG,
    BUNDLE_ARTIFACT,
    CHALLENGER,
    EXPERIMENT_NAME,
    LOGGED_MODEL_NAME,
    METRIC_TAG_PREFIX,
    REGISTERED_MODEL,
    _settings,
    _tracking,
    ensure_experiment,
    get_client,
)
from spendpred.snapshot import MANIFEST_FILE, REPORT_FILES

logger = logging.getLogger(__name__)

GIT_COMMIT_TAG = "mlflow.source.git.commit"
"""Run tag: the commit of the git checkout spendpred's code ran from (absent outside a checkout)."""
GIT_TIMEOUT_S = 3.0

REGISTERED_MODEL_DESCRIPTION = (
    "Purchasing-power regressor of spendpred: predicts each user's completed-order spend over the "
    "next horizon (currency) from a behaviour text and numeric features. Aliases: 'champion' is "
    "scored nightly by spendpred_nightly_scoring; 'challenger' is the latest candidate of "
    "spendpred_weekly_retrain."
)


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
