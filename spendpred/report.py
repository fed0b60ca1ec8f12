"""The read side: every query behind the Spend tiers page, ``spendpred report`` and ``spendpred summary``.

Publishing (``spendpred.publish``) only writes; this module only reads, with the SQL in
``sql/report/``:

* :func:`warehouse_summary`: what the warehouse holds (row counts, order time range, spend);
* :func:`latest_runs`, :func:`read_scores`, :func:`read_thresholds`: published runs;
* :func:`latest_run_summary`: the latest run's tier sizes and spend, thresholds, histogram and
  tier movement since the previous run;
* :func:`page_data`: that summary plus the champion model (``registry.champion_info``) and the
  model's health (:func:`model_health`: realized metrics, drift, estimates, retrain triggers), as
  the JSON-able dict that ``spendpred.ui.render_page`` and :func:`format_report` render.

Reading is side-effect free: a SQLite warehouse or MLflow store that does not exist yet is
reported as empty, never created. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from spendpred import warehouse
from spendpred.config import Settings, get_settings
from spendpred.embeddings import describe_cost
from spendpred.errors import SpendpredError
from spendpred.masking import mask_url
from spendpred.tiers import TIERS, Threshold

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import sqlalchemy as sa

logger = logging.getLogger(__name__)


def _query(conn: sa.Connection, name: str, params: dict[str, Any] | None = None) -> Any:
    """Run ``sql/report/<name>`` with parameters bound as the dialect stores them; return the result."""
    import sqlalchemy as sa

    dialect = conn.dialect.name
    return conn.execute(sa.text(warehouse.load_sql(f"report/{name}", dialect)), warehouse.bind_values(dialect, params or {}))


def _to_date(value: Any) -> dt.date | None:
    """A date read back from either dialect (SQLite returns ``YYYY-MM-DD`` text)."""
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


def _to_datetime(value: Any) -> dt.datetime | None:
    """A timestamp read back from either dialect (SQLite returns ``YYYY-MM-DD HH:MM:SS`` text)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


# -- the warehouse --------------------------------------------------------------------------


def warehouse_summary(engine: sa.Engine) -> dict[str, Any]:
    """Return what the warehouse holds: ``url`` (password hidden), ``counts`` per source relation,
    ``first_order``/``last_order`` (text or None), ``buyers`` and ``completed_spend``.
    """
    counts = warehouse.table_counts(engine)
    with engine.connect() as conn:
        orders = _query(conn, "warehouse_summary").one()
    return {
        "url": mask_url(engine.url),
        "counts": counts,
        "first_order": str(orders[0]) if orders[0] is not None else None,
        "last_order": str(orders[1]) if orders[1] is not None else None,
        "buyers": int(orders[2] or 0),
        "completed_spend": float(orders[3] or 0.0),
    }


# -- published runs ---------------------------------------------------------------------------


def latest_runs(engine: sa.Engine) -> tuple[dt.date | None, dt.date | None]:
    """Return ``(latest, previous)`` as_of dates of ``user_spend_scores`` (``None`` when absent)."""
    with engine.connect() as conn:
        row = _query(conn, "latest_runs").one()
    return _to_date(row.latest), _to_date(row.previous)


def read_scores(engine: sa.Engine, as_of: dt.date) -> pa.Table:
    """Return the published scores of one run, ordered by ``user_id``.

    Columns: ``as_of`` (date32), ``user_id``, ``predicted_spend`` (float64), ``tier``,
    ``model_name``, ``model_version``, ``scored_at`` (timestamp[s]). Empty when the run
    does not exist.
    """
    import pyarrow as pa

    with engine.connect() as conn:
        rows = _query(conn, "read_scores", {"as_of": as_of}).all()
    columns = list(zip(*rows)) if rows else [()] * 7
    return pa.table(
        {
            "as_of": pa.array([_to_date(v) for v in columns[0]], pa.date32()),
            "user_id": pa.array(columns[1], pa.string()),
            "predicted_spend": pa.array(columns[2], pa.float64()),
            "tier": pa.array(columns[3], pa.string()),
            "model_name": pa.array(columns[4], pa.string()),
            "model_version": pa.array(columns[5], pa.string()),
            "scored_at": pa.array([_to_datetime(v) for v in columns[6]], pa.timestamp("s")),
        }
    )


