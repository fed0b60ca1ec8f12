"""The weekly retraining steps (DAG ``spendpred_weekly_retrain``): labelled snapshot,
fine-tuning and evaluation, registration, promotion.

Every step after the extract takes the run folder (``RunFolder`` or its XCom reference
``{"kind": "train", "as_of", "root"}``) and finds its inputs there. With staging on object
storage each step works in a working copy (``snapshot.working_copy``): it pulls what it reads
and pushes what it writes, so ``train_model`` may run on a GPU host and the rest elsewhere.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spendpred.config import get_settings
from spendpred.files import read_json, write_json_atomic
from spendpred.params import PromoteMode, TrainParams, given, require_as_of
from spendpred.pipeline.snapshots import extract_run, resolve_horizon, validate_snapshot
from spendpred.snapshot import MANIFEST_FILE, SNAPSHOT_FILE, Manifest, RunFolder, RunRef, working_copy

logger = logging.getLogger(__name__)

CANDIDATE = "bert_finetuned"
"""The candidate's column in ``test_predictions.parquet`` and its key in the evaluation."""


def _train_params(run: TrainParams | dt.date | str, **values: Any) -> TrainParams:
    """The run's checked parameters with its run date: ``run`` as is (checked where the run entered,
    never again), or the run date ``run`` and the plain ``values`` checked here, once (``params.given``).

    Raises ``TypeError`` for a ``TrainParams`` with plain values too, ``ConfigError`` for a bad value or no run date.
    """
    params = given(TrainParams, run, **values) if isinstance(run, TrainParams) else given(TrainParams, None, as_of=run, **values)
    require_as_of(params)
    return params


def extract_training_snapshot(
    run: TrainParams | dt.date, horizon_days: int | None = None, url: str | None = None, freeze: str | None = None
) -> dict[str, Any]:
    """Extract the training snapshot for run date R: features as of R−H, labels in (R−H, R].

    ``run`` is the run's checked ``TrainParams`` (R is its ``as_of``; the ``horizon`` and
    ``freeze`` are read from it), or the run date R with plain ``horizon_days`` and ``freeze``,
    checked once here (see ``_train_params``).

    Returns the run folder's reference (``kind``, ``as_of`` = R−H, ``root``) with ``run_date``,
    ``rows`` and ``horizon_days``. First checks that the encoder folder can be trained from and
    takes ``freeze`` (``network.check_encoder``: ``ModelError``, ``ConfigError``) and that the
    training could be registered (``registry.check_writable``), so an unreachable or unwritable
    MLflow store fails at once (``RegistryUnavailable``, ``StorageError``), before anything is
    extracted or trained.
    """
    from spendpred import registry
    from spendpred.model.network import check_encoder

    params = _train_params(run, horizon=horizon_days, freeze=freeze)
    run_date = require_as_of(params)
    settings = get_settings()
    horizon = resolve_horizon(params.horizon, settings)
    check_encoder(settings.resolved_encoder_dir, params.freeze)
    registry.check_writable(settings)
    folder = RunFolder.for_date("train", run_date - dt.timedelta(days=horizon), settings)
    # stacked windows, each one step earlier (SPENDPRED_TRAIN_WINDOWS), carried by the run folder and its reference
    folder = folder.stacked(settings.train_windows, settings.window_step_days)
    out = {**extract_run(folder, horizon, True, url, settings), "run_date": run_date.isoformat()}
    for earlier in folder.window_folders():  # under train-window/: apart from ordinary runs
        extract_run(earlier, horizon, True, url, settings)
    return out


def _window_frames(run: RunFolder) -> list[Any]:
    """The labelled frames of the run folder's earlier stacked windows (``RunFolder.windows``, each validated)."""
    from spendpred.errors import DataError

    template = run.manifest.text_template_version
    frames = []
    for window in run.window_folders():
        frame, manifest = _labelled_snapshot(window)
        if manifest.text_template_version != template:
            raise DataError(
                f"stacked window {window.snapshot_dir} uses text template {manifest.text_template_version!r} but the "
                f"training snapshot uses {template!r}: re-extract the training snapshots (rerun the retrain)"
            )
        frames.append(frame)
    return frames


