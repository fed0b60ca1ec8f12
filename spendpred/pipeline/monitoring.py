"""The monitoring steps: realized performance of matured partitions, tonight's drift, and the
nightly task that runs both after ``publish_scores`` (``spendpred.monitoring`` holds the functions).

Monitoring only reads what was published and writes its own tables (``partition_metrics``,
``drift_metrics``); published scores are never touched, and in the nightly DAG a failure of
monitoring is one warning and an ``error`` in the task's result, never a failed night.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spendpred.config import get_settings
from spendpred.snapshot import RunFolder, RunRef, working_copy

logger = logging.getLogger(__name__)


def evaluate_matured(run_date: dt.date, url: str | None = None, draws: int | None = None) -> dict[str, Any]:
    """Evaluate every published partition mature at ``run_date`` (as_of + H <= run_date) that has no
    realized evaluation for this horizon and model version yet; store the metrics in ``partition_metrics``.

    For each, the scored users' actual completed spend in (as_of, as_of + H] is read (nothing
    later), and the published scores and the baselines as of that date for the same users (past
    spend; BG/NBD x Gamma-Gamma fitted on every buyer's purchases up to as_of) are evaluated
    (``monitoring.realized_metrics``, seeded with ``SPENDPRED_SEED``). The metrics are also logged
    to MLflow on the training run of the version that produced the partition
    (:func:`log_realized`; a registry that cannot take them is one warning). An evaluated
    partition is skipped, so a rerun changes nothing; an immature one is never evaluated. Returns
    ``{"run_date", "horizon_days", "evaluated": [{"as_of", "model_version", "users", "model", "past_spend",
    "bgnbd_gamma_gamma"?, "mlflow_run_id"}]}`` with each scorer's normalised Gini, top-10% capture and total ratio.
    """
    from spendpred import monitoring, warehouse

    settings = get_settings()
    horizon = settings.horizon_days
    draws = monitoring.BOOTSTRAP_DRAWS if draws is None else int(draws)
    evaluated: list[dict[str, Any]] = []
    with warehouse.opened_engine(url) as engine:
        for as_of, version, users in monitoring.pending_partitions(engine, run_date, horizon):
            frame = monitoring.read_realized(engine, as_of, horizon)
            frame = frame[frame["model_version"] == version]
            predictions = {monitoring.MODEL_SCORER: frame["predicted_spend"].to_numpy(),
                           monitoring.PAST_SPEND_SCORER: frame["past_spend"].to_numpy()}  # fmt: skip
            btyd = monitoring.btyd_predictions(monitoring.read_completed_orders(engine, as_of), as_of, horizon,
                                               frame["user_id"].astype(str).tolist())  # fmt: skip
            if btyd is not None:
                predictions[monitoring.BTYD_SCORER] = btyd
            table = monitoring.realized_metrics(
                frame["actual_spend"].to_numpy(), predictions,
                predicted_high={monitoring.MODEL_SCORER: (frame["tier"] == "high").to_numpy()},
                draws=draws, seed=settings.seed,
            )  # fmt: skip
            monitoring.store_partition_metrics(engine, as_of, horizon, monitoring.metric_rows(as_of, version, horizon, table))
            brief = {scorer: {key: _rounded(values[key][0]) for key in ("normalised_gini", "top10_capture", "total_ratio")}
                     for scorer, values in table.items()}  # fmt: skip
            logger.info(
                "realized performance of %s (version %s, %d users, H=%d): %s",
                as_of, version, users, horizon, "; ".join(f"{scorer} {values}" for scorer, values in brief.items()),
            )  # fmt: skip
            run_id = log_realized(version, as_of, horizon, table, settings)
            evaluated.append({"as_of": as_of.isoformat(), "model_version": version, "users": users, **brief,
                              "mlflow_run_id": run_id})  # fmt: skip
    if not evaluated:
        logger.info("realized performance: no published partition as of %s or earlier awaits evaluation (H=%d)",
                    monitoring.mature_until(run_date, horizon), horizon)  # fmt: skip
    return {"run_date": run_date.isoformat(), "horizon_days": horizon, "evaluated": evaluated}


def log_realized(
    version: str, as_of: dt.date, horizon_days: int, table: Mapping[str, Mapping[str, tuple[float, float, float]]],
    settings: Any = None,
) -> str | None:
    """Log one partition's realized metrics to MLflow on the training run of model version ``version``.

    Keys ``realized_<scorer>_<metric>`` (and ``_ci_low``/``_ci_high``) at step = as_of's day number
    since 1970-01-01 and timestamp = as_of, so each metric's history is a curve over the matured
    partitions; the version gets the tag ``realized_last_as_of``. Returns the run id, or ``None``
    (one info or warning line, never an exception) when there is no registry yet, the version is
    not registered there or the registry cannot be written.
    """
    from mlflow.entities import Metric

    from spendpred import registry

    settings = settings or get_settings()
    if registry.missing_store(settings) is not None:
        logger.info("realized metrics of %s not logged to MLflow: no registry yet (%s)", as_of, settings.resolved_tracking_uri)
        return None
    step = (as_of - dt.date(1970, 1, 1)).days
    stamp = int(dt.datetime.combine(as_of, dt.time(), dt.UTC).timestamp() * 1000)
    entries = []
    for scorer, values in table.items():
        for metric, (value, low, high) in values.items():
            for suffix, number in (("", value), ("_ci_low", low), ("_ci_high", high)):
                if number is not None and number == number and abs(number) != float("inf"):
                    entries.append(Metric(f"realized_{scorer}_{metric}{suffix}", float(number), stamp, step))
    try:
        client = registry.get_client(settings)
        run_id = client.get_model_version(registry.REGISTERED_MODEL, str(version)).run_id
        for start in range(0, len(entries), 500):  # MLflow's batch limit is 1,000 metrics
            client.log_batch(run_id, metrics=entries[start:start + 500])
        client.set_model_version_tag(registry.REGISTERED_MODEL, str(version), "realized_last_as_of", as_of.isoformat())
        client.set_tag(run_id, f"realized_h{int(horizon_days)}_last_as_of", as_of.isoformat())
    except Exception as exc:  # noqa: BLE001 - the warehouse rows are the record; MLflow is a copy
        logger.warning("realized metrics of %s not logged to MLflow for version %s: %s", as_of, version,
                       " ".join(str(exc).splitlines())[:300])  # fmt: skip
        return None
    logger.info("realized metrics of %s logged to MLflow run %s (version %s, step %d)", as_of, run_id, version, step)
    return str(run_id)


def _rounded(value: float) -> float | None:
    return None if value != value else round(float(value), 4)  # nan -> None (JSON, XCom)


def load_reference(version: str) -> dict[str, Any] | None:
    """Return the drift reference (``reference.json``) of a registered model version, ``None`` when its
    bundle has none (saved before references). Raises ``RegistryUnavailable`` when the registry
    cannot be read, ``ModelError`` for a corrupt reference."""
    import mlflow.artifacts

    from spendpred import monitoring, registry

    settings = get_settings()
    client = registry.get_client(settings)
    root = client.get_model_version_download_uri(registry.REGISTERED_MODEL, str(version)).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="spendpred-reference-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root}/artifacts/{registry.BUNDLE_ARTIFACT}/{monitoring.REFERENCE_FILE}",
                dst_path=tmp, tracking_uri=settings.resolved_tracking_uri,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - MlflowException or OSError: the bundle has no reference
            return None
        _download_users(f"{root}/artifacts/{registry.BUNDLE_ARTIFACT}", Path(local), settings.resolved_tracking_uri)
        return monitoring.read_reference(Path(local))


def _download_users(bundle_uri: str, reference: Path, tracking_uri: str) -> None:
    """Put the training users' hashes (``monitoring.USERS_FILE``) beside a downloaded ``reference.json`` when it names
    them; a bundle without them (saved before population drift) or a failed download leaves the unseen-user share out."""
    import json
    import shutil

    import mlflow.artifacts

    from spendpred import monitoring

    try:
        users = json.loads(reference.read_text(encoding="utf-8")).get("users")
    except (OSError, ValueError, AttributeError):
        return  # read_reference names what is wrong
    if not isinstance(users, dict):
        return
    name = str(users.get("file") or monitoring.USERS_FILE)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{bundle_uri}/{name}", dst_path=str(reference.parent / "users"),
                                                         tracking_uri=tracking_uri))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - MlflowException or OSError: drift goes on without the users
        logger.info("drift: the training users' hashes (%s) cannot be downloaded (%s): unseen-user share skipped", name,
                    " ".join(str(exc).splitlines())[:200])  # fmt: skip
        return
    shutil.move(str(local), str(reference.with_name(name)))


def check_drift(run: RunRef, url: str | None = None, reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compare a scoring run's snapshot and published ``predicted_spend`` with its model's training reference.

    ``run`` is the nightly run's reference (``assign_tiers``' result: its folder holds the
    snapshot and ``tiers.parquet``/``tiers.json``). The reference is the model version's
    ``reference.json`` (``reference`` overrides it); without one (a bundle saved before drift
    references) drift is skipped with one info line. Stores a row per feature in
    ``drift_metrics`` (tonight's rows replaced), logs one warning per alerting feature and
    returns ``{"as_of", "model_version", "skipped"?, "counts", "alert", "warn", "max_psi", "population", "estimated"}``.

    The population rows (``monitoring.population_table``; stored with ``psi`` NULL and the share
    in ``statistic``, summarised under ``population``, not in ``counts``): the share of users whose
    text changed since the previous validated scoring night (``RunFolder.previous``), and, from the
    reference of a champion trained since they exist (an older one: one info line), the share of
    tonight's users the model never saw and of orders in categories never seen in training.

    With the reference's error model (``error_model``: a champion trained since estimated
    performance), tonight's RMSE and MAE are estimated too (``monitoring.estimate_errors``) and
    stored in ``estimated_metrics`` for the settings' horizon; ``estimated`` is
    ``{"mae", "rmse", "users"}``, ``None`` without an error model, or ``{"error": line}`` when the
    estimate fails (the drift rows stand).
    """
    import pandas as pd

    from spendpred import monitoring, warehouse
    from spendpred.files import read_json

    settings = get_settings()
    with working_copy(run) as folder:
        folder.pull("tiers")
        meta = read_json(folder.tiers_json, "tiers result")
        version = str(meta["model_version"])
        if reference is None:
            reference = load_reference(version)
        if reference is None:
            logger.info("drift: version %s has no training reference (saved before drift references): skipped", version)
            return {"as_of": folder.as_of.isoformat(), "model_version": version, "skipped": "no reference"}
        folder.pull("snapshot", "validation")
        folder.require_validated()
        frame = pd.read_parquet(folder.snapshot.parquet)
        predicted = pd.read_parquet(folder.tiers_parquet, columns=["predicted_spend"])["predicted_spend"].to_numpy()
        previous = _previous_texts(folder)
    rows = monitoring.drift_table(reference, frame, predicted, settings.drift_psi_warn, settings.drift_psi_alert)
    population = _population(reference, frame, previous, folder.as_of, version, settings)
    with warehouse.opened_engine(url) as engine:
        monitoring.store_drift(engine, folder.as_of, version, [*rows, *population])
    for row in rows:
        if row["status"] == "alert":
            logger.warning(
                "drift alert on %s for %s: PSI %.3f >= %g (KS %s) against version %s's training data",
                row["feature"], folder.as_of, row["psi"], settings.drift_psi_alert,
                "n/a" if row["statistic"] is None else f"{row['statistic']:.3f}", version,
            )  # fmt: skip
    summary = monitoring.drift_summary(rows)
    logger.info("drift for %s against version %s: %s", folder.as_of, version, summary["counts"])
    estimated = _estimate(reference, frame, predicted, folder.as_of, version, url)
    return {"as_of": folder.as_of.isoformat(), "model_version": version, **summary,
            "population": monitoring.population_summary(population), "estimated": estimated}  # fmt: skip


def population_thresholds(settings: Any = None) -> dict[str, tuple[float, float]]:
    """Return the population rows' ``(warn, alert)`` shares from the settings (the text-changed share has no alert: ``inf``)."""
    from spendpred import monitoring

    settings = settings or get_settings()
    return {
        monitoring.TEXT_CHANGED: (settings.drift_text_changed_warn, float("inf")),
        monitoring.UNSEEN_USERS: (settings.drift_unseen_users_warn, settings.drift_unseen_users_alert),
        monitoring.UNSEEN_CATEGORIES: (settings.drift_unseen_categories_warn, settings.drift_unseen_categories_alert),
    }


def _previous_texts(folder: RunFolder) -> Any:
    """The previous validated scoring night's ``user_id`` and ``text`` (``RunFolder.previous``), ``None`` without one."""
    import pandas as pd

    earlier = folder.previous()
    if earlier is None:
        return None
    if earlier.is_remote:
        earlier.pull("snapshot", required=False)
    path = earlier.snapshot.parquet
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path, columns=["user_id", "text"]).assign(as_of=earlier.as_of.isoformat())
    except (KeyError, ValueError, OSError) as exc:  # a snapshot without texts, or unreadable: the row is left out
        logger.info("drift: the previous night's texts (%s) cannot be read (%s): text-changed share skipped", earlier.as_of, exc)
        return None