def read_thresholds(engine: sa.Engine, as_of: dt.date) -> list[Threshold]:
    """Return the stored thresholds of one run (high, medium, low; empty when absent)."""
    with engine.connect() as conn:
        rows = _query(conn, "read_thresholds", {"as_of": as_of}).all()
    return [
        Threshold(r.tier, None if r.lower_bound is None else float(r.lower_bound), None if r.upper_bound is None else float(r.upper_bound))
        for r in rows
    ]


def _histogram(values: np.ndarray, bins: int) -> dict[str, Any]:
    """Bins evenly spaced on the log1p scale (spend is heavy-tailed), edges in currency units."""
    import numpy as np

    if values.size == 0:
        return {"edges": [], "counts": [], "scale": "log1p"}
    top = float(np.log1p(values.max()))
    log_edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    counts, _ = np.histogram(np.log1p(values), bins=log_edges)
    edges = [float(e) for e in np.expm1(log_edges)]
    if top > 0:
        edges[-1] = float(values.max())  # exact, not expm1(log1p(max))
    return {"edges": edges, "counts": [int(c) for c in counts], "scale": "log1p"}


def latest_run_summary(engine: sa.Engine, bins: int = 20) -> dict[str, Any]:
    """Return a JSON-ready summary of the latest run.

    Keys: ``as_of`` and ``previous_as_of`` (ISO dates or None), ``user_count``,
    ``tier_sizes`` ({tier: users}), ``tier_spend`` ({tier: {min, max, mean}}),
    ``thresholds`` (list of {tier, lower_bound, upper_bound}), ``model_name``,
    ``model_version``, ``scored_at`` (ISO), ``histogram`` ({edges, counts, scale}: log1p-spaced
    bins of predicted spend), ``movement`` ({up, down, same, churn_warning, paired, new,
    gone} between the two latest runs, from the ``user_spend_tier_changes`` view) and
    ``transitions`` ({previous_tier: {current_tier: users}}). With no run at all,
    ``as_of`` is None and counts are zero. Raises ``sqlalchemy`` errors if the views are missing.
    """
    import numpy as np

    latest, previous = latest_runs(engine)
    zero_tiers = {t: 0 for t in TIERS}
    summary: dict[str, Any] = {
        "as_of": latest.isoformat() if latest else None,
        "previous_as_of": previous.isoformat() if previous else None,
        "user_count": 0,
        "tier_sizes": dict(zero_tiers),
        "tier_spend": {},
        "thresholds": [],
        "model_name": None,
        "model_version": None,
        "scored_at": None,
        "histogram": _histogram(np.empty(0), bins),
        "movement": {"up": 0, "down": 0, "same": 0, "churn_warning": 0, "paired": 0, "new": 0, "gone": 0},
        "transitions": {p: dict(zero_tiers) for p in TIERS},
    }
    if latest is None:
        return summary
    with engine.connect() as conn:
        per_tier = _query(conn, "run_summary", {"as_of": latest}).all()
        spend = np.array([float(v) for v in _query(conn, "run_spend", {"as_of": latest}).scalars()], dtype=np.float64)
        moves = _query(conn, "movement").all()
        previous_size = int(_query(conn, "run_size", {"as_of": previous}).scalar_one()) if previous is not None else 0
    for row in sorted(per_tier, key=lambda r: TIERS.index(r.tier)):
        summary["tier_sizes"][row.tier] = int(row.users)
        summary["tier_spend"][row.tier] = {
            "min": float(row.min_spend),
            "max": float(row.max_spend),
            "mean": float(row.total_spend) / int(row.users),
        }
    summary["user_count"] = sum(summary["tier_sizes"].values())
    first = max(per_tier, key=lambda r: int(r.users))
    summary["model_name"] = first.model_name
    summary["model_version"] = first.model_version
    stamp = max((_to_datetime(r.scored_at) for r in per_tier if r.scored_at is not None), default=None)
    summary["scored_at"] = stamp.isoformat(sep=" ") if stamp else None
    summary["thresholds"] = [t.as_dict() for t in read_thresholds(engine, latest)]
    summary["histogram"] = _histogram(spend, bins)
    movement = summary["movement"]
    for row in moves:
        users = int(row.users)
        summary["transitions"][row.previous_tier][row.current_tier] = users
        step = TIERS.index(row.previous_tier) - TIERS.index(row.current_tier)
        movement["up" if step > 0 else "down" if step < 0 else "same"] += users
        movement["churn_warning"] += int(row.churn_warnings or 0)
        movement["paired"] += users
    if previous is not None:
        movement["new"] = summary["user_count"] - movement["paired"]
        movement["gone"] = previous_size - movement["paired"]
    return summary