def _labelled_snapshot(run: RunFolder) -> tuple[Any, Manifest]:
    """Return ``(pandas frame, manifest)`` of a validated, labelled snapshot (pulled first on object storage)."""
    import pandas as pd

    from spendpred.errors import DataError

    run.pull("snapshot", "validation")
    manifest = run.require_validated()
    frame = pd.read_parquet(run.snapshot.parquet)
    if not manifest.with_labels or "label" not in frame.columns:
        raise DataError(f"snapshot {run.snapshot_dir} has no labels: extract it with --with-labels (training snapshot)")
    return frame, manifest


def train_model(
    run: RunRef,
    params: TrainParams | None = None,
    *,
    epochs: int | None = None,
    max_users: int | None = None,
    freeze: str | None = None,
    loss: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune the regressor on a run's validated training snapshot and evaluate it.

    ``params`` is the run's checked ``TrainParams`` (``epochs``, ``max_users``, ``freeze``,
    ``loss``, ``device`` are read from it); without it the plain ``epochs`` ... ``device`` are
    checked once here (``params.given``; ``TypeError`` when both are given). ``batch_size`` and
    ``progress`` are training options outside the run parameters (``TrainConfig`` checks them).

    Users are split train/val/test by a stable hash of ``user_id``; ``max_users`` keeps a
    stable hash-chosen subset of the training users (``splits.split_frame``); the test users
    are every held-out user of the snapshot. The run folder's earlier stacked windows
    (``RunFolder.windows``, ``SPENDPRED_TRAIN_WINDOWS``) add training and validation rows of the same users'
    splits; a held-out user is never trained on in any window, and the calibration to
    currency is fitted on the latest window's validation users only (an earlier window's
    spend level is further from the night being scored). Besides the fine-tuned model, the
    baselines are fitted on the same training users and scored on the same test users: the
    model before fine-tuning (encoder frozen, head fitted), past spend, and gradient-boosted
    trees. Writes the bundle (with its drift reference, ``reference.json``), the test predictions, the evaluation report and plots and
    ``result.json`` into the run's ``model/`` folder.

    Returns the run's reference with ``best_epoch`` and ``metrics``. Raises
    ``ValidationFailed`` for an unvalidated snapshot, ``DataError`` when a split is empty.
    """
    params = given(TrainParams, params, epochs=epochs, max_users=max_users, freeze=freeze, loss=loss, device=device)
    with working_copy(run) as folder:
        out = _train_model(folder, params, batch_size, progress)
        folder.push("model")  # the bundle, evaluation, test predictions and result.json, published together
    return out


def _train_model(run: RunFolder, params: TrainParams, batch_size: int | None, progress: bool | None) -> dict[str, Any]:
    """:func:`train_model` in a working copy (the run folder carries its stacked windows)."""
    import sys

    import pandas as pd

    from spendpred import baselines, evaluation, explain, monitoring, splits
    from spendpred.model import TrainConfig, train_regressor
    from spendpred.model.scoring import cpu_threads

    settings = get_settings()
    frame, manifest = _labelled_snapshot(run)
    max_users = params.max_users
    parts = splits.split_frame(frame, max_users)
    latest_val = len(parts["val"])  # calibrated on the latest window's validation users: the level nearest to scoring
    for earlier in _window_frames(run):  # stacked windows: more training and validation rows, same held-out users
        more = splits.split_frame(earlier, max_users)
        for name in ("train", "val"):
            parts[name] = pd.concat([parts[name], more[name]], ignore_index=True)
    splits.check_split_sizes(parts)  # a training set too small to mean anything is refused here
    config_kwargs: dict[str, Any] = {
        "seed": settings.seed, "device": params.device, "loss": settings.loss, "horizon_days": manifest.horizon_days,
    }  # fmt: skip
    for key, value in (("epochs", params.epochs), ("freeze", params.freeze), ("loss", params.loss), ("batch_size", batch_size)):
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
        result = train_regressor(parts["train"], parts["val"], features, config, encoder_dir, manifest.text_template_version,
                                 calibrate_rows=latest_val or None)

    test = parts["test"]
    candidate = result.bundle.predict(test)
    # the stage-1 model kept (encoder frozen, or fine-tuning lost and its weights restored): the
    # candidate is the "before fine-tuning" model, so the held-out users are encoded once
    predictions = {
        CANDIDATE: candidate,
        "before_finetuning": candidate.copy() if result.stages["kept"] == "head" else result.frozen.predict(test),
        "past_spend": baselines.past_spend_baseline(test),
        "gbt_numeric": baselines.gbt_baseline(parts["train"], test, features, seed=settings.seed),
    }
    run.empty_model_dir()
    result.bundle.save(run.bundle_dir)
    # the drift reference (spendpred.monitoring) travels with the bundle: features of the whole
    # training snapshot, predictions of the held-out users, and the error model fitted on their
    # errors (estimated performance before labels: direct loss estimation); from the snapshot's
    # user_id and text also its users' id hashes (reference_users.npy) and order categories
    monitoring.write_reference(run.bundle_dir / monitoring.REFERENCE_FILE,
                               monitoring.build_reference(frame, features, candidate, seed=settings.seed,
                                                          held_out=test, labels=test["label"].to_numpy()))  # fmt: skip
    report = evaluation.write_evaluation(
        test["label"].to_numpy(),
        predictions,
        run.evaluation_dir,
        context={"as_of": manifest.as_of.isoformat(), "horizon_days": manifest.horizon_days, "loss": config.loss,
                 "freeze": config.freeze, "epochs_run": len(result.history), "best_epoch": result.best_epoch},
    )
    explain.write_global_importance(result.bundle, test, run.evaluation_dir, seed=settings.seed)  # logged with evaluation/
    pd.DataFrame({"user_id": test["user_id"], "label": test["label"], **predictions}).to_parquet(run.test_predictions, index=False)
    summary = {
        "as_of": manifest.as_of.isoformat(),
        "horizon_days": manifest.horizon_days,
        "params": {**config.to_dict(), "max_users": max_users, "train_users": len(parts["train"]),
                   "val_users": len(parts["val"]), "test_users": len(test), "encoder_dir": str(encoder_dir)},
        "history": result.history,
        "best_epoch": result.best_epoch,
        "metrics": {**report.metrics[CANDIDATE], **_finetune_lift(report.metrics)},
        "baselines": {k: v for k, v in report.metrics.items() if k != CANDIDATE},
        "stages": result.stages,
    }
    write_json_atomic(run.result_json, summary)
    logger.info("test metrics: %s", {k: round(v, 4) for k, v in summary["metrics"].items() if v is not None})
    return {**run.ref(), "best_epoch": summary["best_epoch"], "metrics": summary["metrics"]}


def _finetune_lift(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """The source article's before/after comparison: fine-tuned minus frozen-encoder, on the test users."""
    after, before = metrics[CANDIDATE], metrics["before_finetuning"]
    return {
        f"finetune_lift_{key}": float(after[key]) - float(before[key])
        for key in ("normalised_gini", "top10_capture", "spearman")
        if after.get(key) is not None and before.get(key) is not None
    }


