"""The nightly scoring steps (DAG ``spendpred_nightly_scoring``): scoring snapshot, shard plan,
one shard, tiers, explanations (reason codes), publishing; and ``explain_user`` (``spendpred explain``).

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
from spendpred.params import ScoreParams, check_score, given, require_as_of
from spendpred.pipeline.snapshots import extract_run, validate_snapshot
from spendpred.snapshot import RunFolder, RunRef, working_copy

logger = logging.getLogger(__name__)


def extract_scoring_snapshot(
    run: ScoreParams | dt.date, url: str | None = None, model: str | int | None = None
) -> dict[str, Any]:
    """Extract the scoring snapshot (features as of the run date); return the run's reference with ``rows``.

    ``run`` is the run's checked ``ScoreParams`` (the run date is its ``as_of``, the model its
    ``model``), or the run date with an optional plain ``model``, checked once here.
    With a model (the version or alias the run will score with) the warehouse, the staging
    folder and that model are checked first (``preflight``, ``registry.require_model``), so a
    run without a champion or with an unreachable registry stops before anything is written,
    and the texts are rendered with the text template that model was trained on (so a champion
    trained before ``SPENDPRED_TEXT_TEMPLATE`` changed keeps scoring until a retrain replaces it).
    """
    if isinstance(run, ScoreParams):
        params = given(ScoreParams, run, model=model)
        run_date, model_ref = require_as_of(params), params.model
    else:
        run_date, model_ref = run, None if model is None else given(ScoreParams, None, model=model).model
    settings = get_settings()
    template = None
    if model_ref is not None:
        from spendpred import registry
        from spendpred.pipeline.snapshots import preflight

        preflight("score", url, settings)
        version = registry.require_model(model_ref, settings)
        template = (version.tags or {}).get("text_template_version") or None
        if template and template != settings.text_template:
            logger.info(
                "scoring with text template %s, the one version %s was trained on (SPENDPRED_TEXT_TEMPLATE is %s)",
                template, version.version, settings.text_template,
            )  # fmt: skip
    folder = RunFolder.for_date("score", run_date, settings)
    return extract_run(folder, settings.horizon_days, False, url, settings, template)


def plan_shards(run: RunRef, shards: int | None = None, *, params: ScoreParams | None = None) -> list[dict[str, Any]]:
    """Return one task description per scoring shard (the run's reference with ``shard`` and ``shards``).

    The count is the checked ``params.shards``, or a plain ``shards`` (default 1) checked once
    here. Users are split by a hash of user_id. Refuses an unvalidated or empty snapshot up front
    (``ValidationFailed``, ``DataError``); ``ConfigError`` for a bad count.
    """
    from spendpred.errors import DataError

    count = given(ScoreParams, params, shards=shards).shards
    with working_copy(run) as run:
        run.pull("snapshot", "validation")
        manifest = run.require_validated()
    if manifest.row_count == 0:
        raise DataError(
            f"snapshot {run.location('snapshot')} holds no users: nothing to score (is the warehouse empty before {manifest.as_of}?)"
        )
    return [{**run.ref(), "shard": i, "shards": count} for i in range(count)]


def score_shard(
    run: RunRef, shard: int = 0, shards: int = 1, model: str | int | None = None, *, params: ScoreParams | None = None
) -> dict[str, Any]:
    """Score one shard of a run's validated snapshot with a registered model version.

    The model is the checked ``params.model``, or a plain ``model`` (default ``champion``)
    checked once here, before anything is pulled.

    Writes the run's ``shards/shard-<i>-of-<n>.parquet`` (user_id, predicted_spend). Users
    whose text is unchanged since the last night take their text embedding from the
    embedding cache (``spendpred.embeddings``; ``SPENDPRED_EMBEDDING_CACHE``), the rest are
    encoded, and the cache is written back. Returns the run's reference with ``rows``,
    ``model_version``, ``shard``, ``shards`` and ``encoder`` (users, cache hits and misses,
    hit rate, seconds in the encoder). Raises ``ModelError`` when there is no such model or
    its text-template version differs from the snapshot's, ``ValidationFailed`` for an
    unvalidated or changed snapshot.
    """
    ref = given(ScoreParams, params, model=model).model
    with working_copy(run) as run:
        return _score_shard(run, shard, shards, ref)


def _score_shard(run: RunFolder, shard: int, shards: int, ref: str) -> dict[str, Any]:
    """:func:`score_shard` in a working copy: pull the snapshot, score, push the shard file."""
    from spendpred import registry
    from spendpred.shards import require_same_horizon, require_same_template, score_shard_file

    run.pull("snapshot", "validation")
    manifest = run.require_validated()
    settings = get_settings()
    threads = settings.resolved_torch_threads
    spend_model, version = registry.load_model(ref)
    require_same_template(
        spend_model.meta.get("text_template_version"),
        manifest.text_template_version,
        f"{registry.REGISTERED_MODEL} version {version.version}",
    )
    require_same_horizon(
        (spend_model.meta.get("train_config") or {}).get("horizon_days"),
        settings.horizon_days,
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
    """A shard's embedding cache: its files (:meth:`files`, to sync with object storage) and :meth:`open`.

    ``buckets`` (None: all the shard's) limits the files synced to those buckets (what
    ``explain_scores`` reads: the buckets of the users it explains).
    """

    def __init__(self, key: str, shard: int, shards: int, hidden: int, max_mb: float, buckets: set[int] | None = None) -> None:
        self.key, self.shard, self.shards, self.hidden, self.max_mb = key, shard, shards, hidden, max_mb
        self.buckets = buckets

    def files(self, run: RunFolder) -> list[Any]:
        from spendpred import embeddings

        files = embeddings.shard_files(run.local_root, self.key, self.shard, self.shards)
        if self.buckets is None:
            return files
        names = {embeddings.bucket_name(b) for b in self.buckets}
        return [path for path in files if path.name in names]

    def open(self, run: RunFolder) -> Any:
        from spendpred import embeddings

        return embeddings.shard_cache(run.local_root, self.key, self.shard, self.shards, self.hidden, self.max_mb)


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

    folder = run.embedding_cache_rel(cache.key)
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


def assign_tiers(run: RunRef, shard_results: Sequence[Mapping[str, Any]], url: str | None = None) -> dict[str, Any]:
    """Gather every shard, check they cover the snapshot once with one model version, assign tiers.

    The tier rule comes from the settings (``SPENDPRED_TIER_*``: top 10% high, next 30%
    medium by default, or fixed spend thresholds). Before tiering, the scores are scaled by the
    model's trend anchor (``SPENDPRED_TREND_ANCHOR``; ``spendpred.shards.apply_anchor``), so the
    night's total follows the BG/NBD x Gamma-Gamma forecast's move since training; then by the
    level correction (``SPENDPRED_LEVEL_CORRECTION``, :func:`_level_correction`: 1 / the realized
    predicted/actual ratio of the latest matured partition of the same version, read from the
    warehouse at ``url``). Ranks, hence tiers, are kept; the thresholds scale with the scores.
    Writes the run's ``tiers.parquet`` and ``tiers.json``. Returns the run's reference with
    ``rows``, ``model_version``, ``counts``, ``thresholds``, ``encoder`` (the shards' cache
    figures added up), ``anchor`` (factor, totals and the training-time ratio) and ``level``
    (the level correction's factor, where it comes from; publishing stores it).
    """
    from spendpred import shards

    results = list(shard_results)
    count, version = shards.check_coverage(results)
    with working_copy(run) as run:
        run.pull("snapshot", only=("manifest.json",))
        for r in results:
            run.pull_set(run.staged_set("shard", int(r["shard"]), count))
        return _assign_tiers(run, results, count, version, url)


def _level_correction(as_of: dt.date, version: str, url: str | None) -> dict[str, Any]:
    """Return tonight's level correction (``monitoring.level_factor``'s result with ``enabled`` and ``reused``).

    A night already corrected for the same version (a rerun) gets its stored factor again. Off
    (``SPENDPRED_LEVEL_CORRECTION=false``): factor 1 and nothing read. A warehouse that cannot be
    read gives factor 1 with one warning and ``error`` (publishing then stores nothing for it).
    """
    from spendpred import monitoring, warehouse
    from spendpred.errors import SpendpredError

    settings = get_settings()
    if not settings.level_correction:
        return {"enabled": False, "factor": 1.0}
    try:
        with warehouse.opened_engine(url, create=False) as engine:
            stored = monitoring.read_level_corrections(engine, as_of)
            done = [r for r in stored if r["as_of"] == as_of.isoformat() and str(r["model_version"]) == str(version)]
            if done:
                row = done[0]
                return {"enabled": True, "reused": True, "factor": float(row["factor"]),
                        "unclipped_factor": row["unclipped_factor"], "based_on_as_of": row["based_on_as_of"],
                        "clipped": row["unclipped_factor"] is not None and float(row["unclipped_factor"]) != float(row["factor"])}  # fmt: skip
            rows = monitoring.read_partition_metrics(engine, as_of)
    except (SpendpredError, OSError, _sa_errors()) as exc:
        logger.warning("level correction for %s: the warehouse's realized metrics cannot be read (%s): factor 1",
                       as_of, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
        return {"enabled": True, "factor": 1.0, "error": type(exc).__name__}
    level = monitoring.level_factor(rows, stored, as_of, str(version), settings.horizon_days,
                                    settings.level_correction_partitions)  # fmt: skip
    return {"enabled": True, "reused": False, **level}


def _sa_errors() -> type[Exception]:
    """Return SQLAlchemy's base error class (imported late: the DAG files import this module)."""
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError


def _assign_tiers(
    run: RunFolder, results: list[Mapping[str, Any]], count: int, version: str, url: str | None = None
) -> dict[str, Any]:
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
    level = _level_correction(run.as_of, version, url)
    table = shards.scale_scores(table, level["factor"])
    logger.info("level correction for %s (model version %s): factor %.6f%s, from the partition as of %s%s",
                run.as_of, version, level["factor"], " (clipped)" if level.get("clipped") else "",
                level.get("based_on_as_of") or "none (none matured)" if level["enabled"] else "none (SPENDPRED_LEVEL_CORRECTION=false)",
                " (stored factor of an earlier run)" if level.get("reused") else "")  # fmt: skip
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
        "level": level,
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


def _score_factor(meta: Mapping[str, Any]) -> float:
    """Return the factor the tiers' scores were scaled by after the model: trend anchor times level correction."""
    return float((meta.get("anchor") or {}).get("factor") or 1.0) * float((meta.get("level") or {}).get("factor") or 1.0)


def _prune_remote(run: RunFolder, keep_key: str) -> None:
    """On object storage, delete every embedding cache but ``keep_key``'s (``embeddings.prune`` for a URL); errors are logged."""
    from spendpred.errors import SpendpredError
    from spendpred.staging import store

    remote = store(str(run.root))
    try:
        stale = [name for name in remote.children(run.embedding_cache_rel()) if name != keep_key]
        for name in stale:
            remote.delete_dir(run.embedding_cache_rel(name))
    except SpendpredError as exc:
        logger.warning("could not prune the embedding cache on %s (%s): a leftover cache only costs storage", remote.url, exc)
        return
    if stale:
        logger.info("embedding cache: removed %d stale keys under %s", len(stale), remote.url_of(run.embedding_cache_rel()))


def explain_scores(tiers_result: RunRef, split_text: bool | None = None) -> dict[str, Any]:
    """Attribute tonight's scores for the users in ``SPENDPRED_REASONS_SCOPE`` and write their top reasons.

    ``tiers_result`` is ``assign_tiers``' result. The scope ``default`` is the high tier and the
    users whose tier differs from the previous run's ``tiers.parquet`` in staging; ``all`` is
    everyone (``spendpred.explain.select_users``). Each user is attributed with the tiers' model
    version through the head only (``spendpred.explain.attribute_head``): the inputs are the head
    features and the user's pooled text embedding, read from the embedding cache the shards just
    wrote (or encoded, one forward pass, for a user it lacks), the trend anchor's factor included,
    so the contributions add up to the published score; the text's total is split by segment
    only with ``split_text`` (None: ``NIGHTLY_TEXT_SPLIT``, off: the text is one reason, no encoder
    pass differentiated), approximately; ``spendpred explain`` gives the exact split. Writes the run's
    ``reasons.parquet`` and ``reasons.json`` (with the SHA-256 of the ``tiers.parquet`` explained,
    so ``publish_scores`` publishes only reasons of the tiers it publishes). Returns
    ``tiers_result`` with ``reasons`` (users, rows, seconds, largest completeness gap, scope,
    method, embedding-cache hits and users encoded).
    """
    with working_copy(tiers_result) as run:
        run.pull("snapshot", "validation")
        run.pull("tiers")
        run.pull("reasons", required=False)  # a rerun's earlier reasons: what can be carried
        return _explain_scores(run, tiers_result, NIGHTLY_TEXT_SPLIT if split_text is None else bool(split_text))


def _explain_scores(run: RunFolder, tiers_result: RunRef, split_text: bool) -> dict[str, Any]:
    """:func:`explain_scores` in a working copy holding the snapshot and the tiers; pushes the reasons.

    A user whose inputs (snapshot row) and context (model version, template, method, steps, text
    split, anchor factor) have the fingerprint of a user explained by this run's earlier attempt
    or by the previous run keeps those reasons without being attributed again; the baseline
    embeddings those reasons files carry for the same model are reused too.
    """
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from spendpred import explain, registry
    from spendpred.files import read_json, sha256_file

    settings = get_settings()
    run.require_validated()
    meta = dict(tiers_result) if isinstance(tiers_result, Mapping) and "model_version" in tiers_result else read_json(run.tiers_json, "tiers result")
    tiers = pq.read_table(run.tiers_parquet, columns=["user_id", "tier"]).to_pandas()
    previous = run.previous()
    before = None
    if previous is not None and previous.pull("tiers", required=False) and previous.tiers_parquet.is_file():
        before = pq.read_table(previous.tiers_parquet, columns=["user_id", "tier"]).to_pandas()
    users = explain.select_users(tiers, before, settings.reasons_scope)
    began = time.perf_counter()
    factor = _score_factor(meta)
    context = (f"model={meta['model_version']}|template={explain.REASON_TEMPLATE_VERSION}|method=head|steps={explain.HEAD_STEPS}"
               f"|split={bool(split_text)}|factor={factor!r}")  # fmt: skip
    carried, stores = _carried_reasons([run, previous])
    parts = [explain.reasons_table([]).assign(fingerprint=_bytes_column([]), gap=[])]
    gap = 0.0
    hits = encoded = kept = fresh = 0
    baselines: dict[bytes, Any] = {}
    owner = ""
    if len(users):
        frame = pq.read_table(run.snapshot.parquet, filters=[("user_id", "in", list(users))]).to_pandas()
        frame = frame.sort_values("user_id").reset_index(drop=True)
        prints = explain.input_fingerprints(frame, context)
        same = [i for i, f in enumerate(prints) if f in carried]
        if same:
            kept_rows = carried.rows([prints[i] for i in same])
            parts.append(kept_rows)
            gap = max(gap, float(kept_rows["gap"].max()))
            kept = len(same)
        todo = [i for i in range(len(frame)) if prints[i] not in carried]
        if todo:
            model, version = registry.load_model(str(meta["model_version"]))
            explain.check_model(model)
            owner = f"{version.version}|{model.device.type}|{model.hidden_size}"
            baselines = explain.unpack_baselines(stores.get(owner), owner, model.hidden_size)
            known = len(baselines)
            sub = frame.iloc[todo].reset_index(drop=True)
            pooled, hits = _explained_pooled(run, model, str(version.version), sub, settings)
            encoded = len(sub) - hits
            attributions = explain.attribute_head(model, sub, factor=factor, pooled=pooled, split_text=split_text,
                                                  baselines=baselines)  # fmt: skip
            table = explain.reasons_table(attributions)
            by_user = {a.user_id: (prints[todo[k]], abs(a.delta)) for k, a in enumerate(attributions)}
            table["fingerprint"] = [by_user[u][0] for u in table["user_id"]]
            table["gap"] = [by_user[u][1] for u in table["user_id"]]
            parts.append(table)
            gap = max([gap, *(v[1] for v in by_user.values())])
            fresh = len(baselines) - known
    schema = _reasons_file_schema()
    table = pa.concat_tables([pa.Table.from_pandas(p, schema=schema, preserve_index=False) for p in parts])
    table = table.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    if owner:
        table = table.replace_schema_metadata({explain.BASELINES_META_KEY: explain.pack_baselines(baselines, owner)})
    elif stores:  # nothing attributed tonight: keep what was carried for the next night
        table = table.replace_schema_metadata({explain.BASELINES_META_KEY: next(iter(stores.values()))})
    seconds = time.perf_counter() - began
    tmp = run.reasons_parquet.with_name(f".{run.reasons_parquet.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(run.reasons_parquet)
    info = {"users": int(len(users)), "rows": int(table.num_rows), "seconds": round(seconds, 3), "max_gap": gap,
            "scope": settings.reasons_scope, "template_version": explain.REASON_TEMPLATE_VERSION,
            "previous": previous.as_of.isoformat() if before is not None else None,
            "method": "head", "text_split": split_text, "cache_hits": int(hits), "encoded": int(encoded),
            "carried": int(kept), "attributed": int(len(users) - kept), "baselines_encoded": int(fresh)}  # fmt: skip
    write_json_atomic(run.reasons_json, {**info, "model_version": str(meta["model_version"]),
                                          "tiers_sha256": sha256_file(run.tiers_parquet)})  # fmt: skip
    run.push("reasons")
    logger.info("reasons for %s: %d users explained (scope %s) in %.1fs (%.3fs a user; %d kept from an earlier run with "
                "the same inputs, %d pooled embeddings from the cache, %d encoded), largest completeness gap %.4f",
                run.as_of, len(users), settings.reasons_scope, seconds, seconds / max(len(users), 1), kept, hits,
                encoded, gap)  # fmt: skip
    return {**meta, **run.ref(), "reasons": info}


def _bytes_column(values: list[bytes]) -> Any:
    """A list of fingerprints as a pandas object column (an empty frame's column keeps the bytes type)."""
    import pandas as pd

    return pd.Series(values, dtype=object)


def _reasons_file_schema() -> Any:
    """``reasons.parquet``'s schema: ``explain.REASON_COLUMNS``, each user's input fingerprint and completeness gap (to carry)."""
    import pyarrow as pa

    return pa.schema([("user_id", pa.string()), ("rank", pa.int64()), ("reason", pa.string()), ("contribution", pa.float64()),
                      ("feature", pa.string()), ("fingerprint", pa.binary()), ("gap", pa.float64())])  # fmt: skip


class _Carried:
    """The reasons of earlier runs by input fingerprint (``reasons.parquet`` with its ``fingerprint`` column).

    Only an index (fingerprint to rows) is built when a file is added; rows are cut out for the
    fingerprints that match, so a night on which nothing matches (the usual next night) costs a
    pass over the fingerprints, not one frame per user.
    """

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.index: dict[bytes, tuple[int, list[int]]] = {}

    def __contains__(self, fingerprint: bytes) -> bool:
        return fingerprint in self.index

    def add(self, frame: Any) -> None:
        """Add one file's rows; a fingerprint already known (from an earlier-added file) keeps its rows."""
        number = len(self.frames)
        self.frames.append(frame.reset_index(drop=True))
        rows: dict[bytes, list[int]] = {}
        for i, fingerprint in enumerate(frame["fingerprint"].tolist()):
            rows.setdefault(bytes(fingerprint), []).append(i)
        for fingerprint, positions in rows.items():
            self.index.setdefault(fingerprint, (number, positions))

    def rows(self, fingerprints: Sequence[bytes]) -> Any:
        """The stored rows of ``fingerprints`` (each known), as one frame."""
        import pandas as pd

        by_file: dict[int, list[int]] = {}
        for fingerprint in fingerprints:
            number, positions = self.index[fingerprint]
            by_file.setdefault(number, []).extend(positions)
        return pd.concat([self.frames[n].iloc[p] for n, p in by_file.items()], ignore_index=True)


def _carried_reasons(runs: Sequence[RunFolder | None]) -> tuple[_Carried, dict[str, bytes]]:
    """The reasons ``runs`` wrote (this run's earlier attempt, the previous run), by fingerprint, and the baseline stores
    their files carry (``{owner: blob}``). An unreadable or older file (no fingerprints) is skipped: its users are
    attributed again."""
    import json

    import pyarrow.parquet as pq

    from spendpred.explain import BASELINES_META_KEY

    carried = _Carried()
    stores: dict[str, bytes] = {}
    for folder in runs:
        if folder is None:
            continue
        if folder is not runs[0] and not folder.pull("reasons", required=False):
            continue
        path = folder.reasons_parquet
        if not path.is_file():
            continue
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file only costs time
            logger.info("earlier reasons %s not read (%s): their users are attributed again", path, exc)
            continue
        blob = (table.schema.metadata or {}).get(BASELINES_META_KEY)
        if blob:
            try:
                owner = str(json.loads(blob).get("owner"))
                stores.setdefault(owner, blob)
            except ValueError:
                pass
        if "fingerprint" in table.column_names and "gap" in table.column_names:
            carried.add(table.to_pandas())
    return carried, stores


NIGHTLY_TEXT_SPLIT = False
"""Whether the nightly splits the text's total by segment (one forward and backward pass through the encoder a
user, approximate) or keeps it as one reason (``explain.TEXT_KEY``); see ``spendpred.explain.attribute_head``.
Off: the split costs about three encoder forward passes per explained user, more than a cached night's whole
encoder work when the scope is larger than the users whose text changed (bench/README.md)."""


def _explained_pooled(run: RunFolder, model: Any, version: str, frame: Any, settings: Any) -> tuple[Any, int]:
    """The pooled text embedding of each row of ``frame`` (sorted by ``user_id``) and how many came from the cache.

    Read from the embedding cache the night's shards wrote (the same key, so a row is exactly
    what scoring used; on object storage only the buckets of these users are pulled); a user it
    lacks (cache off, int8, over the size bound, damaged) is encoded with scoring's settings, one
    forward pass. Cache problems only cost time (logged, as for scoring).
    """
    import numpy as np

    from spendpred.embeddings import text_digests
    from spendpred.model.features import check_texts
    from spendpred.splits import shard_bucket

    texts = check_texts(frame, "explanation input")
    user_ids = frame["user_id"].astype(str).to_numpy(dtype=object)
    pooled = np.empty((len(frame), model.hidden_size), dtype=np.float32)
    hits = np.zeros(len(frame), dtype=bool)
    files = _shard_cache(model, version, 0, 1, settings)
    if files is not None:
        files.buckets = {int(b) for b in np.unique(shard_bucket(user_ids)).tolist()}
        if run.is_remote:
            _sync_cache(run, files, push=False)
        cache = files.open(run)
        try:
            hits, found = cache.lookup(user_ids, text_digests(texts))
            pooled[hits] = found
        finally:
            cache.discard()
    misses = np.flatnonzero(~hits)
    if len(misses):
        pooled[misses] = model.encode([texts[i] for i in misses], num_threads=settings.resolved_torch_threads)
    return pooled, int(hits.sum())


def _read_reasons(run: RunFolder, model_version: str) -> tuple[Any, str] | None:
    """The run's reasons table and template version when they explain the run's current tiers, else None (logged)."""
    import pyarrow.parquet as pq

    from spendpred.files import read_json, sha256_file

    if not run.pull("reasons", required=False) or not run.reasons_json.is_file() or not run.reasons_parquet.is_file():
        logger.info("no reasons for %s (explain_scores did not run): the partition is published without reasons", run.as_of)
        return None
    info = read_json(run.reasons_json, "reasons result")
    if info.get("tiers_sha256") != sha256_file(run.tiers_parquet) or str(info.get("model_version")) != str(model_version):
        logger.warning("reasons.parquet of %s explains other tiers (rerun explain_scores after assign_tiers): "
                       "the partition is published without reasons", run.as_of)  # fmt: skip
        return None
    from spendpred.explain import REASON_COLUMNS

    return pq.read_table(run.reasons_parquet, columns=list(REASON_COLUMNS)), str(info.get("template_version") or "v1")


def explain_user(user_id: str, as_of: dt.date | None = None, model: str | int | None = None) -> dict[str, Any]:
    """Explain one user's score of a scoring run (``spendpred explain``): prediction, tier, reasons, every contribution.

    ``as_of`` defaults to the newest scoring run in staging, ``model`` to the version that run's
    tiers were scored with (another version is attributed without the night's trend anchor).
    Raises ``DataError`` for a date without a scored run or a user not in its snapshot, and
    ``ModelError`` for an unknown version, each one line naming the fix.
    """
    import pyarrow.parquet as pq

    from spendpred import explain, registry
    from spendpred.errors import DataError
    from spendpred.files import read_json

    settings = get_settings()
    if as_of is None:
        latest = RunFolder.for_date("score", dt.date.max, settings).previous()
        if latest is None:
            raise DataError(f"no scoring run in staging ({RunFolder.for_date('score', dt.date.max, settings).location()}"
                            .replace(f"/{dt.date.max.isoformat()}", "") + "): run `spendpred score --as-of D` first")
        as_of = latest.as_of
    with working_copy(RunFolder.for_date("score", as_of, settings)) as run:
        if not run.pull("snapshot", "validation", required=False) or not run.snapshot.manifest_file.is_file():
            raise DataError(f"no scoring run as of {as_of} in staging ({run.location()}): score that date first "
                            f"(`spendpred score --as-of {as_of}`) or pick another --as-of")  # fmt: skip
        run.require_validated()
        if not run.pull("tiers", required=False) or not run.tiers_json.is_file():
            raise DataError(f"the scoring run as of {as_of} has no tiers ({run.location()}): run `spendpred score --as-of {as_of}` again")
        meta = read_json(run.tiers_json, "tiers result")
        frame = pq.read_table(run.snapshot.parquet, filters=[("user_id", "==", str(user_id))]).to_pandas()
        if frame.empty:
            raise DataError(f"user {str(user_id)[:64]!r} is not in the scoring snapshot as of {as_of}: check the user id "
                            "(users are scored once they exist in the warehouse on that date)")  # fmt: skip
        tiers = pq.read_table(run.tiers_parquet, filters=[("user_id", "==", str(user_id))]).to_pylist()
    version_ref = model if model is not None else str(meta["model_version"])
    spend_model, version = registry.load_model(check_score(model=version_ref).model)
    same = str(version.version) == str(meta["model_version"])
    factor = _score_factor(meta) if same else 1.0
    (attribution,) = explain.attribute(spend_model, frame.iloc[:1], factor=factor)
    table = explain.attribution_table(attribution)
    return {
        "user_id": str(user_id), "as_of": as_of.isoformat(), "model_version": str(version.version),
        "scored_with": str(meta["model_version"]),
        "published_spend": tiers[0]["predicted_spend"] if tiers else None, "tier": tiers[0]["tier"] if tiers else None,
        "prediction": attribution.prediction, "baseline": attribution.baseline, "gap": attribution.delta,
        "tolerance": float(explain.tolerance(attribution.prediction, attribution.baseline)),
        "template_version": explain.REASON_TEMPLATE_VERSION, "reasons": explain.reasons(attribution),
        "attributions": table.to_dict(orient="records"),
    }  # fmt: skip


LOOKUP_ID_CHARS = 64
"""Longest user id the page's lookup accepts."""


def explain_lookup(user_id: str | None) -> dict[str, Any]:
    """:func:`explain_user` for the Spend tiers page's lookup: its result, or ``{"user_id", "error"}`` with one line.

    Never raises for a bad id, an unknown user, no scoring run or no model (``SpendpredError``): the page shows the
    line instead (an empty or over-long id is refused before anything is read).
    """
    from spendpred.errors import SpendpredError

    text = (user_id or "").strip()
    if not text:
        return {"user_id": "", "error": "enter a user id to explain"}
    if len(text) > LOOKUP_ID_CHARS or not text.isprintable():
        return {"user_id": text[:LOOKUP_ID_CHARS], "error": f"a user id has at most {LOOKUP_ID_CHARS} printable characters"}
    try:
        return explain_user(text)
    except SpendpredError as exc:
        logger.info("page lookup of one user: %s", exc)
        return {"user_id": text, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


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
        explained = _read_reasons(run, str(meta["model_version"]))
    if dry_run:
        checked = publish.validate_scores(table)
        if explained:
            publish.validate_reasons(explained[0], checked)
        logger.info("dry run: %d rows for %s checked, nothing published", table.num_rows, run.as_of)
        return {"as_of": run.as_of.isoformat(), "rows": table.num_rows, "published": False}
    with warehouse.opened_engine(url) as engine:
        level = meta.get("level") or {}
        from spendpred import monitoring

        if level.get("enabled") and not level.get("error"):  # recorded first: a rerun reuses it
            monitoring.store_level_correction(engine, run.as_of, str(meta["model_version"]), level)
        elif not level.get("enabled"):  # published uncorrected: an earlier run's factor no longer holds
            try:
                monitoring.clear_level_correction(engine, run.as_of)
            except _sa_errors() as exc:
                logger.warning("could not clear the level correction of %s (%s): run `spendpred db init`",
                               run.as_of, str(exc).splitlines()[0])  # fmt: skip
        rows = publish.publish_scores(
            engine, run.as_of, table, meta["thresholds"], model_name=registry.REGISTERED_MODEL, model_version=meta["model_version"],
            reasons=explained[0] if explained else None, reason_template=explained[1] if explained else "v1",
        )
    return {"as_of": run.as_of.isoformat(), "rows": rows, "published": True}


def score(
    run: ScoreParams | dt.date,
    model: str | int | None = None,
    publish: bool | None = None,
    shards: int | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """All nightly steps in order (the ``score`` command; the nightly DAG runs them as tasks).

    ``run`` is the run's checked ``ScoreParams`` (the CLI's), or the run date with the plain
    ``model``, ``publish`` (``not dry_run``) and ``shards``, checked here once into one
    (``TypeError`` for both). Every step gets that object and checks nothing again.
    """
    dry_run = None if publish is None else not publish
    if isinstance(run, ScoreParams):
        params = given(ScoreParams, run, model=model, dry_run=dry_run, shards=shards)
    else:
        params = given(ScoreParams, None, as_of=run, model=model, dry_run=dry_run, shards=shards)
    require_as_of(params)
    snapshot = extract_scoring_snapshot(params, url)
    validate_snapshot(snapshot)
    plan = plan_shards(snapshot, params=params)
    scored = [score_shard(spec, spec["shard"], spec["shards"], params=params) for spec in plan]
    tiered = assign_tiers(snapshot, scored, url)
    explained = explain_scores(tiered)
    published = publish_scores(explained, dry_run=params.dry_run, url=url)
    return {"as_of": tiered["as_of"], "model_version": tiered["model_version"], "counts": tiered["counts"],
            "thresholds": tiered["thresholds"], "encoder": tiered["encoder"], "reasons": explained["reasons"], **published}