# -- the page's data: the latest run and the champion ----------------------------------------


def _read_summary(url: str, data: dict[str, Any]) -> None:
    """Fill ``data["summary"]`` from the warehouse, or add a message to ``data["errors"]``."""
    import sqlalchemy as sa

    file = warehouse.sqlite_file(url)
    if file is not None and not file.exists():
        data["notes"].append(f"The warehouse file {file} does not exist yet: run `spendpred db init`.")
        return
    engine = warehouse.get_engine(url, create=False)  # reading never writes, not even an empty file's header
    try:
        data["warehouse"] = mask_url(engine.url)
        data["summary"] = latest_run_summary(engine)
    except sa.exc.SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        hint = " (run `spendpred db init` to create the tables)" if "no such table" in text or "does not exist" in text else ""
        data["errors"].append(f"Cannot read the warehouse {data['warehouse']}: {text}{hint}")
        logger.warning("spend tiers page: %s", data["errors"][-1])
    finally:
        engine.dispose()


def _read_champion(settings: Settings, data: dict[str, Any]) -> None:
    """Fill ``data["champion"]`` from the MLflow registry, or add a message to ``data["errors"]``."""
    file = warehouse.sqlite_file(settings.resolved_tracking_uri)
    if file is not None and not file.exists():  # never created by reading
        version = (data["summary"] or {}).get("model_version")
        if version:  # scores published by a registered model: this is not the store that registered it
            data["registry_missing"] = str(file)
            data["errors"].append(
                f"the MLflow registry {file} does not exist, yet the warehouse holds scores of version {version}: "
                "point SPENDPRED_MLFLOW_TRACKING_URI (or SPENDPRED_HOME) at the store that registered it"
            )
            logger.warning("spend tiers page: %s", data["errors"][-1])
        return  # no tracking store yet, hence no champion
    try:
        from spendpred import registry

        data["champion"] = registry.champion_info(settings)
    except (SpendpredError, ImportError) as exc:
        data["errors"].append(f"Cannot read the model registry: {exc}")
        logger.warning("spend tiers page: %s", data["errors"][-1])