def _population(
    reference: Mapping[str, Any], frame: Any, previous: Any, as_of: dt.date, version: str, settings: Any
) -> list[dict[str, Any]]:
    """Tonight's population rows (``monitoring.population_table``), one warning per alerting row and one info
    line for the values (or for what an older reference lacks)."""
    from spendpred import monitoring

    thresholds = population_thresholds(settings)
    rows = monitoring.population_table(reference, frame, previous, thresholds)
    lacking = [key for key in ("user_hashes", "categories") if reference.get(key) is None]
    if lacking:
        logger.info("drift: version %s's reference has no %s (saved before population drift): unseen users/categories skipped",
                    version, " or ".join(lacking))  # fmt: skip
    for row in rows:
        if row["status"] == "alert":
            named = f" ({', '.join(row['categories'])})" if row.get("categories") else ""
            logger.warning(
                "drift alert on %s for %s: %.3f >= %g%s against version %s's training data%s",
                row["feature"], as_of, row["statistic"], thresholds[row["feature"]][1], named, version,
                " (reported only, requests no retrain)" if row["feature"] in monitoring.REPORT_ONLY else "",
            )  # fmt: skip
    if rows:
        logger.info("population drift for %s: %s", as_of, "; ".join(
            f"{r['feature']} {'n/a' if r['statistic'] is None else format(r['statistic'], '.3f')} ({r['status']})" for r in rows))
    return rows


