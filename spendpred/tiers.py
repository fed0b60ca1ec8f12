"""Purchasing-power tiers (high / medium / low) from one run's predicted spend.

Two rules:

* ``quantile`` (default): the top ``high`` share of users (10%) is *high*, the next
  ``medium`` share (30%) *medium*, the rest *low*.
* ``threshold``: fixed spend cut-offs, *high* iff ``score >= high_min``, *medium* iff
  ``medium_min <= score < high_min``, *low* otherwise.

Either way the result is expressed as **score cut values**, so the tier of a user depends
on their score alone and users with equal scores always share a tier. Every tier is a
half-open interval ``[lower_bound, upper_bound)``; ``None`` is an open end (no upper bound
for *high*, no lower bound for *low*).

Quantile rule, exactly: let ``n`` be the number of users and ``d`` the scores sorted in
descending order. The high cut is ``d[k_high - 1]`` with ``k_high = ceil(high * n)`` (at
least 1), the medium cut is ``d[k_hm - 1]`` with ``k_hm = ceil((high + medium) * n)``
(clamped to ``[k_high, n]``). Equivalently: a user is *high* iff fewer than ``high * n``
users score strictly more than they do, *medium* iff (not high and) fewer than
``(high + medium) * n`` users score strictly more. Consequences:

* ties at a boundary go to the upper tier, so a tier can hold more than its share;
  a tier whose cut equals the cut above it is empty (e.g. all scores equal: everyone high);
* a share is rounded up (``ceil``): 15 users give 2 high users, never 1;
* nothing is tiered up for spending nothing: a cut at or below 0 rises to the smallest
  positive score, so a score of 0 is always *low* (when 70% of users spent nothing, the
  true *medium* tier holds the remaining 20% of spenders, not every zero tied at the cut;
  when no score is positive at all, the ties-up rule alone applies);
* tiny populations: 0 users give no tiers and no thresholds; 1 user is high; 2 users with
  different scores are one high and one low (the second user has 50% of users above it,
  which is not within the top 40%); 2 users with equal scores are both high.

The same function and the settings' rule (:func:`rule_from_settings`) tier both the
published scores and, in evaluation (``spendpred.metrics``), true and predicted spend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from spendpred.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

TIERS: tuple[str, ...] = ("high", "medium", "low")
"""Tier names, best first: the order of thresholds, counts, reports and confusion matrices."""
MODES: tuple[str, ...] = ("quantile", "threshold")
# Tolerance for floating-point error in ``share * n`` (0.7 * 10 = 7.000000000000001).
_SHARE_EPS = 1e-9


@dataclass(frozen=True)
class TierRule:
    """How a run's scores are bucketed into tiers; validated on construction.

    ``mode="quantile"`` uses ``high`` and ``medium`` (shares of users, each in (0, 1),
    ``high + medium <= 1``). ``mode="threshold"`` uses ``high_min`` and ``medium_min``
    (spend amounts, ``high_min > medium_min >= 0``). Raises ``ConfigError`` naming the field.
    """

    mode: Literal["quantile", "threshold"] = "quantile"
    high: float = 0.10
    medium: float = 0.30
    high_min: float | None = None
    medium_min: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"tier rule field 'mode' is {self.mode!r}: use one of {', '.join(MODES)}")
        high = _number("high", self.high)
        medium = _number("medium", self.medium)
        if not 0.0 < high < 1.0:
            raise ConfigError(f"tier rule field 'high' is {self.high!r}: the share of high users must be in (0, 1), e.g. 0.10")
        if not 0.0 < medium < 1.0:
            raise ConfigError(
                f"tier rule field 'medium' is {self.medium!r}: the share of medium users must be in (0, 1), e.g. 0.30"
            )
        if high + medium > 1.0 + _SHARE_EPS:
            raise ConfigError(
                f"tier rule fields 'high' + 'medium' = {high + medium:g} exceed 1: lower one of them"
            )
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "medium", medium)
        if self.mode == "quantile":
            for name in ("high_min", "medium_min"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"tier rule field '{name}' is set but mode is 'quantile': "
                        "set mode='threshold' to use fixed spend thresholds, or drop it"
                    )
            return
        if self.high_min is None or self.medium_min is None:
            missing = "high_min" if self.high_min is None else "medium_min"
            raise ConfigError(f"tier rule field '{missing}' is required with mode='threshold' (a spend amount >= 0)")
        high_min = _number("high_min", self.high_min)
        medium_min = _number("medium_min", self.medium_min)
        if medium_min < 0:
            raise ConfigError(f"tier rule field 'medium_min' is {self.medium_min!r}: it must be >= 0")
        if not high_min > medium_min:
            raise ConfigError(
                f"tier rule field 'high_min' is {self.high_min!r}: it must be greater than medium_min={self.medium_min!r}"
            )
        object.__setattr__(self, "high_min", high_min)
        object.__setattr__(self, "medium_min", medium_min)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TierRule:
        """Return a rule built from a mapping (e.g. parsed settings); unknown keys raise ``ConfigError``."""
        allowed = {"mode", "high", "medium", "high_min", "medium_min"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ConfigError(f"unknown tier rule field(s) {unknown}: use {sorted(allowed)}")
        return cls(**dict(values))

    def describe(self) -> str:
        """Return the rule in one line of prose, e.g. for a report."""
        if self.mode == "threshold":
            return (
                f"high if spend >= {self.high_min:g}, medium if >= {self.medium_min:g}, low otherwise"
            )
        return (
            f"top {self.high:.0%} of users high, next {self.medium:.0%} medium, rest low "
            "(shares rounded up; equal values share a tier, the upper one at a boundary)"
        )


def rule_from_settings() -> TierRule:
    """Return the tier rule of the current settings (``SPENDPRED_TIER_*``): the rule production publishes with.

    Raises ``ConfigError`` when the settings hold an invalid rule.
    """
    from spendpred.config import get_settings  # settings are read now, not at import

    return TierRule.from_mapping(get_settings().tier_rule_values())


@dataclass(frozen=True)
class Threshold:
    """One tier's score interval ``[lower_bound, upper_bound)``; ``None`` is an open end."""

    tier: str
    lower_bound: float | None
    upper_bound: float | None

    def contains(self, score: float) -> bool:
        """Return whether ``score`` falls in this tier's interval."""
        if self.lower_bound is not None and score < self.lower_bound:
            return False
        return self.upper_bound is None or score < self.upper_bound

    def as_dict(self) -> dict[str, Any]:
        """Return ``{"tier", "lower_bound", "upper_bound"}``."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Threshold:
        """Return the threshold of a published row ``{"tier", "lower_bound", "upper_bound", ...}`` (other keys ignored)."""
        low, high = values.get("lower_bound"), values.get("upper_bound")
        return cls(str(values["tier"]), None if low is None else float(low), None if high is None else float(high))


def tier_of(score: float, thresholds: Iterable[Threshold | Mapping[str, Any]]) -> str | None:
    """Return the tier whose interval holds ``score`` (:meth:`Threshold.contains`), ``None`` when none does.

    ``thresholds`` are ``Threshold`` objects or published rows (:meth:`Threshold.from_mapping`).
    """
    for item in thresholds:
        threshold = item if isinstance(item, Threshold) else Threshold.from_mapping(item)
        if threshold.contains(score):
            return threshold.tier
    return None


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"tier rule field '{field}' is {value!r}: it must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"tier rule field '{field}' is {value!r}: it must be finite")
    return number


def share_count(share: float, n: int) -> int:
    """Return how many of ``n`` users make up the top ``share``: ``ceil(share * n)`` in ``[0, n]``.

    Tolerant of float error (``0.7 * 10`` counts 7 users, not 8). The quantile rule and the
    ranking metrics (``spendpred.metrics.top_k_capture``) both count users this way.
    """
    return min(n, max(0, math.ceil(share * n - _SHARE_EPS)))


def _cuts(scores: np.ndarray, rule: TierRule) -> tuple[float, float] | None:
    """Return ``(high_cut, medium_cut)`` for the rule, or ``None`` for an empty quantile run."""
    if rule.mode == "threshold":
        assert rule.high_min is not None and rule.medium_min is not None  # validated
        return rule.high_min, rule.medium_min
    n = scores.size
    if n == 0:
        return None
    descending = np.sort(scores)[::-1]
    k_high = max(1, share_count(rule.high, n))
    k_hm = max(k_high, share_count(rule.high + rule.medium, n))
    positive = scores[scores > 0]

    def cut(value: float) -> float:  # a zero score is never tiered up (unless no score is positive)
        return value if value > 0 or not positive.size else float(positive.min())

    return cut(float(descending[k_high - 1])), cut(float(descending[k_hm - 1]))


def assign_tiers(
    scores: np.ndarray, rule: TierRule | None = None, *, quiet: bool = False
) -> tuple[np.ndarray, list[Threshold]]:
    """Bucket scores into tiers; see the module docstring for the exact rule.

    Returns ``(tiers, thresholds)``: ``tiers`` is an array of ``"high"|"medium"|"low"``
    aligned with ``scores``; ``thresholds`` holds one ``Threshold`` per tier in the order
    high, medium, low (empty for a quantile rule over zero users). ``rule`` defaults to
    ``TierRule()`` (10% / 30%). The cuts and counts are logged at INFO, at DEBUG when
    ``quiet`` (evaluation tiers many arrays). Raises ``DataError`` when ``scores`` is not
    one-dimensional or holds NaN or infinite values.
    """
    rule = rule or TierRule()
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise DataError(f"scores must be a one-dimensional array, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(
            f"{bad.size} score(s) are NaN or infinite (first at position {int(bad[0])}: {values[bad[0]]!r}); "
            "fix the scorer output before assigning tiers"
        )
    tiers = np.full(values.size, "low", dtype="<U6")
    cuts = _cuts(values, rule)
    if cuts is None:
        logger.log(logging.DEBUG if quiet else logging.INFO, "no scores: no tiers assigned")
        return tiers, []
    high_cut, medium_cut = cuts
    tiers[(values >= medium_cut) & (values < high_cut)] = "medium"
    tiers[values >= high_cut] = "high"
    thresholds = [
        Threshold("high", high_cut, None),
        Threshold("medium", medium_cut, high_cut),
        Threshold("low", None, medium_cut),
    ]
    counts = tier_counts(tiers)
    logger.log(
        logging.DEBUG if quiet else logging.INFO,
        "tiers (%s): high >= %.4f (%d), medium >= %.4f (%d), low (%d)",
        rule.mode,
        high_cut,
        counts["high"],
        medium_cut,
        counts["medium"],
        counts["low"],
    )
    return tiers, thresholds


def tier_counts(tiers: np.ndarray) -> dict[str, int]:
    """Return ``{"high": n, "medium": n, "low": n}`` for an array of tier labels."""
    labels, counts = np.unique(np.asarray(tiers), return_counts=True)
    found = {str(label): int(count) for label, count in zip(labels, counts)}
    return {tier: found.get(tier, 0) for tier in TIERS}