def page_data(url: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Return everything the page and ``spendpred report`` show, as a JSON-able dict.

    Keys: ``warehouse`` (URL, password hidden), ``summary`` (:func:`latest_run_summary`, or
    ``None`` when the warehouse cannot be read), ``champion`` (``registry.champion_info``;
    ``None`` when there is no champion yet), ``forced`` (:func:`forced_promotion`: who forced the
    champion past the gate, and the condition it skipped; ``None`` when it earned its place),
    ``errors`` and ``notes`` (messages for the reader) and ``generated_at`` (UTC, ISO). ``url`` defaults to the settings' warehouse URL.
    Raises ``ConfigError`` for an unsupported URL; read failures are reported in ``errors``.
    """
    settings = settings or get_settings()
    url = url or settings.resolved_warehouse_url
    data: dict[str, Any] = {
        "warehouse": mask_url(url),
        "summary": None,
        "champion": None,
        "errors": [],
        "notes": [],
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    _read_summary(url, data)
    _read_champion(settings, data)
    data["comparison"] = champion_comparison(data["champion"])
    data["forced"] = forced_promotion(data["champion"])
    data["scoring"] = scoring_cost((data["summary"] or {}).get("as_of"), settings)
    data["health"] = model_health(url, settings, data)
    data["importance"] = champion_importance(data["champion"], settings)
    return data


def champion_importance(champion: dict[str, Any] | None, settings: Settings) -> list[dict[str, Any]] | None:
    """The champion's global importance (``explain.write_global_importance``, logged by its retrain under
    ``evaluation/``) as rows of ``explain.IMPORTANCE_COLUMNS``; None without a champion, or for one trained
    before it was logged or whose artifact cannot be read (logged)."""
    import tempfile

    from spendpred import explain, registry

    if not champion or not champion.get("run_id"):
        return None
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = registry.get_client(settings).download_artifacts(
                str(champion["run_id"]), f"evaluation/{explain.IMPORTANCE_TABLE}", folder
            )
            table = explain.read_global_importance(path)
    except Exception as exc:  # noqa: BLE001 - an older champion has none; the page shows the rest
        logger.info("no global importance for the champion (run %s): %s", champion.get("run_id"), exc)
        return None
    return None if table is None else table.to_dict(orient="records")


# -- model health: what the monitoring stored ------------------------------------------------

HEALTH_METRICS: tuple[str, ...] = ("normalised_gini", "top10_capture", "total_ratio")
"""The realized metrics the page and the report show per matured partition and scorer."""
HEALTH_PARTITIONS = 12
"""The matured partitions shown (the latest)."""


def _last_retrain(settings: Settings) -> dict[str, Any] | None:
    """The latest training run in MLflow with why it ran (tags ``trigger``, ``trigger_reason``), or ``None``."""
    from spendpred import registry

    if registry.missing_store(settings) is not None:
        return None
    client = registry.get_client(settings)
    experiment = client.get_experiment_by_name(registry.EXPERIMENT_NAME)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "started": started,
            "trigger": run.data.tags.get("trigger"), "trigger_reason": run.data.tags.get("trigger_reason")}  # fmt: skip


def model_health(url: str, settings: Settings, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return what the monitoring stored, for the page and the report (side-effect free).

    Keys: ``realized`` (per matured as_of, newest last, at most :data:`HEALTH_PARTITIONS`:
    ``{"as_of", "model_version", "horizon_days", "scorers": {scorer: {metric: [value, ci_low, ci_high]}}}``
    for :data:`HEALTH_METRICS`), ``drift_as_of`` and ``drift`` (the latest night's rows, worst
    first), ``estimates`` (estimate beside realized, latest ten), ``requests`` (the latest retrain
    decisions), ``last_retrain`` (the latest MLflow training run and its trigger) and ``notes``
    (what could not be read). Missing tables (a warehouse initialised before monitoring) are a note.
    """
    import sqlalchemy as sa

    from spendpred import monitoring

    health: dict[str, Any] = {"realized": [], "drift_as_of": None, "drift": [], "estimates": [], "requests": [],
                              "last_retrain": None, "notes": []}  # fmt: skip
    file = warehouse.sqlite_file(url)
    if file is None or file.exists():
        engine = warehouse.get_engine(url, create=False)
        try:
            rows = monitoring.read_partition_metrics(engine, dt.date.max)
            groups: dict[tuple[str, str, int], dict[str, dict[str, list[Any]]]] = {}
            for row in rows:
                if row["metric"] in HEALTH_METRICS:
                    key = (row["as_of"], str(row["model_version"]), int(row["horizon_days"]))
                    groups.setdefault(key, {}).setdefault(row["scorer"], {})[row["metric"]] = [row["value"], row["ci_low"], row["ci_high"]]
            health["realized"] = [{"as_of": a, "model_version": v, "horizon_days": h, "scorers": scorers}
                                  for (a, v, h), scorers in sorted(groups.items())][-HEALTH_PARTITIONS:]  # fmt: skip
            latest = _to_date(((data or {}).get("summary") or {}).get("as_of"))
            if latest is not None:
                health["drift_as_of"] = latest.isoformat()
                health["drift"] = monitoring.read_drift(engine, latest)
            health["estimates"] = monitoring.read_estimates(engine, dt.date.max)[-10:]
            health["requests"] = monitoring.read_requests(engine, dt.date.max)
        except sa.exc.SQLAlchemyError as exc:
            text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            health["notes"].append(f"Monitoring tables cannot be read ({text}): run `spendpred db init` to create them.")
        finally:
            engine.dispose()
    try:
        health["last_retrain"] = _last_retrain(settings)
    except Exception as exc:  # noqa: BLE001 - the page shows what it can
        health["notes"].append(f"The last retrain cannot be read from MLflow: {' '.join(str(exc).splitlines())[:200]}")
    return health