def _estimate(
    reference: Mapping[str, Any], frame: Any, predicted: Any, as_of: dt.date, version: str, url: str | None
) -> dict[str, Any] | None:
    """Estimate and store tonight's RMSE and MAE from the reference's error model (see :func:`check_drift`)."""
    from spendpred import monitoring, warehouse
    from spendpred.errors import SpendpredError

    error_model = reference.get("error_model")
    if not error_model:
        logger.info("estimated performance: version %s has no error model (trained before estimates): skipped", version)
        return None
    horizon = get_settings().horizon_days
    try:
        estimate = monitoring.estimate_errors(error_model, frame, predicted)
    except SpendpredError as exc:
        line = " ".join(str(exc).splitlines())
        logger.warning("estimated performance for %s failed, drift stands: %s", as_of, line)
        return {"error": line}
    with warehouse.opened_engine(url) as engine:
        monitoring.store_estimates(engine, as_of, version, horizon, estimate)
    logger.info(
        "estimated performance of %s (version %s, %d users, H=%d): RMSE %.2f, MAE %.2f (held-out users: RMSE %.2f, MAE %.2f)",
        as_of, version, estimate["users"], horizon, estimate["rmse"], estimate["mae"],
        error_model.get("held_out_rmse", float("nan")), error_model.get("held_out_mae", float("nan")),
    )  # fmt: skip
    return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in estimate.items()}


