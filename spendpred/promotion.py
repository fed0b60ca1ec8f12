"""The promotion gate: whether a newly trained version replaces the champion.

Pure decisions, no MLflow (``spendpred.registry.promote`` applies them: alias and version tags):

* :func:`beats_baselines`: the candidate must rank at least as well as the simple rules a
  team would otherwise use (past spend, gradient-boosted trees) on the same held-out users,
  on normalised Gini **and** top-10% capture; with per-user predictions at hand
  (:func:`baseline_ahead_shares`) it loses where a baseline is ahead in at least
  ``CONFIDENCE`` of paired bootstrap draws; this applies to the first version too;
* :func:`rescore_champion` / :func:`paired_win_share`: the champion re-scored on the same
  held-out users (fixed by user hash, ``splits.split_frame``), and the share of paired
  bootstrap draws of those users in which the candidate's normalised Gini is higher;
* :func:`gate`: the auto rule against a champion: the candidate wins in at least
  ``CONFIDENCE`` of the draws (so a lucky handful of users never replaces a better model)
  and by more than ``gini_margin`` on the point estimate, and its RMSE may be at most
  ``1 + rmse_tolerance`` times the champion's; an undefined metric never promotes;
* :func:`decide`: the whole decision for a mode (``auto``, ``never``, ``force``): with fewer
  than ``MIN_HELD_OUT_USERS`` held-out users nothing is promoted automatically; ``never``
  only records; ``force`` promotes regardless, and says so.

A candidate that is not promoted stays registered with the ``challenger`` alias, and the
reason is recorded on its version.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
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
BASELINES_TO_BEAT: tuple[str, ...] = ("past_spend", "gbt_numeric")
"""Baselines (keys of the training run's evaluation) a candidate must not rank worse than."""
BASELINE_METRICS: tuple[str, ...] = ("normalised_gini", "top10_capture")
MIN_HELD_OUT_USERS = 100
"""Below this many held-out users a comparison decides nothing: not promoted automatically."""
CONFIDENCE = 0.8
"""Share of paired bootstrap draws the candidate must win against the champion."""
BOOTSTRAP_DRAWS = 200


@dataclass(frozen=True)
class PromotionDecision:
    """Whether ``version`` becomes champion, and why (``outcome`` is the ``promotion`` version tag)."""

    promoted: bool
    reason: str
    version: str
    previous_champion: str | None
    mode: str
    outcome: str = ""
    skipped_gate: str | None = None
    """A forced promotion only: the gate condition the version did not meet (what ``auto`` would have
    refused it for), or the champion comparison that force does not run; ``None`` when it passed."""

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


def beats_baselines(
    candidate: Mapping[str, float | None],
    baselines: Mapping[str, Mapping[str, float | None]],
    ahead: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[bool, str]:
    """Return ``(passes, reason)``: whether the candidate ranks at least as well as every baseline
    in ``BASELINES_TO_BEAT`` on every metric in ``BASELINE_METRICS`` (same held-out users).

    With ``ahead`` (:func:`baseline_ahead_shares`: per baseline and metric, the share of
    paired bootstrap draws in which the baseline is ahead) the candidate loses only where a
    baseline is ahead in at least ``CONFIDENCE`` of the draws, so a difference within the
    noise of a few hundred users blocks nothing; without it the point estimates decide. A
    baseline missing from ``baselines`` is skipped; an undefined candidate metric fails.
    """
    losses, facts = [], []
    for name in BASELINES_TO_BEAT:
        if name not in baselines:
            continue
        for key in BASELINE_METRICS:
            ours, theirs = candidate.get(key), baselines[name].get(key)
            if theirs is None or not math.isfinite(float(theirs)):
                continue
            fact = f"{key} {float(ours) if ours is not None else float('nan'):.4f} vs {name} {float(theirs):.4f}"
            share = (ahead or {}).get(name, {}).get(key)
            if share is not None:
                fact += f" ({name} ahead in {share:.0%} of paired draws)"
            facts.append(fact)
            undefined = ours is None or not math.isfinite(float(ours))
            behind = share >= CONFIDENCE if share is not None else (undefined or float(ours) < float(theirs))
            if undefined or behind:
                losses.append(fact)
    if losses:
        return False, "does not beat the simple baselines on the same held-out users: " + "; ".join(losses)
    if not facts:
        return True, "no baseline to compare with"
    if ahead:
        return True, f"no simple baseline is reliably ahead (in {CONFIDENCE:.0%} of paired draws): " + "; ".join(facts)
    return True, "beats the simple baselines: " + "; ".join(facts)


_OURS = "the candidate"
"""The candidate's key among the models of :func:`baseline_ahead_shares`' bootstrap (never a baseline's name)."""


def baseline_ahead_shares(
    y_true: Sequence[float], candidate: Sequence[float], baselines: Mapping[str, Sequence[float]],
    draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Return, per baseline and per metric of ``BASELINE_METRICS``, the share of paired bootstrap
    draws (``metrics.paired_bootstrap``: users resampled, every model on the same draw) in which the
    baseline is strictly ahead; a draw without spend is one where no one is ahead; nan without users."""
    from spendpred import metrics

    scores = {key: metrics.BOOTSTRAP_METRICS[key] for key in BASELINE_METRICS}
    drawn = metrics.paired_bootstrap(y_true, {**baselines, _OURS: candidate}, draws, seed, scores)
    return {
        name: {key: metrics.share_ahead(drawn[name][key], drawn[_OURS][key]) for key in BASELINE_METRICS}
        for name in baselines
    }


def paired_win_share(
    y_true: Sequence[float], candidate: Sequence[float], champion: Sequence[float],
    draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
) -> float:
    """Return the share of paired bootstrap draws (``metrics.paired_bootstrap``: users resampled, both
    models on the same draw) in which the candidate's normalised Gini is higher than the champion's; a
    draw without spend is not a win; nan without users."""
    from spendpred import metrics

    scores = {"normalised_gini": metrics.normalised_gini}
    drawn = metrics.paired_bootstrap(y_true, {"candidate": candidate, "champion": champion}, draws, seed, scores)
    return metrics.share_ahead(drawn["candidate"]["normalised_gini"], drawn["champion"]["normalised_gini"])


def gate(
    candidate: Mapping[str, float | None],
    champion: Mapping[str, float | None],
    gini_margin: float = DEFAULT_GINI_MARGIN,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
    win_share: float | None = None,
) -> tuple[bool, str]:
    """Return ``(passes, reason)`` of the auto-promotion rule on metrics of the same test users.

    ``win_share`` (:func:`paired_win_share`), when given, must be at least ``CONFIDENCE``.
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
    if win_share is not None:
        facts += f", wins {win_share:.0%} of {BOOTSTRAP_DRAWS} paired bootstrap draws (needs {CONFIDENCE:.0%})"
    if cand_gini <= champ_gini + gini_margin:
        return False, f"does not beat the champion on normalised Gini: {facts}"
    if win_share is not None and not win_share >= CONFIDENCE:
        return False, f"does not beat the champion reliably on the held-out users: {facts}"
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
    baselines: Mapping[str, Mapping[str, float | None]] | None = None,
    held_out_users: int | None = None,
    win_share: float | None = None,
    baselines_ahead: Mapping[str, Mapping[str, float]] | None = None,
    horizons: tuple[int, int] | None = None,
) -> PromotionDecision:
    """Return the promotion decision for ``version`` given the current champion (``None``: none yet).

    ``auto``: nothing is promoted when ``horizons`` (the days the version was trained to predict,
    the days the nightly scores over: ``SPENDPRED_HORIZON_DAYS``) differ, since the nightly refuses
    such a champion (``shards.require_same_horizon``); nor on fewer than ``MIN_HELD_OUT_USERS`` held-out users (when
    ``held_out_users`` is given) or when the candidate loses to a baseline
    (:func:`beats_baselines`, first version included); then the first version becomes
    champion, the champion itself stays, and any other version must pass :func:`gate`.
    ``never`` records only; ``force`` promotes, naming ``actor`` and ``reason`` (and what the
    gate would have said, see :func:`skipped_gate`). Raises ``ConfigError`` for an unknown mode, a negative tolerance,
    or missing champion metrics when a gate is needed.
    """
    check_mode(mode, gini_margin, rmse_tolerance)  # the decision's one check (force's look at auto checks nothing again)
    return _decide(
        str(version), previous_champion, candidate_metrics, champion_metrics_on_same_users, mode, gini_margin,
        rmse_tolerance, actor=actor, reason=reason, baselines=baselines, held_out_users=held_out_users,
        win_share=win_share, baselines_ahead=baselines_ahead, horizons=horizons,
    )  # fmt: skip


def _decide(
    version: str,
    previous_champion: str | None,
    candidate_metrics: Mapping[str, float | None],
    champion_metrics_on_same_users: Mapping[str, float | None] | None,
    mode: PromoteMode,
    gini_margin: float,
    rmse_tolerance: float,
    *,
    actor: str,
    reason: str | None,
    baselines: Mapping[str, Mapping[str, float | None]] | None,
    held_out_users: int | None,
    win_share: float | None,
    baselines_ahead: Mapping[str, Mapping[str, float]] | None,
    horizons: tuple[int, int] | None = None,
) -> PromotionDecision:
    """:func:`decide` with ``mode``, ``gini_margin`` and ``rmse_tolerance`` already checked (``check_mode``)."""
    if mode == "never":
        return PromotionDecision(False, "promotion disabled (--promote never)", version, previous_champion, mode, "skipped")
    if mode == "force":
        auto = functools.partial(
            _decide, version, previous_champion, candidate_metrics, champion_metrics_on_same_users, "auto", gini_margin,
            rmse_tolerance, actor=actor, reason=reason, baselines=baselines, held_out_users=held_out_users,
            win_share=win_share, baselines_ahead=baselines_ahead, horizons=horizons,
        )  # fmt: skip
        said, skipped = skipped_gate(auto, previous_champion)
        why = f"forced by {actor}: {reason or 'no reason given'}" + (f" (gate: {said})" if said else "")
        return PromotionDecision(True, why, version, previous_champion, mode, "forced", skipped)
    if previous_champion == version:
        return PromotionDecision(False, f"version {version} is already the champion", version, previous_champion, mode, "unchanged")
    if horizons is not None and int(horizons[0]) != int(horizons[1]):
        why = (f"trained to predict {int(horizons[0])} days of spend but the nightly scores over "
               f"SPENDPRED_HORIZON_DAYS={int(horizons[1])}, and would refuse it: retrain with horizon={int(horizons[1])}, "
               f"or set SPENDPRED_HORIZON_DAYS={int(horizons[0])} everywhere first")
        return PromotionDecision(False, why, version, previous_champion, mode, "rejected")
    if held_out_users is not None and held_out_users < MIN_HELD_OUT_USERS:
        why = (f"only {held_out_users} held-out users: at least {MIN_HELD_OUT_USERS} are needed to decide; "
               "train on a warehouse with more users, or promote by hand with promote=force")
        return PromotionDecision(False, why, version, previous_champion, mode, "rejected")
    against = ""
    if baselines:
        passes, why = beats_baselines(candidate_metrics, baselines, baselines_ahead)
        if not passes:
            return PromotionDecision(False, why, version, previous_champion, mode, "rejected")
        against = f"; {why}"
    if previous_champion is None:
        return PromotionDecision(True, f"first version: becomes champion{against}", version, previous_champion, mode, "first")
    if champion_metrics_on_same_users is None:
        raise ConfigError(
            f"version {previous_champion} is champion but champion_metrics_on_same_users is None: evaluate "
            "load_model('champion') on the same test users, or use mode='force'"
        )
    promoted, why = gate(candidate_metrics, champion_metrics_on_same_users, gini_margin, rmse_tolerance, win_share)
    return PromotionDecision(promoted, why + against, version, previous_champion, mode, "promoted" if promoted else "rejected")


def skipped_gate(auto: Callable[[], PromotionDecision], previous_champion: str | None) -> tuple[str | None, str | None]:
    """Return ``(what the gate said, the condition a forced promotion skipped)`` for the ``auto`` decision.

    ``auto`` makes the same decision in ``auto`` mode. The second item is its reason when it
    would not promote (too few held-out users, a baseline ahead, the champion not beaten), or
    names the champion comparison when the champion was not re-scored (force does not re-score
    it); ``None`` when the version would have passed. Raises nothing of its own.
    """
    try:
        decision = auto()
    except ConfigError:  # a champion exists but was not re-scored on the same users
        return None, f"the comparison with champion version {previous_champion} (not run: a forced promotion does not re-score it)"
    if decision.outcome == "unchanged":
        return None, None
    return decision.reason, None if decision.promoted else decision.reason


def rescore_champion(
    champion: Any, snapshot: pd.DataFrame, test_user_ids: Sequence[str]
) -> tuple[dict[str, float], Any]:
    """Return the champion's metrics on the held-out test users and its predictions (in their order).

    ``champion`` has ``predict(frame) -> predicted spend`` (a ``SpendModel``); ``snapshot`` is
    the labelled training snapshot the candidate was tested on; ``test_user_ids`` its
    held-out users. Raises ``KeyError`` when a test user is not in the snapshot.
    """
    from spendpred import metrics

    test = snapshot.set_index("user_id").loc[list(test_user_ids)].reset_index()
    predicted = champion.predict(test)
    return metrics.evaluate(test["label"].to_numpy(), predicted), predicted
