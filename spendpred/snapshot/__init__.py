"""The snapshot contract and the run folder: the one module that answers "where is X in staging?".

A *snapshot* is a folder holding ``snapshot.parquet`` (one row per user: ``user_id``, ``text``,
``FEATURE_COLUMNS``, ``past_spend`` and, for training, ``label``), its ``manifest.json`` and,
once checked, ``validation.json``/``validation.md``. ``spendpred.behaviour`` writes it,
``spendpred.validation`` checks it, everything else reads it through :class:`SnapshotDir`.

A *run folder* is where one run of one kind keeps everything it stages::

    <staging>/train/<as_of>/snapshot/                 the labelled snapshot (features as of R - H)
    <staging>/train/<as_of>/model/                    bundle/, evaluation/, test_predictions.parquet,
                                                      result.json, registered.json
    <staging>/train-window/<as_of>/snapshot/          an earlier stacked training window (never a "previous" run)
    <staging>/score/<as_of>/snapshot/                 the scoring snapshot (features as of D)
    <staging>/score/<as_of>/shards/shard-<i>-of-<n>.parquet
    <staging>/score/<as_of>/tiers.parquet, tiers.json
    <staging>/score/<as_of>/reasons.parquet, reasons.json   (explain_scores: the explained users' reasons)
    <staging>/embedding-cache/<key>/bucket-<b>-of-64.parquet (the nights' embedding cache: RunFolder.embedding_cache)

:class:`RunFolder` is built from ``(kind, as_of, root)`` with ``as_of`` a ``datetime.date``;
Airflow tasks pass :meth:`RunFolder.ref` (``{"kind", "as_of", "root"}``, plus ``"windows"``
for a training run with stacked windows; JSON) through XCom
and :meth:`RunFolder.from_ref` turns it back, reading the date once. A rerun of a date
overwrites its own folder.

The staging root comes from ``SPENDPRED_STAGING_DIR`` (a folder, a ``file://`` URL or an
object-storage URL such as ``s3://bucket/prefix``; default ``<home>/staging``), resolved by
:func:`staging_root` only. A run folder on object storage keeps the URL as its ``root`` (so a
task on another host finds it) and is read and written through a temporary local working copy
(:func:`working_copy`): a step pulls the files it reads (:meth:`RunFolder.pull`) and pushes what
it wrote (:meth:`RunFolder.push`), each set of files published atomically under a staging
manifest (``spendpred.staging``). With a local root both are no-ops.

Modules: :mod:`~spendpred.snapshot.contract` (the files and columns, ``Manifest``,
``SnapshotDir``, :func:`staged_snapshot`) and :mod:`~spendpred.snapshot.run_folder`
(``RunFolder``, ``StagedSet``, :func:`working_copy`, :func:`staging_root`). Every public name is
importable from ``spendpred.snapshot``.
"""

from __future__ import annotations

from spendpred.snapshot.contract import (
    FEATURE_COLUMNS,
    MANIFEST_FILE,
    MONEY_COLUMNS,
    REPORT_FILES,
    SNAPSHOT_FILE,
    VALIDATION_JSON,
    VALIDATION_MD,
    Manifest,
    SnapshotDir,
    check_can_create,
    snapshot_columns,
    staged_snapshot,
)
from spendpred.snapshot.run_folder import (
    BUNDLE_DIR,
    EMBEDDING_CACHE_DIR,
    EVALUATION_DIR,
    FOLDER_KINDS,
    KINDS,
    MODEL_DIR,
    REASONS_JSON,
    REASONS_PARQUET,
    REGISTERED_JSON,
    RESULT_JSON,
    SHARDS_DIR,
    STAGED_SETS,
    TEST_PREDICTIONS,
    TIERS_JSON,
    TIERS_PARQUET,
    WINDOW_KIND,
    RunFolder,
    RunRef,
    StagedSet,
    embedding_cache_dir,
    local_path,
    staging_root,
    working_copy,
)

__all__ = [
    "BUNDLE_DIR",
    "EMBEDDING_CACHE_DIR",
    "EVALUATION_DIR",
    "FEATURE_COLUMNS",
    "FOLDER_KINDS",
    "KINDS",
    "MANIFEST_FILE",
    "MODEL_DIR",
    "MONEY_COLUMNS",
    "REASONS_JSON",
    "REASONS_PARQUET",
    "REGISTERED_JSON",
    "REPORT_FILES",
    "RESULT_JSON",
    "SHARDS_DIR",
    "SNAPSHOT_FILE",
    "STAGED_SETS",
    "TEST_PREDICTIONS",
    "TIERS_JSON",
    "TIERS_PARQUET",
    "VALIDATION_JSON",
    "VALIDATION_MD",
    "WINDOW_KIND",
    "Manifest",
    "RunFolder",
    "RunRef",
    "SnapshotDir",
    "StagedSet",
    "check_can_create",
    "embedding_cache_dir",
    "local_path",
    "snapshot_columns",
    "staged_snapshot",
    "staging_root",
    "working_copy",
]
