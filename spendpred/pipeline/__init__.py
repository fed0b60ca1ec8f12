"""The pipeline steps that both front ends call: the Airflow DAGs and the ``spendpred`` CLI.

One module per job: ``admin`` (schema, grants, loading data, summaries), ``snapshots`` (extract
and validate, shared by both jobs), ``retrain`` (the weekly retraining DAG's steps),
``nightly`` (the nightly scoring DAG's steps) and ``monitoring`` (realized performance and
drift after publishing). A run's parameters are checked once where it enters
(``spendpred.params``: the CLI command, the DAG's first task, or ``train``/``score`` for a
Python caller) and every step takes the checked object; a step reads its inputs, calls the
domain functions (``splits``, ``promotion``, ``shards``, ``tiers``, ``publish``...) and writes
its outputs. Dates arrive as ``datetime.date`` (the front ends parse them); steps after an
extract take the run folder (``spendpred.snapshot.RunFolder``) or its JSON reference ``{"kind",
"as_of", "root"}``, and return small JSON-able metadata fit for XCom. Heavy imports happen
inside the steps.
"""

from __future__ import annotations

from spendpred.pipeline.admin import (
    append_day,
    grant_readonly,
    import_cdnow,
    init_warehouse,
    run_summary,
    seed,
    warehouse_summary,
)
from spendpred.pipeline.monitoring import check_drift, evaluate_matured, monitor, monitor_scores
from spendpred.pipeline.nightly import (
    assign_tiers,
    explain_scores,
    explain_user,
    extract_scoring_snapshot,
    plan_shards,
    publish_scores,
    score,
    score_shard,
)
from spendpred.pipeline.retrain import (
    evaluate_and_register,
    extract_training_snapshot,
    promote_model,
    train,
    train_model,
)
from spendpred.pipeline.snapshots import extract_snapshot, validate_snapshot

__all__ = [
    "assign_tiers",
    "check_drift",
    "evaluate_matured",
    "evaluate_and_register",
    "explain_scores",
    "explain_user",
    "extract_scoring_snapshot",
    "extract_snapshot",
    "extract_training_snapshot",
    "grant_readonly",
    "import_cdnow",
    "init_warehouse",
    "monitor",
    "monitor_scores",
    "plan_shards",
    "promote_model",
    "publish_scores",
    "run_summary",
    "score",
    "score_shard",
    "seed",
    "append_day",
    "train",
    "train_model",
    "validate_snapshot",
    "warehouse_summary",
]