def decide_retrain(
    as_of: dt.date, model_version: str | None, reasons: list[str], url: str | None = None
) -> dict[str, Any]:
    """Decide whether tonight's alerts request a retrain, at most once per ``SPENDPRED_RETRAIN_COOLDOWN_DAYS``.

    Without ``reasons`` nothing is decided or stored (``{"request": False, "decision": None}``).
    Otherwise the night is ``requested`` unless a request on a night up to ``as_of`` is still in
    its cool-down (then ``suppressed``, one info line); the decision and reasons are stored in
    ``retrain_requests``. A rerun of a night that requested keeps its request and requests
    nothing again, so reruns never storm. Returns ``{"request", "decision", "reasons",
    "cooldown_until", "model_version"}``; the nightly DAG emits the asset event when ``request``.
    """
    from spendpred import monitoring, warehouse

    out: dict[str, Any] = {"request": False, "decision": None, "reasons": reasons, "model_version": model_version,
                           "cooldown_until": None}  # fmt: skip
    if not reasons:
        return out
    days = get_settings().retrain_cooldown_days
    with warehouse.opened_engine(url) as engine:
        last = monitoring.last_request(engine, as_of)
        until = monitoring.cooldown_until(last, days)
        if last == as_of:
            logger.info("retrain already requested by an earlier run of %s: not requested again (%s)", as_of, "; ".join(reasons))
            return {**out, "decision": "requested", "cooldown_until": until.isoformat() if until else None, "rerun": True}
        if until is not None and as_of <= until:
            decision = "suppressed"
            logger.info("retrain not requested for %s: cool-down after the request of %s until %s (SPENDPRED_RETRAIN_COOLDOWN_DAYS=%d); "
                        "alerts: %s", as_of, last, until, days, "; ".join(reasons))  # fmt: skip
        else:
            decision = "requested"
            until = monitoring.cooldown_until(as_of, days)
            logger.warning("retrain requested by the monitoring of %s: %s", as_of, "; ".join(reasons))
        monitoring.store_request(engine, as_of, str(model_version or "unknown"), decision, reasons, until)
    return {**out, "request": decision == "requested", "decision": decision, "cooldown_until": until.isoformat() if until else None}