def _health_value(scorers: dict[str, Any], scorer: str, metric: str) -> str:
    values = (scorers.get(scorer) or {}).get(metric)
    return "-" if not values or values[0] is None else f"{float(values[0]):.3f}"


def format_health(health: dict[str, Any] | None) -> list[str]:
    """Return the model-health figures as text lines: the latest matured partition per scorer,
    the latest night's drift, the latest estimate beside its realized value, and the last retrain's trigger."""
    from spendpred import monitoring

    if not health:
        return []
    lines = ["model health:"]
    realized = health.get("realized") or []
    if realized:
        last = realized[-1]
        lines.append(f"  realized, partition {last['as_of']} (version {last['model_version']}, H={last['horizon_days']}):")
        for scorer in [s for s in monitoring.SCORERS if s in last["scorers"]]:
            lines.append(f"    {scorer:<20} norm.Gini {_health_value(last['scorers'], scorer, 'normalised_gini'):>7}  "
                         f"top10% {_health_value(last['scorers'], scorer, 'top10_capture'):>7}  "
                         f"pred/actual {_health_value(last['scorers'], scorer, 'total_ratio'):>7}")  # fmt: skip
    else:
        lines.append("  realized: no partition has matured yet (as_of + H <= the run date)")
    drift = health.get("drift") or []
    if drift:
        alert = [r["feature"] for r in drift if r["status"] == "alert"]
        warn = [r["feature"] for r in drift if r["status"] == "warn"]
        clock = monitoring.clock_drift(drift)
        lines.append(f"  drift on {health.get('drift_as_of')}: {len(alert)} alert ({', '.join(alert) or 'none'}), "
                     f"{len(warn)} warn, {len(drift) - len(alert) - len(warn)} ok"
                     + (f"; {', '.join(clock)} grow with the date (expected, never request a retrain)" if clock else ""))  # fmt: skip
    estimates = [e for e in health.get("estimates") or [] if e["metric"] == "rmse"]
    if estimates:
        e = estimates[-1]
        realized_text = "pending" if e["realized"] is None else f"{float(e['realized']):,.2f}"
        lines.append(f"  estimated RMSE of {e['as_of']}: {float(e['estimated']):,.2f} (realized: {realized_text})")
    requests = health.get("requests") or []
    asked = next((r for r in requests if r["decision"] == "requested"), None)
    if asked:
        lines.append(f"  last retrain request: {asked['as_of']} ({asked['reasons']})")
    last = health.get("last_retrain")
    if last:
        lines.append(f"  last retrain run: {last['started']} trigger={last.get('trigger') or 'unrecorded'}"
                     + (f" ({last['trigger_reason']})" if last.get("trigger_reason") else ""))  # fmt: skip
    lines += [f"  note: {n}" for n in health.get("notes") or []]
    return lines


