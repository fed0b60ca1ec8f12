"""The weekly retraining steps (DAG ``spendpred_weekly_retrain``): labelled snapshot,
fine-tuning and evaluation, registration, promotion.

Every step after the extract takes the run folder (``RunFolder`` or its XCom reference
``{"kind": "train", "as_of", "root"}``) and finds its inputs there.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from spendpred.config import get_settings
from spendpred.files import read_json, write_json_atomic
from spendpred.params import check_train
from spendpred.pipeline.snapshots import extract_run, resolve_horizon, validate_snapshot
from spendpred.snapshot import Manifest, RunFolder, RunRef

logger = logging.getLogger(__name__)


def extract_training_snapshot(run_date: dt.date, horizon_days: int | None = None, url: str | None = None) -> dict[str, Any]:
    """Extract the training snapshot for run date R: features as of R−H, labels in (R−H, R].

    Returns the run folder's reference (``kind``, ``as_of`` = R−H, ``root``) with ``run_date``,
    ``rows`` and ``horizon_days``.
    """
    settings = get_settings()
    horizon = resolve_horizon(horizon_days, settings)
    run = RunFolder.for_date("train", run_date - dt.timedelta(days=horizon), settings)
    return {**extract_run(run, horizon, True, url, settings), "run_date": run_date.isoformat()}


def _labelled_snapshot(run: RunFolder) -> tuple[Any, Manifest]:
    """Return ``(pandas frame, manifest)`` of a validated, labelled snapshot."""
    import pandas as pd

    from spendpred.errors import DataError

    manifest = run.require_validated()
    frame = pd.read_parquet(run.snapshot.parquet)
    if not manifest.with_labels or "label" not in frame.columns:
        raise DataError(f"snapshot {run.snapshot_dir} has no labels: extract it with --with-labels (training snapshot)")
    return frame, manifest


def train_model(
    run: RunRef,
    epochs: int | None = None,
    max_users: int | None = None,
    freeze: str | None = None,
    loss: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune the regressor on a run's validated training snapshot and evaluate it.

    Users are split train/val/test by a stable hash of ``user_id``; ``max_users`` keeps a
    stable hash-chosen subset (``splits.split_frame``). Besides the fine-tuned model, the
    baselines are fitted on the same training users and scored on the same test users: the
    model before fine-tuning (encoder frozen, head fitted), past spend, and gradient-boosted
    trees. Writes the bundle, the test predictions, the evaluation report and plots and
    ``result.json`` into the run's ``model/`` folder.

    Returns the run's reference with ``best_epoch`` and ``metrics``. Raises
    ``ValidationFailed`` for an unvalidated snapshot, ``DataError`` when a split is empty.
    """
    import sys

    import pandas as pd

    from spendpred import baselines, evaluation, splits
    from spendpred.model import TrainConfig, train_regressor
    from spendpred.model.scoring import cpu_threads

    run = RunFolder.coerce(run)
    check_train(epochs=epochs, max_users=max_users, freeze=freeze, loss=loss, device=device)
    settings = get_settings()
    frame, manifest = _labelled_snapshot(run)
    parts = splits.split_frame(frame, max_users)
    config_kwargs: dict[str, Any] = {
        "seed": settings.seed, "device": device, "loss": settings.loss, "horizon_days": manifest.horizon_days,
    }  # fmt: skip
    for key, value in (("epochs", epochs), ("freeze", freeze), ("loss", loss), ("batch_size", batch_size)):
        if value is not None:
            config_kwargs[key] = value
    config_kwargs["progress"] = sys.stderr.isatty() if progress is None else progress
    config = TrainConfig(**config_kwargs)
    encoder_dir = settings.resolved_encoder_dir
    features = list(manifest.feature_columns)
    logger.info(
        "training on snapshot as of %s: %d train / %d val / %d test users, encoder %s",
        manifest.as_of, len(parts["train"]), len(parts["val"]), len(parts["test"]), encoder_dir,
    )
    with cpu_threads(settings.resolved_torch_threads):  # threads x concurrent tasks within the cores
        # staged: head on the frozen encoder, then fine-tuning; result.frozen is the stage-1 model
        result = train_regressor(parts["train"], parts["val"], features, config, encoder_dir, manifest.text_template_version)
    before = result.frozen or result.bundle  # all-but-head: the model itself is the "before fine-tuning" one

    test = parts["test"]
    predictions = {
        "bert_finetuned": result.bundle.predict(test),
        "before_finetuning": before.predict(test),
        "past_spend": baselines.past_spend_baseline(test),
        "gbt_numeric": baselines.gbt_baseline(parts["train"], test, features, seed=settings.seed),
    }
    run.empty_model_dir()
    result.bundle.save(run.bundle_dir)
    report = evaluation.write_evaluation(
        test["label"].to_numpy(),
        predictions,
        run.evaluation_dir,
        context={"as_of": manifest.as_of.isoformat(), "horizon_days": manifest.horizon_days, "loss": config.loss,
                 "freeze": config.freeze, "epochs_run": len(result.history), "best_epoch": result.best_epoch},
    )
    pd.DataFrame({"user_id": test["user_id"], "label": test["label"], **predictions}).to_parquet(run.test_predictions, index=False)
    summary = {
        "as_of": manifest.as_of.isoformat(),
        "horizon_days": manifest.horizon_days,
        "params": {**config.to_dict(), "max_users": max_users, "train_users": len(parts["train"]),
                   "val_users": len(parts["val"]), "test_users": len(test), "encoder_dir": str(encoder_dir)},
        "history": result.history,
        "best_epoch": result.best_epoch,
        "metrics": {**report.metrics["bert_finetuned"], **_finetune_lift(report.metrics)},
        "baselines": {k: v for k, v in report.metrics.items() if k != "bert_finetuned"},
        "stages": result.stages,
    }
    write_json_atomic(run.result_json, summary)
    logger.info("test metrics: %s", {k: round(v, 4) for k, v in summary["metrics"].items() if v is not None})
    return {**run.ref(), "best_epoch": summary["best_epoch"], "metrics": summary["metrics"]}