def evaluate_and_register(run: RunRef, trigger: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Log a run's training to MLflow and register the model as the new ``challenger``.

    ``trigger`` says why the retrain ran (``monitoring.retrain_trigger``: tags ``trigger`` =
    schedule, asset or manual, and ``trigger_reason``), set on the MLflow run; default: manual
    (the ``spendpred train`` command). Returns the run's reference with ``run_id``, ``version``,
    ``metrics`` and ``trigger``. On object storage
    the model folder and the snapshot's manifest and reports are pulled into a working copy
    first (MLflow logs local files), and ``registered.json`` is pushed after.
    """
    with working_copy(run) as folder:
        folder.pull("model")
        folder.pull("snapshot", only=(MANIFEST_FILE,))
        folder.pull("validation", required=False)
        out = _evaluate_and_register(folder)
        folder.push("registered")
    return {**out, "trigger": _tag_trigger(out["run_id"], trigger)}


def _tag_trigger(run_id: str, trigger: Mapping[str, str] | None) -> dict[str, str]:
    """Set the MLflow run's ``trigger`` and ``trigger_reason`` tags (why the retrain ran); return them."""
    from spendpred import monitoring, registry

    tags = dict(trigger) if trigger else monitoring.retrain_trigger(None)
    client = registry.get_client()
    for key in ("trigger", "trigger_reason"):
        client.set_tag(run_id, key, str(tags.get(key, ""))[:5000])
    logger.info("retrain run %s triggered by %s: %s", run_id, tags.get("trigger"), tags.get("trigger_reason"))
    return tags


def _evaluate_and_register(run: RunFolder) -> dict[str, Any]:
    """:func:`evaluate_and_register` on a run folder whose files are local."""
    from spendpred import registry

    summary = read_json(run.result_json, "training result")
    run_id, version = registry.log_training_run(
        bundle_dir=run.bundle_dir,
        params=summary["params"],
        history=summary["history"],
        test_metrics=summary["metrics"],
        baseline_metrics=summary["baselines"],
        snapshot_dir=run.snapshot_dir,
        evaluation_dir=run.evaluation_dir,
        run_name=registry.training_run_name(run.as_of.isoformat(), summary["params"]),  # retrain <as_of> loss=.. freeze=..
    )
    write_json_atomic(run.registered_json, {"run_id": run_id, "version": version})
    return {**run.ref(), "run_id": run_id, "version": str(version), "metrics": summary["metrics"]}


def _champion_on_same_users(
    run: RunFolder, version: str, held_out: Any, url: str | None = None
) -> tuple[dict[str, float], float] | None:
    """The champion's metrics on the run's held-out users and the candidate's paired bootstrap win share.

    ``held_out`` is the run's ``test_predictions`` frame. ``None`` without a champion or when
    ``version`` is the champion.
    """
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
    frame, manifest = _labelled_snapshot(run)
    template = champion.meta.get("text_template_version")
    if template and template != manifest.text_template_version:
        frame = _frame_in_template(run, manifest, template, url)
    metrics, predicted = promotion.rescore_champion(champion, frame, held_out["user_id"])
    share = promotion.paired_win_share(held_out["label"], held_out[CANDIDATE], predicted)
    return metrics, share


def _frame_in_template(run: RunFolder, manifest: Manifest, template: str, url: str | None = None) -> Any:
    """The run's labelled snapshot rendered again with another text template (the champion's), as a frame.

    Extracted as of the same date with the same horizon into a temporary folder (removed
    afterwards), so a champion trained on an older template is judged on the texts it
    understands, on the same users and labels.
    """
    import tempfile

    import pandas as pd

    from spendpred.config import get_settings
    from spendpred.pipeline.snapshots import _extract_into

    logger.info("re-rendering the held-out users' texts with template %s for the champion", template)
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="spendpred-champion-", dir=run.local_root) as tmp:
        out = Path(tmp) / "snapshot"
        _extract_into(out, run.as_of, manifest.horizon_days, True, url, settings, template)
        return pd.read_parquet(out / SNAPSHOT_FILE)