def forced_promotion(champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return how the champion was forced past the promotion gate, or ``None`` when it was not forced (or there is none).

    ``{"version", "by", "at", "skipped_gate", "reason"}`` from the version tags that
    ``registry.promote`` writes: ``promoted_by`` (the Airflow user or the CLI's ``--actor``),
    ``promoted_at``, ``promotion_skipped_gate`` (the gate condition it did not meet; ``None`` when
    the gate would have passed it, or for a version forced before it was recorded) and
    ``promotion_reason``.
    """
    from spendpred.registry import SKIPPED_GATE_TAG

    tags = (champion or {}).get("tags") or {}
    if tags.get("promotion") != "forced":
        return None
    return {
        "version": str((champion or {}).get("version")),
        "by": tags.get("promoted_by") or "unknown",
        "at": tags.get("promoted_at"),
        "skipped_gate": tags.get(SKIPPED_GATE_TAG),
        "reason": tags.get("promotion_reason"),
    }


def scoring_cost(as_of: str | None, settings: Settings) -> dict[str, Any] | None:
    """Return the encoder figures of the staged scoring run for ``as_of`` (``tiers.json``'s ``encoder``), else ``None``.

    ``{"users", "hits", "misses", "hit_rate", "encode_seconds", "cache", ...}`` as written by
    ``pipeline.assign_tiers`` (``spendpred.embeddings.CacheStats``). ``None`` when the run was
    not staged on this machine or predates the embedding cache.
    """
    if not as_of:
        return None
    from spendpred.files import read_json
    from spendpred.snapshot import RunFolder

    try:
        meta = read_json(RunFolder.for_date("score", dt.date.fromisoformat(str(as_of)), settings).tiers_json, "tiers result")
    except (SpendpredError, OSError, ValueError):
        return None
    encoder = meta.get("encoder") if isinstance(meta, dict) else None
    return encoder if isinstance(encoder, dict) and "users" in encoder else None


COMPARISON_METRICS: tuple[str, ...] = ("normalised_gini", "top10_capture", "rmse", "decile_mape", "total_ratio")
"""The columns of the champion-vs-peers table: ranking, error and calibration."""
PEERS: tuple[tuple[str, str], ...] = (
    ("before_finetuning", "same model, encoder not fine-tuned"),
    ("past_spend", "past spend (spend in the last H days)"),
    ("gbt_numeric", "gradient-boosted trees on the numeric features"),
)


def champion_comparison(champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the champion beside its peers on the same held-out users, or ``None`` without a champion.

    ``{"rows": [{"model", "label", metric...}], "lift": {metric: fine-tuned minus frozen},
    "calibration": {"total_predicted", "total_actual", "total_ratio"}}``, from the metrics
    recorded on the champion's version when it was trained (``registry.champion_info``).
    """
    if not champion:
        return None
    from spendpred.metrics import LIFT_PREFIX, metric_label

    metrics = champion.get("metrics") or {}
    peers = champion.get("baselines") or {}

    def row(model: str, label: str, values: dict[str, float]) -> dict[str, Any]:
        return {"model": model, "label": label, **{k: values.get(k) for k in COMPARISON_METRICS}}

    rows = [row("champion", f"champion v{champion.get('version')}", metrics)]
    rows += [row(name, label, peers[name]) for name, label in PEERS if name in peers]
    lift = {key.removeprefix(LIFT_PREFIX): value for key, value in metrics.items() if key.startswith(LIFT_PREFIX)}
    calibration = {k: metrics.get(k) for k in ("total_predicted", "total_actual", "total_ratio")}
    notes = []
    if lift:
        notes.append(
            "fine-tuning lift over the frozen encoder: " + ", ".join(f"{metric_label(k)} {v:+.4f}" for k, v in lift.items())
        )
    if calibration.get("total_actual") is not None:
        notes.append(
            f"calibration: total predicted spend {_number(calibration['total_predicted'], 0)} vs actual "
            f"{_number(calibration['total_actual'], 0)} (ratio {_number(calibration['total_ratio'])})"
        )
    return {"columns": list(COMPARISON_METRICS), "rows": rows, "lift": lift, "calibration": calibration, "notes": notes}


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def format_comparison(comparison: dict[str, Any] | None) -> list[str]:
    """Return the comparison as text lines (a table, the fine-tuning lift, the calibration)."""
    if not comparison:
        return []
    header = f"  {'model':<48} {'norm.Gini':>9} {'top10%':>7} {'RMSE':>9} {'dec.MAPE':>8} {'pred/true':>9}"
    lines = ["champion vs peers on the same held-out users (when it was trained):", header]
    for r in comparison["rows"]:
        lines.append(
            f"  {r['label']:<48} {_number(r['normalised_gini']):>9} {_number(r['top10_capture']):>7} "
            f"{_number(r['rmse'], 2):>9} {_number(r['decile_mape']):>8} {_number(r['total_ratio']):>9}"
        )
    lines += [f"  {note}" for note in comparison.get("notes") or []]
    return lines


# -- the text report ------------------------------------------------------------------------

EXAMPLE_SQL = """-- current tier of every user (latest run)
SELECT user_id, predicted_spend, tier, as_of FROM {schema}user_spend_tier_current ORDER BY predicted_spend DESC LIMIT 10;
-- churn-warning feed: users whose tier dropped or whose predicted spend fell by more than half
SELECT user_id, previous_tier, current_tier, spend_change_pct FROM {schema}user_spend_tier_changes WHERE churn_warning;
-- the thresholds of each run: a tier holds predicted spend in [lower_bound, upper_bound)
SELECT as_of, tier, lower_bound, upper_bound FROM {schema}user_spend_tier_thresholds ORDER BY as_of DESC, lower_bound DESC NULLS LAST;
-- why: the three reasons of each explained user (the high tier and users whose tier changed), in currency
SELECT user_id, rank, reason FROM {schema}current_user_spend_reasons ORDER BY user_id, rank LIMIT 9;"""
"""What the text report suggests running: only the views a read-only role may read (``publish.readonly_views``)."""

REPORT_METRICS: tuple[str, ...] = ("normalised_gini", "top10_capture", "spearman", "rmse", "mae", "decile_mape")
"""The champion's test metrics ``spendpred report`` prints, in order."""


def format_report(data: dict[str, Any]) -> str:
    """Render :func:`page_data`'s result as text: the latest run (tiers, thresholds, movement),
    the champion's metrics and example SQL.
    """
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
        for tier in TIERS:
            t = bounds.get(tier, {})
            low = "0.00" if t.get("lower_bound") is None else f"{t['lower_bound']:.2f}"  # spend is never negative
            high = "+inf" if t.get("upper_bound") is None else f"{t['upper_bound']:.2f}"
            lines.append(f"  {tier:<6} {summary['tier_sizes'].get(tier, 0):>9,} users   predicted spend in [{low}, {high})")
        cost = describe_cost(data.get("scoring"))
        if cost:
            lines.append(f"  {cost}")
        movement = summary.get("movement") or {}
        if movement.get("paired"):
            lines.append(
                f"  movement vs previous run: {movement['up']} up, {movement['down']} down, {movement['same']} same, "
                f"{movement['churn_warning']} churn warnings"
            )
    champion = data.get("champion")
    if champion:
        metrics = champion.get("metrics", {})
        shown = ", ".join(f"{k}={metrics[k]:.3f}" for k in REPORT_METRICS if k in metrics)
        lines.append(f"champion: {champion['name']} v{champion['version']} (loss {champion.get('tags', {}).get('loss')}): {shown}")
        lines += format_comparison(data.get("comparison") or champion_comparison(champion))
    elif data.get("registry_missing"):
        lines.append(f"champion: unknown (no MLflow registry at {data['registry_missing']})")
    else:
        lines.append("champion: none yet (run `spendpred train --as-of YYYY-MM-DD`)")
    lines += format_health(data.get("health"))
    for message in data.get("errors", []):
        lines.append(f"error: {message}")
    schema = "spendpred." if str(data.get("warehouse", "")).startswith("postgresql") else ""
    lines += ["", "query the results with SQL:", EXAMPLE_SQL.format(schema=schema)]
    return "\n".join(lines)
