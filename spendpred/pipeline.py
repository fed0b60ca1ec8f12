"""The pipeline steps that both front ends call: the Airflow DAGs and the ``spendpred`` CLI.

Each step takes plain values (dates, paths, names), returns small JSON-able metadata (paths,
counts, versions) fit for XCom, and does its heavy imports inside the function, so importing
this module at DAG parse time is cheap.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from spendpred.config import Settings, get_settings
from spendpred.errors import ConfigError

logger = logging.getLogger(__name__)


def parse_date(value: str | dt.date, name: str = "as_of") -> dt.date:
    """Return ``value`` as a date; raises ``ConfigError`` naming the parameter when malformed."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a date: use YYYY-MM-DD, e.g. 2024-06-30") from exc


def _engine(url: str | None, settings: Settings | None = None):  # noqa: ANN202 - sqlalchemy Engine
    from spendpred import warehouse

    return warehouse.get_engine(url, settings)


def init_warehouse(url: str | None = None) -> dict[str, Any]:
    """Create the contract's source relations, output tables and views (idempotent).

    Returns ``{"url": ..., "applied": [sql files]}`` with the password hidden.
    """
    from spendpred import warehouse

    engine = _engine(url)
    try:
        applied = warehouse.init_db(engine)
        return {"url": engine.url.render_as_string(hide_password=True), "applied": applied}
    finally:
        engine.dispose()


def grant_readonly(role: str, url: str | None = None) -> dict[str, Any]:
    """Give an existing PostgreSQL role SELECT on the downstream views and nothing else."""
    from spendpred import publish

    engine = _engine(url)
    try:
        publish.grant_readonly(engine, role)
    finally:
        engine.dispose()
    return {"role": role, "granted": ["spendpred.user_spend_tier_current", "spendpred.user_spend_tier_changes"]}


def seed(users: int, days: int, end_date: str | dt.date, seed: int | None = None, url: str | None = None) -> dict[str, int]:
    """Fill the warehouse with a synthetic population; returns row counts per table."""
    from spendpred import synth

    settings = get_settings()
    engine = _engine(url, settings)
    try:
        return synth.seed_warehouse(
            engine,
            users=users,
            days=days,
            end_date=parse_date(end_date, "end_date"),
            seed=settings.seed if seed is None else seed,
        )
    finally:
        engine.dispose()


def import_cdnow(path: str | Path, url: str | None = None) -> dict[str, int]:
    """Load a CDNOW master file into the source relations; returns row counts."""
    from spendpred.datasets import cdnow

    engine = _engine(url)
    try:
        return cdnow.import_cdnow(engine, Path(path))  # creates the schema itself when missing
    finally:
        engine.dispose()


def warehouse_summary(url: str | None = None) -> dict[str, Any]:
    """Return what the warehouse holds: row counts and the time range of orders and events."""
    import sqlalchemy as sa

    from spendpred import warehouse

    engine = _engine(url)
    try:
        counts = warehouse.table_counts(engine)
        with engine.connect() as conn:
            orders = conn.execute(sa.text(warehouse.load_sql("report/warehouse_summary", engine.dialect.name))).one()
        return {
            "url": engine.url.render_as_string(hide_password=True),
            "counts": counts,
            "first_order": str(orders[0]) if orders[0] is not None else None,
            "last_order": str(orders[1]) if orders[1] is not None else None,
            "buyers": int(orders[2] or 0),
            "completed_spend": float(orders[3] or 0.0),
        }
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- staging layout


def staging_root(settings: Settings | None = None) -> Path:
    """Return the staging folder (snapshots, trained bundles, scored shards)."""
    return Path((settings or get_settings()).resolved_staging_dir)


def _run_dir(kind: str, as_of: dt.date, settings: Settings | None = None) -> Path:
    return staging_root(settings) / kind / as_of.isoformat()


