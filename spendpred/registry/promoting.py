"""Applying a promotion: the gate's decision (:mod:`spendpred.promotion`, free of MLflow) written to the registry.

:func:`promote` moves the ``champion`` alias when the decision promotes, and records every
decision as version tags.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from spendpred.errors import ModelError
from spendpred.failures import is_transient_mlflow
from spendpred.promotion import (
    DEFAULT_GINI_MARGIN,
    DEFAULT_RMSE_TOLERANCE,
    PromotionDecision,
    PromotionMode,
    decide,
)
from spendpred.registry.store import (
    _NOT_FOUND_CODES,
    CHAMPION,
    REGISTERED_MODEL,
    SKIPPED_GATE_TAG,
    _client_uri,
    _unavailable,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)


def _champion_version(client: MlflowClient) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        if is_transient_mlflow(exc):
            raise _unavailable(exc, f"reading the {CHAMPION} of {REGISTERED_MODEL}", _client_uri(client)) from exc
        raise


def promote(
    client: MlflowClient,
    version: str | int,
    candidate_metrics: Mapping[str, float],
    champion_metrics_on_same_users: Mapping[str, float] | None,
    gini_margin: float = DEFAULT_GINI_MARGIN,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
    mode: PromotionMode = "auto",
    *,
    actor: str | None = None,
    reason: str | None = None,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    held_out_users: int | None = None,
    win_share: float | None = None,
    baselines_ahead: Mapping[str, Mapping[str, float]] | None = None,
    horizons: tuple[int, int] | None = None,
) -> PromotionDecision:
    """Decide with :func:`spendpred.promotion.decide` whether ``version`` becomes champion, then apply it.

    ``baselines``, ``held_out_users``, ``win_share``, ``baselines_ahead`` and ``horizons`` are passed on to the gate.

    A promoted version gets the ``champion`` alias. Every decision is written as version tags
    ``promotion`` (first, promoted, rejected, unchanged, skipped, forced), ``promotion_reason``
    and ``promotion_decided_at``; a promotion adds ``promoted_at`` and ``previous_champion``,
    ``mode="force"`` adds ``promoted_by`` (``actor``: the Airflow user who triggered the run, or
    the CLI's ``--actor``; default the OS user) and, past a failing gate, ``promotion_skipped_gate``
    (the condition it did not meet, ``PromotionDecision.skipped_gate``).

    Returns the :class:`~spendpred.promotion.PromotionDecision`. Raises ``ConfigError`` for an
    unknown mode, a negative tolerance, or missing metrics when a champion exists in auto mode;
    ``ModelError`` when the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    version = str(version)  # mode and tolerances are checked once, by decide

    try:
        client.get_model_version(REGISTERED_MODEL, version)
    except MlflowException as exc:
        if is_transient_mlflow(exc):
            raise _unavailable(exc, f"reading {REGISTERED_MODEL} version {version}", _client_uri(client)) from exc
        if exc.error_code not in _NOT_FOUND_CODES:
            raise  # refused (permissions...), not absent: failures.describe words it as a RegistryError
        raise ModelError(f"{REGISTERED_MODEL} version {version} does not exist: {exc.message}") from exc
    previous = _champion_version(client)
    actor = actor or getpass.getuser()
    decision = decide(
        version, previous, candidate_metrics, champion_metrics_on_same_users, mode, gini_margin, rmse_tolerance,
        actor=actor, reason=reason, baselines=baselines, held_out_users=held_out_users, win_share=win_share,
        baselines_ahead=baselines_ahead, horizons=horizons,
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {"promotion": decision.outcome, "promotion_reason": decision.reason[:4900], "promotion_decided_at": now}
    if decision.promoted:
        client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
        tags["promoted_at"] = now
        if previous is not None and previous != version:
            tags["previous_champion"] = previous
    if mode == "force":
        tags["promoted_by"] = actor
        if decision.skipped_gate:
            tags[SKIPPED_GATE_TAG] = decision.skipped_gate[:4900]
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    logger.info(
        "promotion of %s version %s (%s): %s - %s",
        REGISTERED_MODEL, version, mode, "PROMOTED" if decision.promoted else "not promoted", decision.reason,
    )
    return decision