def monitor_scores(run: RunRef, url: str | None = None) -> dict[str, Any]:
    """The nightly DAG's last task: realized performance of matured partitions (:func:`evaluate_matured`),
    tonight's drift and estimate (:func:`check_drift`), then the retrain decision (:func:`decide_retrain`),
    each in its own guard.

    ``run`` is ``assign_tiers``' result (its ``as_of`` is the run date). A failure of any
    part is logged as one warning and returned under ``errors`` (``{"realized": line}``,
    ``{"drift": line}``, ``{"retrain": line}``): monitoring never fails the night, and published
    scores are not touched. ``retrain`` holds the decision: when its ``request`` is true the DAG
    emits the model-health asset event the weekly retrain is scheduled on.
    """
    from spendpred import monitoring
    from spendpred.failures import describe

    folder = RunFolder.coerce(run)
    result: dict[str, Any] = {"as_of": folder.as_of.isoformat(), "errors": {}}

    def react() -> dict[str, Any]:
        drift = result.get("drift") or {}
        reasons = monitoring.alert_reasons(drift, (result.get("realized") or {}).get("evaluated") or [],
                                           get_settings().monitor_gini_floor)  # fmt: skip
        version = drift.get("model_version") or (run.get("model_version") if isinstance(run, Mapping) else None)
        return decide_retrain(folder.as_of, version, reasons, url)

    for name, step in (("realized", lambda: evaluate_matured(folder.as_of, url)), ("drift", lambda: check_drift(run, url)),
                       ("retrain", react)):  # fmt: skip
        try:
            result[name] = step()
        except Exception as exc:  # noqa: BLE001 - monitoring must not fail or unpublish the night
            line = describe(exc) or f"{type(exc).__name__}: {exc}"
            logger.warning("monitoring (%s) failed for %s, the published scores stand: %s", name, folder.as_of, line)
            result["errors"][name] = " ".join(line.splitlines())
    return result


def monitor(as_of: dt.date | None = None, url: str | None = None) -> dict[str, Any]:
    """``spendpred monitor``: evaluate what matured by ``as_of`` (default: the latest published partition),
    recompute that night's drift (and estimate) when its run folder is staged, and return every stored realized
    metric up to it with that night's drift rows and every estimate beside its realized value
    and the latest retrain decisions (``{"as_of", "horizon_days", "realized", "drift", "estimated", "requests", ...}``)."""
    from spendpred import monitoring, report, warehouse

    settings = get_settings()
    with warehouse.opened_engine(url) as engine:
        latest, _ = report.latest_runs(engine)
    day = as_of or latest
    if day is None:
        return {"as_of": None, "horizon_days": settings.horizon_days, "evaluated": [], "realized": [], "drift": [],
                "note": "nothing published yet: run `spendpred score` first"}  # fmt: skip
    evaluated = evaluate_matured(day, url)
    out: dict[str, Any] = {"as_of": day.isoformat(), "horizon_days": settings.horizon_days, "evaluated": evaluated["evaluated"]}
    run = RunFolder.for_date("score", day, settings)
    try:
        out["drift_summary"] = check_drift(run.ref(), url)
    except Exception as exc:  # noqa: BLE001 - the stored rows are still printed
        from spendpred.failures import describe

        line = describe(exc) or f"{type(exc).__name__}: {exc}"
        out["drift_summary"] = {"skipped": " ".join(line.splitlines())}
    with warehouse.opened_engine(url) as engine:
        out["realized"] = monitoring.read_partition_metrics(engine, day)
        out["drift"] = monitoring.read_drift(engine, day)
        out["estimated"] = monitoring.read_estimates(engine, day)
        out["requests"] = monitoring.read_requests(engine, day)
    return out