def _finetune_lift(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """The source article's before/after comparison: fine-tuned minus frozen-encoder, on the test users."""
    after, before = metrics["bert_finetuned"], metrics["before_finetuning"]
    return {
        f"finetune_lift_{key}": float(after[key]) - float(before[key])
        for key in ("normalised_gini", "top10_capture", "spearman")
        if after.get(key) is not None and before.get(key) is not None
    }


def evaluate_and_register(run: RunRef) -> dict[str, Any]:
    """Log a run's training to MLflow and register the model as the new ``challenger``.

    Returns the run's reference with ``run_id``, ``version`` and ``metrics``.
    """
    from spendpred import registry

    run = RunFolder.coerce(run)
    summary = read_json(run.result_json, "training result")
    run_id, version = registry.log_training_run(
        bundle_dir=run.bundle_dir,
        params=summary["params"],
        history=summary["history"],
        test_metrics=summary["metrics"],
        baseline_metrics=summary["baselines"],
        snapshot_dir=run.snapshot_dir,
        evaluation_dir=run.evaluation_dir,
        run_name=f"train-{run.as_of.isoformat()}",
    )
    write_json_atomic(run.registered_json, {"run_id": run_id, "version": version})
    return {**run.ref(), "run_id": run_id, "version": str(version), "metrics": summary["metrics"]}


def _champion_on_same_users(run: RunFolder, version: str) -> dict[str, float] | None:
    """The champion's metrics on the run's test users; ``None`` without a champion or when ``version`` is it."""
    import pandas as pd

    from spendpred import promotion, registry
    from spendpred.errors import ModelError

    try:
        champion, champion_version = registry.load_model(registry.CHAMPION)
    except ModelError as exc:
        if str(exc) != registry.NO_CHAMPION_MESSAGE:
            raise
        return None
    if str(champion_version.version) == version:
        return None
    frame, _ = _labelled_snapshot(run)
    test_ids = pd.read_parquet(run.test_predictions, columns=["user_id"])["user_id"]
    return promotion.rescore_champion(champion, frame, test_ids)


def promote_model(version: str | int, mode: str = "auto", run: RunRef | None = None) -> dict[str, Any]:
    """Apply the promotion gate (``spendpred.promotion``) to a registered version.

    With ``run`` (the training run folder) in ``auto`` mode the champion, if any, is re-scored
    on the same held-out test users as the candidate, and the candidate becomes champion only
    when it beats it on normalised Gini without losing more than the tolerance on RMSE.
    ``mode`` is ``auto``, ``never`` or ``force``. Returns ``{"promoted", "reason",
    "champion_version", "version", "previous_champion", "mode"}``.
    """
    from spendpred import promotion, registry

    promotion.check_mode(mode)
    version = str(version)
    candidate_metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] | None = None
    if run is not None:
        folder = RunFolder.coerce(run)
        candidate_metrics = read_json(folder.result_json, "training result")["metrics"]
        if mode == "auto":  # never and force decide without comparing
            champion_metrics = _champion_on_same_users(folder, version)
    decision = registry.promote(registry.get_client(), version, candidate_metrics, champion_metrics, mode=mode)
    info = registry.champion_info()
    out = {**decision.as_dict(), "version": version, "champion_version": info["version"] if info else None}
    logger.info("promotion of version %s: %s", version, out)
    return out


def train(
    run_date: dt.date,
    horizon_days: int | None = None,
    epochs: int | None = None,
    max_users: int | None = None,
    freeze: str | None = None,
    loss: str | None = None,
    promote: str = "auto",
    url: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """All retraining steps in order (the ``train`` command; the weekly DAG runs them as tasks).

    Returns the registration (run reference, ``run_id``, ``version``, ``metrics``) with
    ``train_dir`` (the run's ``model/`` folder) and ``promotion`` (the decision).
    """
    check_train(
        as_of=run_date, horizon=horizon_days, epochs=epochs, max_users=max_users, freeze=freeze, loss=loss,
        promote=promote, device=device,
    )  # fmt: skip
    snapshot = extract_training_snapshot(run_date, horizon_days, url)
    validate_snapshot(snapshot)
    trained = train_model(snapshot, epochs=epochs, max_users=max_users, freeze=freeze, loss=loss, device=device)
    registered = evaluate_and_register(trained)
    decision = promote_model(registered["version"], promote, trained)
    return {**registered, "train_dir": str(RunFolder.from_ref(trained).model_dir), "promotion": decision}
