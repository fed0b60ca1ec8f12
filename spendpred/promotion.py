"""The promotion gate: whether a newly trained version replaces the champion.

Pure decisions, no MLflow (``spendpred.registry.promote`` applies them: alias and version tags):

* :func:`rescore_champion`: the champion's metrics on the candidate's own held-out test users,
  so both are compared on the same users;
* :func:`gate`: the auto rule: the candidate's normalised Gini must exceed the champion's by
  more than ``gini_margin``, and its RMSE may be at most ``1 + rmse_tolerance`` times the
  champion's; an undefined metric never promotes;
* :func:`decide`: the whole decision for a mode (``auto``, ``never``, ``force``): the first
  version always becomes champion, ``never`` only records, ``force`` promotes regardless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spendpred.errors import ConfigError
from spendpred.params import PROMOTE_MODES, PromoteMode

if TYPE_CHECKING:
    import pandas as pd

PromotionMode = PromoteMode  # the choices are the parameter spec's (spendpred.params)
DEFAULT_GINI_MARGIN = 0.0
DEFAULT_RMSE_TOLERANCE = 0.05
GATE_METRICS: tuple[str, ...] = ("normalised_gini", "rmse")


@dataclass(frozen=True)
class PromotionDecision:
    """Whether ``version`` becomes champion, and why (``outcome`` is the ``promotion`` version tag)."""

    promoted: bool
    reason: str
    version: str
    previous_champion: str | None
    mode: str
    outcome: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the decision as a JSON-ready dict (for XCom and logs)."""
        return {
            "promoted": self.promoted, "reason": self.reason, "version": self.version,
            "previous_champion": self.previous_champion, "mode": self.mode,
        }


def check_mode(mode: str, gini_margin: float = DEFAULT_GINI_MARGIN, rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE) -> None:
    """Raise ``ConfigError`` for an unknown mode or a negative margin or tolerance."""
    if mode not in PROMOTE_MODES:
        raise ConfigError(f"promote mode={mode!r} is not supported: use 'auto', 'never' or 'force'")
    if rmse_tolerance < 0 or gini_margin < 0:
        raise ConfigError(f"rmse_tolerance={rmse_tolerance} and gini_margin={gini_margin} must both be >= 0")


def _gate_numbers(metrics: Mapping[str, float | None], what: str) -> tuple[float, float]:
    missing = [key for key in GATE_METRICS if key not in metrics]
    if missing:
        raise ConfigError(f"{what} lacks {missing}: pass the dict returned by spendpred.metrics.evaluate")

    def number(key: str) -> float:  # None (an undefined metric read back from JSON) -> nan
        value = metrics[key]
        return float("nan") if value is None else float(value)

    return number("normalised_gini"), number("rmse")


def gate(
    candidate: Mapping[str, float | None],
    champion: Mapping[str, float | None],
    gini_margin: float = DEFAULT_GINI_MARGIN,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
) -> tuple[bool, str]:
    """Return ``(passes, reason)`` of the auto-promotion rule on metrics of the same test users.

    Raises ``ConfigError`` when either side lacks ``normalised_gini`` or ``rmse``.
    """
    cand_gini, cand_rmse = _gate_numbers(candidate, "candidate_metrics")
    champ_gini, champ_rmse = _gate_numbers(champion, "champion_metrics_on_same_users")
    if not all(math.isfinite(value) for value in (cand_gini, cand_rmse, champ_gini, champ_rmse)):
        return False, (
            f"a metric is undefined (candidate normalised_gini={cand_gini}, rmse={cand_rmse}; "
            f"champion normalised_gini={champ_gini}, rmse={champ_rmse}): not promoted"
        )
    rmse_limit = champ_rmse * (1.0 + rmse_tolerance)
    facts = (
        f"normalised Gini {cand_gini:.4f} vs champion {champ_gini:.4f} (margin {gini_margin}), "
        f"RMSE {cand_rmse:.4f} vs limit {rmse_limit:.4f} (champion {champ_rmse:.4f} + {rmse_tolerance:.0%})"
    )
    if cand_gini <= champ_gini + gini_margin:
        return False, f"does not beat the champion on normalised Gini: {facts}"
    if cand_rmse > rmse_limit:
        return False, f"loses too much on RMSE: {facts}"
    return True, f"beats the champion: {facts}"


def decide(
    version: str | int,
    previous_champion: str | None,
    candidate_metrics: Mapping[str, float | None],
    champion_metrics_on_same_users: Mapping[str, float | None] | None,
    mode: str = "auto",
    gini_margin: float = DEFAULT_GINI_MARGIN,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
    *,
    actor: str = "unknown",
    reason: str | None = None,
) -> PromotionDecision:
    """Return the promotion decision for ``version`` given the current champion (``None``: none yet).

    ``auto``: the first version becomes champion, the champion itself stays, any other version
    must pass :func:`gate`; ``never`` records only; ``force`` promotes, naming ``actor`` and
    ``reason``. Raises ``ConfigError`` for an unknown mode, a negative tolerance, or missing
    champion metrics when a gate is needed.
    """
    check_mode(mode, gini_margin, rmse_tolerance)
    version = str(version)
    if mode == "never":
        promoted, outcome, why = False, "skipped", "promotion disabled (--promote never)"
    elif mode == "force":
        promoted, outcome, why = True, "forced", f"forced by {actor}: {reason or 'no reason given'}"
    elif previous_champion is None:
        promoted, outcome, why = True, "first", "first version: becomes champion"
    elif previous_champion == version:
        promoted, outcome, why = False, "unchanged", f"version {version} is already the champion"
    else:
        if champion_metrics_on_same_users is None:
            raise ConfigError(
                f"version {previous_champion} is champion but champion_metrics_on_same_users is None: evaluate "
                "load_model('champion') on the same test users, or use mode='force'"
            )
        promoted, why = gate(candidate_metrics, champion_metrics_on_same_users, gini_margin, rmse_tolerance)
        outcome = "promoted" if promoted else "rejected"
    return PromotionDecision(promoted, why, version, previous_champion, mode, outcome)


def rescore_champion(champion: Any, snapshot: pd.DataFrame, test_user_ids: Sequence[str]) -> dict[str, float]:
    """Return the champion's metrics on the candidate's held-out test users.

    ``champion`` has ``predict(frame) -> predicted spend`` (a ``SpendModel``); ``snapshot`` is
    the labelled training snapshot the candidate was tested on; ``test_user_ids`` its test
    users. Raises ``KeyError`` when a test user is not in the snapshot.
    """
    from spendpred import metrics

    test = snapshot.set_index("user_id").loc[list(test_user_ids)].reset_index()
    return metrics.evaluate(test["label"].to_numpy(), champion.predict(test))