def _previous_snapshot(kind: str, as_of: dt.date, settings: Settings | None = None) -> Path | None:
    """The newest validated snapshot of ``kind`` strictly before ``as_of``, if any."""
    root = staging_root(settings) / kind
    if not root.is_dir():
        return None
    earlier = sorted(p for p in root.iterdir() if p.is_dir() and p.name < as_of.isoformat())
    for run in reversed(earlier):
        report = run / "snapshot" / "validation.json"
        if (run / "snapshot" / "manifest.json").is_file() and report.is_file():
            if _read_json(report, "validation result").get("success"):
                return run / "snapshot"
    return None


def _horizon(horizon_days: int | None, settings: Settings) -> int:
    value = settings.horizon_days if horizon_days is None else int(horizon_days)
    if not 1 <= value <= 3650:
        raise ConfigError(f"horizon_days={value} is out of range: use 1..3650 days")
    return value


# --------------------------------------------------------------------------- snapshots


def _extract_into(
    out: Path, as_of: dt.date, horizon: int, with_labels: bool, url: str | None, settings: Settings
) -> dict[str, Any]:
    """Extract the snapshot as of ``as_of`` into ``out``; return its path and counts."""
    from spendpred import behaviour

    engine = _engine(url, settings)
    try:
        manifest = behaviour.extract_snapshot(
            engine, as_of, out, horizon_days=horizon, with_labels=with_labels, chunk_rows=settings.chunk_rows
        )
    finally:
        engine.dispose()
    logger.info("snapshot as of %s: %d users -> %s", as_of, manifest.row_count, out)
    return {"snapshot_dir": str(out), "as_of": as_of.isoformat(), "rows": manifest.row_count, "horizon_days": horizon}


def _extract(kind: str, as_of: dt.date, horizon: int, with_labels: bool, url: str | None, settings: Settings) -> dict[str, Any]:
    return _extract_into(_run_dir(kind, as_of, settings) / "snapshot", as_of, horizon, with_labels, url, settings)


def extract_snapshot(
    as_of: str | dt.date, out_dir: str | Path, with_labels: bool = False, horizon_days: int | None = None, url: str | None = None
) -> dict[str, Any]:
    """Extract a behaviour snapshot as of a date into ``out_dir`` (the ``extract`` command)."""
    settings = get_settings()
    return _extract_into(Path(out_dir), parse_date(as_of), _horizon(horizon_days, settings), with_labels, url, settings)


def extract_training_snapshot(
    run_date: str | dt.date, horizon_days: int | None = None, url: str | None = None
) -> dict[str, Any]:
    """Extract the training snapshot for run date R: features as of R−H, labels in (R−H, R].

    Returns ``{"snapshot_dir", "as_of", "run_date", "rows", "horizon_days"}``.
    """
    settings = get_settings()
    run_day = parse_date(run_date, "run_date")
    horizon = _horizon(horizon_days, settings)
    as_of = run_day - dt.timedelta(days=horizon)
    result = _extract("train", as_of, horizon, True, url, settings)
    return {**result, "run_date": run_day.isoformat()}


def extract_scoring_snapshot(run_date: str | dt.date, url: str | None = None) -> dict[str, Any]:
    """Extract the scoring snapshot: features as of the run date. Returns paths and counts."""
    settings = get_settings()
    return _extract("score", parse_date(run_date, "run_date"), settings.horizon_days, False, url, settings)