def _baselines_ahead(held_out: Any) -> dict[str, dict[str, float]]:
    """Per baseline the share of paired bootstrap draws of the held-out users in which it ranks ahead."""
    from spendpred import promotion

    peers = {name: held_out[name] for name in promotion.BASELINES_TO_BEAT if name in held_out.columns}
    return promotion.baseline_ahead_shares(held_out["label"], held_out[CANDIDATE], peers)


def promote_model(
    version: str | int, mode: PromoteMode = "auto", run: RunRef | None = None, url: str | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Apply the promotion gate (``spendpred.promotion``) to a registered version.

    With ``run`` (the training run folder) the gate sees the candidate's metrics and the
    baselines' on the held-out users fixed by user hash; in ``auto`` mode the champion, if
    any, is re-scored on the same users and compared with a paired bootstrap. ``mode`` is
    ``auto``, ``never`` or ``force`` (a run's ``TrainParams.promote_mode``; the gate refuses any
    other, ``promotion.decide``). A candidate that is not promoted stays ``challenger``.
    ``actor`` is who asked (the Airflow user who triggered the run, the CLI's ``--actor``),
    recorded on a forced promotion; default the OS user.
    Returns ``{"promoted", "reason", "champion_version", "version", "previous_champion", "mode"}``.
    """
    from spendpred import registry

    version = str(version)
    candidate_metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] | None = None
    gate_inputs: dict[str, Any] = {}
    if run is not None:
        import pandas as pd

        from spendpred.snapshot import RESULT_JSON, TEST_PREDICTIONS

        with working_copy(run) as folder:
            folder.pull("model", only=(RESULT_JSON, TEST_PREDICTIONS))
            result = read_json(folder.result_json, "training result")
            held_out = pd.read_parquet(folder.test_predictions)  # read once: baselines and champion use the same users
            candidate_metrics = result["metrics"]
            gate_inputs = {"baselines": result.get("baselines"), "held_out_users": result["params"].get("test_users"),
                           "baselines_ahead": _baselines_ahead(held_out)}
            if result.get("horizon_days") is not None:  # the nightly refuses a champion of another horizon
                gate_inputs["horizons"] = (int(result["horizon_days"]), get_settings().horizon_days)
            if mode == "auto":  # never and force decide without comparing
                compared = _champion_on_same_users(folder, version, held_out, url)  # pulls the snapshot
                if compared is not None:
                    champion_metrics, gate_inputs["win_share"] = compared
    decision = registry.promote(
        registry.get_client(), version, candidate_metrics, champion_metrics, mode=mode, actor=actor, **gate_inputs
    )
    info = registry.champion_info()
    out = {**decision.as_dict(), "version": version, "champion_version": info["version"] if info else None}
    logger.info("promotion of version %s: %s", version, out)
    return out


def train(
    run: TrainParams | dt.date,
    horizon_days: int | None = None,
    epochs: int | None = None,
    max_users: int | None = None,
    freeze: str | None = None,
    loss: str | None = None,
    promote: str | None = None,
    url: str | None = None,
    device: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """All retraining steps in order (the ``train`` command; the weekly DAG runs them as tasks).

    ``run`` is the run's checked ``TrainParams`` (the CLI's), or the run date with the plain
    values (``horizon_days`` ... ``device``), checked here once into one (``TypeError`` for
    both). Every step gets that object and checks nothing again. ``actor`` is recorded on a
    forced promotion (``promote_model``).

    Returns the registration (run reference, ``run_id``, ``version``, ``metrics``) with
    ``train_dir`` (the run's ``model/`` folder) and ``promotion`` (the decision).
    """
    params = _train_params(
        run, horizon=horizon_days, epochs=epochs, max_users=max_users, freeze=freeze, loss=loss, promote=promote,
        device=device,
    )  # fmt: skip
    from spendpred.pipeline.snapshots import preflight

    preflight("train", url)  # settings, warehouse, staging; the registry is checked by the extract step
    snapshot = extract_training_snapshot(params, url=url)
    validate_snapshot(snapshot)
    trained = train_model(snapshot, params)
    registered = evaluate_and_register(trained)
    decision = promote_model(registered["version"], params.promote_mode, trained, url, actor)
    return {**registered, "train_dir": RunFolder.from_ref(trained).location("model"), "promotion": decision}
