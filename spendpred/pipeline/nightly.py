"""The nightly scoring steps (DAG ``spendpred_nightly_scoring``): scoring snapshot, shard plan,
one shard, tiers, publishing.

Every step after the extract takes the run folder (``RunFolder`` or its XCom reference
``{"kind": "score", "as_of", "root"}``, with ``shard``/``shards`` for one shard) and finds
its inputs there; the shard loop itself is ``spendpred.shards``. With staging on object storage
each step works in a working copy (``snapshot.working_copy``): it pulls what it reads and pushes
what it writes, so the steps may run on different hosts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from spendpred.config import get_settings
from spendpred.embeddings import CacheStats, prune
from spendpred.files import write_json_atomic
from spendpred.params import check_score
from spendpred.pipeline.snapshots import extract_run, validate_snapshot
from spendpred.snapshot import RunFolder, RunRef, working_copy

logger = logging.getLogger(__name__)


def extract_scoring_snapshot(run_date: dt.date, url: str | None = None, model: str | int | None = None) -> dict[str, Any]:
    """Extract the scoring snapshot (features as of the run date); return the run's reference with ``rows``.

    With ``model`` (the version or alias the run will score with) the warehouse, the staging
    folder and that model are checked first (``preflight``, ``registry.require_model``), so a
    run without a champion or with an unreachable registry stops before anything is written,
    and the texts are rendered with the text template that model was trained on (so a champion
    trained before ``SPENDPRED_TEXT_TEMPLATE`` changed keeps scoring until a retrain replaces it).
    """
    settings = get_settings()
    template = None
    if model is not None:
        from spendpred import registry
        from spendpred.pipeline.snapshots import preflight

        preflight("score", url, settings)
        version = registry.require_model(check_score(model=model).model, settings)
        template = (version.tags or {}).get("text_template_version") or None
        if template and template != settings.text_template:
            logger.info(
                "scoring with text template %s, the one version %s was trained on (SPENDPRED_TEXT_TEMPLATE is %s)",
                template, version.version, settings.text_template,
            )  # fmt: skip
    run = RunFolder.for_date("score", run_date, settings)
    return extract_run(run, settings.horizon_days, False, url, settings, template)


def plan_shards(run: RunRef, shards: int = 1) -> list[dict[str, Any]]:
    """Return one task description per scoring shard (the run's reference with ``shard`` and ``shards``).

    Users are split by a hash of user_id. Refuses an unvalidated or empty snapshot up front
    (``ValidationFailed``, ``DataError``); ``ConfigError`` for a bad count.
    """
    from spendpred.errors import DataError

    count = check_score(shards=shards).shards
    with working_copy(run) as run:
        run.pull("snapshot", "validation")
        manifest = run.require_validated()
    if manifest.row_count == 0:
        raise DataError(
            f"snapshot {run.location('snapshot')} holds no users: nothing to score (is the warehouse empty before {manifest.as_of}?)"
        )
    return [{**run.ref(), "shard": i, "shards": count} for i in range(count)]


def score_shard(run: RunRef, shard: int = 0, shards: int = 1, model: str | int = "champion") -> dict[str, Any]:
    """Score one shard of a run's validated snapshot with a registered model version.

    Writes the run's ``shards/shard-<i>-of-<n>.parquet`` (user_id, predicted_spend). Users
    whose text is unchanged since the last night take their text embedding from the
    embedding cache (``spendpred.embeddings``; ``SPENDPRED_EMBEDDING_CACHE``), the rest are
    encoded, and the cache is written back. Returns the run's reference with ``rows``,
    ``model_version``, ``shard``, ``shards`` and ``encoder`` (users, cache hits and misses,
    hit rate, seconds in the encoder). Raises ``ModelError`` when there is no such model or
    its text-template version differs from the snapshot's, ``ValidationFailed`` for an
    unvalidated or changed snapshot.
    """
    with working_copy(run) as run:
        return _score_shard(run, shard, shards, model)


def _score_shard(run: RunFolder, shard: int, shards: int, model: str | int) -> dict[str, Any]:
    """:func:`score_shard` in a working copy: pull the snapshot, score, push the shard file."""
    from spendpred import registry
    from spendpred.shards import require_same_template, score_shard_file

    run.pull("snapshot", "validation")
    manifest = run.require_validated()
    ref = check_score(model=model).model
    settings = get_settings()
    threads = settings.resolved_torch_threads
    spend_model, version = registry.load_model(ref)
    require_same_template(
        spend_model.meta.get("text_template_version"),
        manifest.text_template_version,
        f"{registry.REGISTERED_MODEL} version {version.version}",
    )
    files = _shard_cache(spend_model, str(version.version), shard, shards, settings)
    pulled = _sync_cache(run, files, push=False) if files is not None and run.is_remote else {}
    cache = files.open(run) if files is not None else None
    path = run.shard_path(shard, shards)
    stats = score_shard_file(spend_model, run.snapshot.parquet, path, shard, shards, threads, cache=cache)
    run.push("shard", shard=shard, shards=shards)
    if files is not None and run.is_remote:  # after the shard, like the local cache's commit
        _sync_cache(run, files, push=True, pulled=pulled)
    logger.info(
        "shard %d/%d: scored %d users with version %s -> %s; encoded %d (%.1fs), embedding cache %s: %d hits",
        shard, shards, stats.users, version.version, run.location("shards", path.name), stats.misses,
        stats.encode_seconds, stats.cache_state, stats.hits,
    )  # fmt: skip
    return {**run.ref(), "rows": stats.users, "model_version": str(version.version), "shard": int(shard),
            "shards": int(shards), "encoder": stats.as_dict(), "totals": stats.totals,
            "anchor": spend_model.meta.get("anchor")}  # fmt: skip


def _shard_cache(spend_model: Any, version: str, shard: int, shards: int, settings: Any) -> _CacheFiles | None:
    """The shard's embedding cache for this model (to open in a run folder), or None when the setting is off or the precision is int8."""
    from spendpred import embeddings
    from spendpred.model.scoring import resolve_precision

    if not settings.embedding_cache:
        return None
    precision = resolve_precision("auto", spend_model.device)
    if precision == "int8":
        return None
    key = embeddings.cache_key(version, spend_model.meta, precision, None, spend_model.device.type)
    return _CacheFiles(key, shard, shards, spend_model.hidden_size, settings.embedding_cache_max_mb)


class _CacheFiles:
    """A shard's embedding cache: its files (:meth:`files`, to sync with object storage) and :meth:`open`."""

    def __init__(self, key: str, shard: int, shards: int, hidden: int, max_mb: float) -> None:
        self.key, self.shard, self.shards, self.hidden, self.max_mb = key, shard, shards, hidden, max_mb

    def files(self, run: RunFolder) -> list[Any]:
        from spendpred import embeddings

        return embeddings.shard_files(run.local_root, self.key, self.shard, self.shards)

    def open(self, run: RunFolder) -> Any:
        from spendpred import embeddings

        return embeddings.shard_cache(run.local_root, self.key, self.shard, self.shards, self.hidden, self.max_mb)


def _cache_folder(key: str) -> str:
    """The embedding cache folder of ``key``, relative to the staging root."""
    from spendpred.embeddings import CACHE_DIRNAME

    return f"{CACHE_DIRNAME}/{key}"


def _sync_cache(run: RunFolder, cache: _CacheFiles, push: bool, pulled: dict[str, str] | None = None) -> dict[str, str]:
    """Pull (``push`` False) or push the shard's embedding-cache files between the working copy and object storage.

    Each bucket file is its own staged set (``<bucket>.staged.json`` beside it), so a reader
    only uses files whose upload completed, and a push sends only files that changed since the
    pull. Returns ``{file name: sha256}`` of the files now in the working copy. A failure only
    costs time (the cache's contract): it is logged, never raised.
    """
    from spendpred.errors import SpendpredError
    from spendpred.files import sha256_file
    from spendpred.staging import store

    folder = _cache_folder(cache.key)
    remote = store(str(run.root))
    done: dict[str, str] = {}
    for path in cache.files(run):
        name = path.name.removesuffix(".parquet")
        try:
            if not push:
                if remote.pull(path.parent, folder, name):
                    done[path.name] = sha256_file(path)
            elif path.is_file():
                digest = sha256_file(path)
                if (pulled or {}).get(path.name) != digest:
                    remote.push(path.parent, folder, name, [path.name])
                done[path.name] = digest
        except (SpendpredError, OSError) as exc:
            logger.warning(
                "embedding cache %s on %s could not be %s (%s): the next night encodes these users again",
                path.name, remote.url_of(folder), "written" if push else "read", exc,
            )  # fmt: skip
    return done


def assign_tiers(run: RunRef, shard_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Gather every shard, check they cover the snapshot once with one model version, assign tiers.

    The tier rule comes from the settings (``SPENDPRED_TIER_*``: top 10% high, next 30%
    medium by default, or fixed spend thresholds). Before tiering, the scores are scaled by the
    model's trend anchor (``SPENDPRED_TREND_ANCHOR``; ``spendpred.shards.apply_anchor``), so the
    night's total follows the BG/NBD x Gamma-Gamma forecast's move since training. Writes the
    run's ``tiers.parquet`` and ``tiers.json``. Returns the run's reference with ``rows``,
    ``model_version``, ``counts``, ``thresholds``, ``encoder`` (the shards' cache figures added
    up) and ``anchor`` (factor, totals and the training-time ratio).
    """
    from spendpred import shards

    results = list(shard_results)
    count, version = shards.check_coverage(results)
    with working_copy(run) as run:
        run.pull("snapshot", only=("manifest.json",))
        for r in results:
            run.pull_set(run.staged_set("shard", int(r["shard"]), count))
        return _assign_tiers(run, results, count, version)


def _assign_tiers(run: RunFolder, results: list[Mapping[str, Any]], count: int, version: str) -> dict[str, Any]:
    """:func:`assign_tiers` in a working copy holding the snapshot's manifest and every shard; pushes the tiers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spendpred import shards, tiers

    table = shards.gather([run.shard_path(int(r["shard"]), count) for r in results], run.manifest.row_count)
    anchor = results[0].get("anchor") if get_settings().trend_anchor else None
    table, anchored = shards.apply_anchor(table, results, anchor)
    if anchored["factor"] != 1.0:
        logger.info(
            "trend anchor: predicted total %.2f, BG/NBD x Gamma-Gamma forecast %.2f (ratio %.4f at training): "
            "scores scaled by %.6f", anchored["predicted_total"], anchored["forecast_total"] or 0.0,
            anchored["reference_ratio"] or 0.0, anchored["factor"],
        )  # fmt: skip
    labels, thresholds = tiers.assign_tiers(table.column("predicted_spend").to_numpy(), tiers.rule_from_settings())
    pq.write_table(table.append_column("tier", pa.array(labels, pa.string())), run.tiers_parquet)
    counts = tiers.tier_counts(labels)
    encoder = CacheStats.total([r["encoder"] for r in results if r.get("encoder")])
    meta = {
        **run.ref(),
        "rows": table.num_rows,
        "model_version": version,
        "counts": counts,
        "thresholds": [t.as_dict() for t in thresholds],
        "encoder": encoder,
        "anchor": anchored,
    }
    write_json_atomic(run.tiers_json, meta)
    run.push("tiers")
    logger.info("tiers for %s: %s; encoder: %s", run.as_of, counts, encoder)
    if encoder["key"]:
        if run.is_remote:
            _prune_remote(run, encoder["key"])
        else:
            prune(run.local_root, encoder["key"], count)
    return meta


def _prune_remote(run: RunFolder, keep_key: str) -> None:
    """On object storage, delete every embedding cache but ``keep_key``'s (``embeddings.prune`` for a URL); errors are logged."""
    from spendpred.embeddings import CACHE_DIRNAME
    from spendpred.errors import SpendpredError
    from spendpred.staging import store

    remote = store(str(run.root))
    try:
        stale = [name for name in remote.children(CACHE_DIRNAME) if name != keep_key]
        for name in stale:
            remote.delete_dir(_cache_folder(name))
    except SpendpredError as exc:
        logger.warning("could not prune the embedding cache on %s (%s): a leftover cache only costs storage", remote.url, exc)
        return
    if stale:
        logger.info("embedding cache: removed %d stale keys under %s", len(stale), remote.url_of(CACHE_DIRNAME))


def publish_scores(tiers_result: RunRef, dry_run: bool = False, url: str | None = None) -> dict[str, Any]:
    """Replace the run's ``as_of`` partition of ``user_spend_scores`` (and its thresholds) atomically.

    ``tiers_result`` is ``assign_tiers``' result. ``dry_run`` checks everything and writes
    nothing. Returns ``{"as_of", "rows", "published"}``.
    """
    import pyarrow.parquet as pq

    from spendpred import publish, registry, warehouse
    from spendpred.files import read_json

    with working_copy(tiers_result) as run:
        run.pull("tiers")
        meta = tiers_result if isinstance(tiers_result, Mapping) else read_json(run.tiers_json, "tiers result")
        table = pq.read_table(run.tiers_parquet)
    if dry_run:
        publish.validate_scores(table)
        logger.info("dry run: %d rows for %s checked, nothing published", table.num_rows, run.as_of)
        return {"as_of": run.as_of.isoformat(), "rows": table.num_rows, "published": False}
    with warehouse.opened_engine(url) as engine:
        rows = publish.publish_scores(
            engine, run.as_of, table, meta["thresholds"], model_name=registry.REGISTERED_MODEL, model_version=meta["model_version"]
        )
    return {"as_of": run.as_of.isoformat(), "rows": rows, "published": True}


def score(
    run_date: dt.date, model: str | int = "champion", publish: bool = True, shards: int = 1, url: str | None = None
) -> dict[str, Any]:
    """All nightly steps in order (the ``score`` command; the nightly DAG runs them as tasks)."""
    check_score(as_of=run_date, model=model, dry_run=not publish, shards=shards)
    snapshot = extract_scoring_snapshot(run_date, url, model=model)
    validate_snapshot(snapshot)
    plan = plan_shards(snapshot, shards)
    scored = [score_shard(spec, spec["shard"], spec["shards"], model) for spec in plan]
    tiered = assign_tiers(snapshot, scored)
    published = publish_scores(tiered, dry_run=not publish, url=url)
    return {"as_of": tiered["as_of"], "model_version": tiered["model_version"], "counts": tiered["counts"],
            "thresholds": tiered["thresholds"], "encoder": tiered["encoder"], **published}