def validate_snapshot(snapshot_dir: str | Path, previous_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate a snapshot with Great Expectations (raises ``ValidationFailed`` on any failure).

    Without ``previous_dir`` the newest earlier snapshot of the same kind in staging is used
    for the row-count plausibility check. Returns ``{"success", "report", "rows"}``.
    """
    from spendpred import behaviour, validation

    snapshot = Path(snapshot_dir)
    if previous_dir is None and snapshot.name == "snapshot" and snapshot.parent.parent.parent == staging_root():
        manifest = behaviour.Manifest.read(snapshot)
        previous = _previous_snapshot(snapshot.parent.parent.name, parse_date(manifest.as_of), None)
    else:
        previous = Path(previous_dir) if previous_dir is not None else None
    result = validation.validate_snapshot(snapshot, previous_dir=previous)  # logs the verdict
    return {"success": result.success, "report": str(result.report_md), "rows": result.row_count}


def _read_snapshot(snapshot_dir: str | Path) -> tuple[Any, Any]:
    """Return ``(pandas frame, manifest)``; refuses a snapshot that has not passed validation."""
    import pandas as pd

    from spendpred import behaviour

    snapshot = Path(snapshot_dir)
    manifest = behaviour.Manifest.read(snapshot)
    _read_validation_status(snapshot)
    return pd.read_parquet(snapshot / behaviour.SNAPSHOT_FILE), manifest


# --------------------------------------------------------------------------- training


def _write_json(path: Path, data: Any) -> Path:
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _read_json(path: Path, what: str) -> Any:
    import json

    if not path.is_file():
        raise ConfigError(f"{what} not found at {path}: run the step that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def train_model(
    snapshot_dir: str | Path,
    epochs: int | None = None,
    max_users: int | None = None,
    freeze: str | None = None,
    loss: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune the regressor on a validated training snapshot and evaluate it.

    Users are split train/val/test by a stable hash of ``user_id``; ``max_users`` keeps a
    stable hash-chosen subset. Besides the fine-tuned model, the baselines are fitted on the
    same training users and scored on the same test users: the model before fine-tuning
    (encoder frozen, head fitted), past spend, and gradient-boosted trees. Writes the bundle,
    the test predictions, the evaluation report and plots under ``<staging>/train/<run>/model``.

    Returns ``{"train_dir", "metrics", "baselines", "best_epoch", ...}``. Raises
    ``ValidationFailed`` for an unvalidated snapshot, ``DataError`` when a split is empty.
    """
    import sys

    import numpy as np

    from spendpred import baselines, evaluation, splits
    from spendpred.errors import DataError
    from spendpred.model import TrainConfig, fit_head_only, train_regressor
    from spendpred.model.scoring import cpu_threads

    settings = get_settings()
    frame, manifest = _read_snapshot(snapshot_dir)
    if not manifest.with_labels or "label" not in frame.columns:
        raise DataError(f"snapshot {snapshot_dir} has no labels: extract it with --with-labels (training snapshot)")
    if max_users is not None:
        if int(max_users) < 10:
            raise ConfigError(f"max_users={max_users} is too small: use at least 10 (or leave it empty for all users)")
        order = np.argsort(splits.hash_buckets(frame["user_id"], buckets=2**31 - 1, salt="subset:"), kind="stable")
        frame = frame.iloc[np.sort(order[: int(max_users)])].reset_index(drop=True)
    frame["split"] = splits.assign_splits(frame["user_id"])
    parts = {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    for name, part in parts.items():
        if len(part) == 0:
            raise DataError(
                f"the {name} split is empty ({len(frame)} users in the snapshot): train on more users"
            )
    config_kwargs: dict[str, Any] = {"seed": settings.seed, "device": device, "loss": settings.loss}
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
        result = train_regressor(parts["train"], parts["val"], features, config, encoder_dir, manifest.text_template_version)
        if config.freeze == "all-but-head":  # the model itself is the "before fine-tuning" one: don't encode twice
            before = result
        else:
            before = fit_head_only(parts["train"], parts["val"], features, config, encoder_dir, manifest.text_template_version)

    test = parts["test"]
    predictions = {
        "bert_finetuned": result.bundle.predict(test),
        "before_finetuning": before.bundle.predict(test),
        "past_spend": baselines.past_spend_baseline(test),
        "gbt_numeric": baselines.gbt_baseline(parts["train"], test, features, seed=settings.seed),
    }
    run_dir = Path(snapshot_dir).parent / "model"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    bundle_dir = result.bundle.save(run_dir / "bundle")
    report = evaluation.write_evaluation(
        test["label"].to_numpy(),
        predictions,
        run_dir / "evaluation",
        context={"as_of": manifest.as_of, "horizon_days": manifest.horizon_days, "loss": config.loss,
                 "freeze": config.freeze, "epochs_run": len(result.history), "best_epoch": result.best_epoch},
    )
    import pandas as pd

    pd.DataFrame({"user_id": test["user_id"], "label": test["label"], **predictions}).to_parquet(
        run_dir / "test_predictions.parquet", index=False
    )
    summary = {
        "train_dir": str(run_dir),
        "snapshot_dir": str(snapshot_dir),
        "bundle_dir": str(bundle_dir),
        "evaluation_dir": str(report.out_dir),
        "as_of": manifest.as_of,
        "horizon_days": manifest.horizon_days,
        "params": {**config.to_dict(), "max_users": max_users, "train_users": len(parts["train"]),
                   "val_users": len(parts["val"]), "test_users": len(test), "encoder_dir": str(encoder_dir)},
        "history": result.history,
        "best_epoch": result.best_epoch,
        "metrics": report.metrics["bert_finetuned"],
        "baselines": {k: v for k, v in report.metrics.items() if k != "bert_finetuned"},
    }
    _write_json(run_dir / "result.json", summary)
    logger.info("test metrics: %s", {k: round(v, 4) for k, v in summary["metrics"].items() if v is not None})
    return {k: summary[k] for k in ("train_dir", "as_of", "best_epoch", "metrics")}


def evaluate_and_register(train_dir: str | Path) -> dict[str, Any]:
    """Log the training run to MLflow and register the model as the new ``challenger``.

    Returns ``{"run_id", "version", "metrics", "train_dir"}``.
    """
    from spendpred import registry

    run_dir = Path(train_dir)
    summary = _read_json(run_dir / "result.json", "training result")
    run_id, version = registry.log_training_run(
        bundle_dir=summary["bundle_dir"],
        params=summary["params"],
        history=summary["history"],
        test_metrics=summary["metrics"],
        baseline_metrics=summary["baselines"],
        snapshot_dir=summary["snapshot_dir"],
        evaluation_dir=summary["evaluation_dir"],
        run_name=f"train-{summary['as_of']}",
    )
    _write_json(run_dir / "registered.json", {"run_id": run_id, "version": version})
    return {"run_id": run_id, "version": str(version), "metrics": summary["metrics"], "train_dir": str(run_dir)}


def promote_model(version: str | int, mode: str = "auto", train_dir: str | Path | None = None) -> dict[str, Any]:
    """Apply the promotion gate to a registered version.

    The champion (if any) is scored on the same held-out test users as the candidate (read
    from ``train_dir``'s test predictions and snapshot), and the candidate becomes champion
    only when it beats it on normalised Gini without losing more than the tolerance on RMSE.
    ``mode`` is ``auto``, ``never`` or ``force``. Returns ``{"promoted", "reason",
    "champion_version", "version"}``.
    """
    import pandas as pd

    from spendpred import metrics, registry
    from spendpred.errors import ModelError

    if mode not in {"auto", "never", "force"}:
        raise ConfigError(f"promote mode {mode!r} is not one of auto, never, force")
    client = registry.get_client()
    candidate_metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] | None = None
    if train_dir is not None:
        run_dir = Path(train_dir)
        summary = _read_json(run_dir / "result.json", "training result")
        candidate_metrics = summary["metrics"]
        try:
            champion, champion_version = registry.load_model("champion")
        except ModelError as exc:
            if "no champion" not in str(exc).lower():
                raise
            champion = None
        if champion is not None and str(champion_version.version) != str(version):
            frame, _ = _read_snapshot(summary["snapshot_dir"])
            test_ids = pd.read_parquet(run_dir / "test_predictions.parquet", columns=["user_id"])["user_id"]
            test = frame.set_index("user_id").loc[test_ids].reset_index()
            champion_metrics = metrics.evaluate(test["label"].to_numpy(), champion.predict(test))
    decision = registry.promote(client, version, candidate_metrics, champion_metrics, mode=mode)
    info = registry.champion_info()
    out = {**decision.as_dict(), "version": str(version), "champion_version": info["version"] if info else None}
    logger.info("promotion of version %s: %s", version, out)
    return out


def train(
    run_date: str | dt.date,
    horizon_days: int | None = None,
    epochs: int | None = None,
    max_users: int | None = None,
    freeze: str | None = None,
    loss: str | None = None,
    promote: str = "auto",
    url: str | None = None,
) -> dict[str, Any]:
    """All retraining steps in order (the ``train`` command; the weekly DAG runs them as tasks)."""
    run_date = parse_date(run_date, "as_of")
    snapshot = extract_training_snapshot(run_date, horizon_days, url)
    validate_snapshot(snapshot["snapshot_dir"])
    trained = train_model(snapshot["snapshot_dir"], epochs=epochs, max_users=max_users, freeze=freeze, loss=loss)
    registered = evaluate_and_register(trained["train_dir"])
    decision = promote_model(registered["version"], promote, trained["train_dir"])
    return {**registered, "promotion": decision}


# --------------------------------------------------------------------------- scoring

MODEL_NAME = "spendpred-regressor"


def _check_model_ref(model: str | int) -> str:
    ref = str(model).strip()
    if not (ref in {"champion", "challenger"} or ref.isdigit()):
        raise ConfigError(f"model={model!r} is not valid: use 'champion', 'challenger' or a version number such as 3")
    return ref


def plan_shards(snapshot_dir: str | Path, shards: int = 1) -> list[dict[str, Any]]:
    """Return one task description per scoring shard (users split by a hash of user_id).

    Refuses an unvalidated or empty snapshot up front. Raises ``ConfigError`` for a bad count.
    """
    from spendpred import behaviour
    from spendpred.errors import DataError

    if not 1 <= int(shards) <= 256:
        raise ConfigError(f"shards={shards} is out of range: use 1..256")
    snapshot = Path(snapshot_dir)
    manifest = behaviour.Manifest.read(snapshot)
    _read_validation_status(snapshot)
    if manifest.row_count == 0:
        raise DataError(f"snapshot {snapshot} holds no users: nothing to score (is the warehouse empty before {manifest.as_of}?)")
    return [{"snapshot_dir": str(snapshot), "shard": i, "shards": int(shards)} for i in range(int(shards))]


def _read_validation_status(snapshot: Path) -> None:
    from spendpred.errors import ValidationFailed

    status = _read_json(snapshot / "validation.json", "validation result") if (snapshot / "validation.json").is_file() else None
    if status is None:
        raise ValidationFailed(f"snapshot {snapshot} has not been validated: run `spendpred validate {snapshot}` first")
    if not status.get("success"):
        raise ValidationFailed(f"snapshot {snapshot} failed validation (see {snapshot / 'validation.md'}): nothing is scored")


def score_shard(snapshot_dir: str | Path, shard: int = 0, shards: int = 1, model: str | int = "champion") -> dict[str, Any]:
    """Score one shard of a validated snapshot with a registered model version.

    Writes ``shards/shard-<i>-of-<n>.parquet`` (user_id, predicted_spend) beside the
    snapshot. Returns ``{"path", "rows", "model_version", "shard", "shards"}``. Raises
    ``ModelError`` when there is no such model or its text-template version differs from
    the snapshot's, ``ValidationFailed`` for an unvalidated snapshot.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spendpred import behaviour, registry, splits
    from spendpred.errors import ModelError

    snapshot = Path(snapshot_dir)
    manifest = behaviour.Manifest.read(snapshot)
    _read_validation_status(snapshot)
    ref = _check_model_ref(model)
    threads = get_settings().resolved_torch_threads
    spend_model, version = registry.load_model(ref)
    model_template = spend_model.meta.get("text_template_version")
    if model_template != manifest.text_template_version:
        raise ModelError(
            f"{MODEL_NAME} version {version.version} was trained on text template {model_template!r} but the "
            f"snapshot uses {manifest.text_template_version!r}: retrain the model on the current template "
            "(`spendpred train`) or score with a matching version"
        )
    parquet = pq.ParquetFile(snapshot / behaviour.SNAPSHOT_FILE)
    columns = ["user_id", "text", *spend_model.feature_columns]
    out_dir = snapshot.parent / "shards"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"shard-{int(shard):03d}-of-{int(shards):03d}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    schema = pa.schema([("user_id", pa.string()), ("predicted_spend", pa.float64())])
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in parquet.iter_batches(batch_size=50_000, columns=columns):
            frame = batch.to_pandas()
            frame = frame[splits.shard_of(frame["user_id"], int(shards)) == int(shard)]
            if frame.empty:
                continue
            predicted = spend_model.predict(frame, num_threads=threads)
            writer.write_table(pa.table({"user_id": frame["user_id"].to_numpy(), "predicted_spend": predicted}, schema=schema))
            rows += len(frame)
    tmp.replace(path)
    logger.info("shard %d/%d: scored %d users with version %s -> %s", shard, shards, rows, version.version, path)
    return {"path": str(path), "rows": rows, "model_version": str(version.version), "shard": int(shard), "shards": int(shards)}


def assign_tiers(snapshot_dir: str | Path, shard_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Gather every shard, check they cover the snapshot once with one model version, assign tiers.

    The tier rule comes from the settings (``SPENDPRED_TIER_*``: top 10% high, next 30%
    medium by default, or fixed spend thresholds).
    Writes ``tiers.parquet`` and ``tiers.json`` (thresholds, counts, model version) beside
    the snapshot. Returns ``{"tiers_path", "as_of", "rows", "model_version", "counts", "thresholds"}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spendpred import behaviour, tiers
    from spendpred.errors import DataError

    snapshot = Path(snapshot_dir)
    manifest = behaviour.Manifest.read(snapshot)
    results = list(shard_results)
    if not results:
        raise DataError("no scored shards were given: run score_shard for every planned shard first")
    shards = {int(r["shards"]) for r in results}
    versions = {str(r["model_version"]) for r in results}
    seen = sorted(int(r["shard"]) for r in results)
    if len(shards) != 1 or seen != list(range(next(iter(shards)))):
        raise DataError(f"scored shards {seen} do not cover 0..{max(shards) - 1} exactly once: rerun the missing shards")
    if len(versions) != 1:
        raise DataError(f"shards were scored by different model versions {sorted(versions)}: rescore all shards with one version")
    table = pa.concat_tables(pq.read_table(r["path"]) for r in results)
    if table.num_rows != manifest.row_count:
        raise DataError(f"scored {table.num_rows} users but the snapshot holds {manifest.row_count}: rescore the shards")
    rule = tiers.TierRule.from_mapping(get_settings().tier_rule_values())
    labels, thresholds = tiers.assign_tiers(table.column("predicted_spend").to_numpy(), rule)
    table = table.append_column("tier", pa.array(labels, pa.string()))
    path = snapshot.parent / "tiers.parquet"
    pq.write_table(table, path)
    counts = tiers.tier_counts(labels)
    meta = {
        "tiers_path": str(path),
        "as_of": manifest.as_of,
        "rows": table.num_rows,
        "model_version": next(iter(versions)),
        "counts": counts,
        "thresholds": [t.as_dict() for t in thresholds],
    }
    _write_json(snapshot.parent / "tiers.json", meta)
    logger.info("tiers for %s: %s", manifest.as_of, counts)
    return meta


def publish_scores(tiers_result: dict[str, Any], dry_run: bool = False, url: str | None = None) -> dict[str, Any]:
    """Replace the as_of partition of ``user_spend_scores`` (and its thresholds) atomically.

    ``dry_run`` checks everything and writes nothing. Returns ``{"as_of", "rows", "published"}``.
    """
    import pyarrow.parquet as pq

    from spendpred import publish

    table = pq.read_table(tiers_result["tiers_path"])
    as_of = parse_date(tiers_result["as_of"])
    if dry_run:
        publish.validate_scores(table)
        logger.info("dry run: %d rows for %s checked, nothing published", table.num_rows, as_of)
        return {"as_of": as_of.isoformat(), "rows": table.num_rows, "published": False}
    engine = _engine(url)
    try:
        rows = publish.publish_scores(
            engine, as_of, table, tiers_result["thresholds"], model_name=MODEL_NAME, model_version=tiers_result["model_version"]
        )
    finally:
        engine.dispose()
    return {"as_of": as_of.isoformat(), "rows": rows, "published": True}


def score(
    run_date: str | dt.date, model: str | int = "champion", publish: bool = True, shards: int = 1, url: str | None = None
) -> dict[str, Any]:
    """All nightly steps in order (the ``score`` command; the nightly DAG runs them as tasks)."""
    run_date = parse_date(run_date, "as_of")
    _check_model_ref(model)
    snapshot = extract_scoring_snapshot(run_date, url)
    validate_snapshot(snapshot["snapshot_dir"])
    plan = plan_shards(snapshot["snapshot_dir"], shards)
    scored = [score_shard(p["snapshot_dir"], p["shard"], p["shards"], model) for p in plan]
    tiered = assign_tiers(snapshot["snapshot_dir"], scored)
    published = publish_scores(tiered, dry_run=not publish, url=url)
    return {"as_of": tiered["as_of"], "model_version": tiered["model_version"], "counts": tiered["counts"],
            "thresholds": tiered["thresholds"], **published}


# --------------------------------------------------------------------------- reporting

EXAMPLE_SQL = """-- current tier of every user (latest run)
SELECT user_id, predicted_spend, tier, as_of FROM {schema}user_spend_tier_current ORDER BY predicted_spend DESC LIMIT 10;
-- churn-warning feed: users whose tier dropped or whose predicted spend fell by more than half
SELECT user_id, previous_tier, current_tier, spend_change_pct FROM {schema}user_spend_tier_changes WHERE churn_warning;
-- the thresholds of each run
SELECT * FROM {schema}tier_thresholds ORDER BY as_of DESC, lower_bound DESC NULLS LAST;"""


def format_report(data: dict[str, Any]) -> str:
    """Render the latest run (tiers, thresholds, movement), the champion's metrics and example SQL as text."""
    lines: list[str] = [f"warehouse: {data.get('warehouse')}"]
    summary = data.get("summary") or {}
    if not summary.get("as_of"):
        lines.append("no scores published yet: run the nightly scoring (`spendpred score --as-of YYYY-MM-DD`)")
    else:
        lines.append(
            f"latest run: as_of {summary['as_of']} - {summary['user_count']} users scored by "
            f"{summary.get('model_name')} v{summary.get('model_version')} (previous run: {summary.get('previous_as_of') or 'none'})"
        )
        bounds = {t["tier"]: t for t in summary.get("thresholds", [])}
        for tier in ("high", "medium", "low"):
            t = bounds.get(tier, {})
            low = "0.00" if t.get("lower_bound") is None else f"{t['lower_bound']:.2f}"  # spend is never negative
            high = "+inf" if t.get("upper_bound") is None else f"{t['upper_bound']:.2f}"
            lines.append(f"  {tier:<6} {summary['tier_sizes'].get(tier, 0):>9,} users   predicted spend in [{low}, {high})")
        movement = summary.get("movement") or {}
        if movement.get("paired"):
            lines.append(
                f"  movement vs previous run: {movement['up']} up, {movement['down']} down, {movement['same']} same, "
                f"{movement['churn_warning']} churn warnings"
            )
    champion = data.get("champion")
    if champion:
        metrics = champion.get("metrics", {})
        shown = ", ".join(f"{k}={metrics[k]:.3f}" for k in ("normalised_gini", "top10_capture", "spearman", "rmse", "mae", "decile_mape") if k in metrics)
        lines.append(f"champion: {champion['name']} v{champion['version']} (loss {champion.get('tags', {}).get('loss')}): {shown}")
    else:
        lines.append("champion: none yet (run `spendpred train --as-of YYYY-MM-DD`)")
    for message in data.get("errors", []):
        lines.append(f"error: {message}")
    schema = "spendpred." if str(data.get("warehouse", "")).startswith("postgresql") else ""
    lines += ["", "query the results with SQL:", EXAMPLE_SQL.format(schema=schema)]
    return "\n".join(lines)


def run_summary(url: str | None = None) -> dict[str, Any]:
    """Return the latest published run, tier sizes and thresholds, movement and the champion."""
    from spendpred import ui

    return ui.page_data(url)
