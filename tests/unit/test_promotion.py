"""The promotion gate and decision, by their public names (no MLflow: ``registry.promote`` applies them)."""

from __future__ import annotations

import pandas as pd
import pytest

from spendpred import metrics
from spendpred.errors import ConfigError
import numpy as np

from spendpred.promotion import MIN_HELD_OUT_USERS, beats_baselines, check_mode, decide, gate, paired_win_share, rescore_champion

CHAMPION = {"normalised_gini": 0.60, "rmse": 10.0}
BETTER = {"normalised_gini": 0.62, "rmse": 10.4}
WORSE = {"normalised_gini": 0.55, "rmse": 9.0}


@pytest.mark.parametrize(
    ("candidate", "champion", "promoted", "why"),
    [
        # Gini 0.62 > 0.60 and RMSE 10.4 <= 10 * 1.05 = 10.5 -> promoted
        ({"normalised_gini": 0.62, "rmse": 10.4}, {"normalised_gini": 0.60, "rmse": 10.0}, True, "beats"),
        # RMSE 10.6 > 10.5 -> rejected despite the better Gini
        ({"normalised_gini": 0.62, "rmse": 10.6}, {"normalised_gini": 0.60, "rmse": 10.0}, False, "RMSE"),
        # equal Gini is not "beating" the champion
        ({"normalised_gini": 0.60, "rmse": 9.0}, {"normalised_gini": 0.60, "rmse": 10.0}, False, "Gini"),
        # an undefined metric never promotes
        ({"normalised_gini": float("nan"), "rmse": 9.0}, {"normalised_gini": 0.6, "rmse": 10.0}, False, "undefined"),
        # None is how JSON stores an undefined metric
        ({"normalised_gini": None, "rmse": 9.0}, {"normalised_gini": 0.6, "rmse": 10.0}, False, "undefined"),
    ],
)
def test_gate_rule(candidate: dict, champion: dict, promoted: bool, why: str) -> None:
    passes, reason = gate(candidate, champion, gini_margin=0.0, rmse_tolerance=0.05)
    assert passes is promoted
    assert why in reason


def test_gate_margin_and_defaults() -> None:
    # 0.62 does not exceed 0.60 + margin 0.05
    assert not gate(BETTER, CHAMPION, 0.05, 0.05)[0]
    assert gate(BETTER, CHAMPION)[0]  # defaults: no margin, 5% RMSE tolerance


def test_gate_needs_both_metrics() -> None:
    with pytest.raises(ConfigError, match=r"candidate_metrics lacks \['rmse'\]"):
        gate({"normalised_gini": 0.7}, CHAMPION)
    with pytest.raises(ConfigError, match="champion_metrics_on_same_users lacks"):
        gate(BETTER, {})


@pytest.mark.parametrize(
    ("mode", "previous", "candidate", "promoted", "outcome"),
    [
        ("auto", None, WORSE, True, "first"),  # the first version always becomes champion
        ("auto", "3", WORSE, False, "unchanged"),  # the champion itself
        ("auto", "2", BETTER, True, "promoted"),
        ("auto", "2", WORSE, False, "rejected"),
        ("never", None, BETTER, False, "skipped"),  # never: only recorded, even the first
        ("force", "2", WORSE, True, "forced"),
    ],
)
def test_decide_per_mode(mode: str, previous: str | None, candidate: dict, promoted: bool, outcome: str) -> None:
    decision = decide(3, previous, candidate, CHAMPION, mode, actor="ops", reason="rollback")
    assert (decision.promoted, decision.outcome, decision.version, decision.previous_champion) == (promoted, outcome, "3", previous)
    assert decision.as_dict() == {
        "promoted": promoted, "reason": decision.reason, "version": "3", "previous_champion": previous, "mode": mode,
    }
    if mode == "force":  # the champion beats it: recorded as the gate condition the override skipped
        assert decision.reason.startswith("forced by ops: rollback (gate: does not beat the champion on normalised Gini")
        assert decision.skipped_gate is not None and decision.skipped_gate.startswith("does not beat the champion")


def test_decide_refuses_what_it_cannot_decide() -> None:
    with pytest.raises(ConfigError, match="champion_metrics_on_same_users is None"):
        decide("3", "2", BETTER, None, "auto")
    assert decide("3", "2", BETTER, None, "force").promoted  # force needs no comparison
    with pytest.raises(ConfigError, match="mode='sometimes' is not supported"):
        decide("3", None, BETTER, CHAMPION, "sometimes")
    with pytest.raises(ConfigError, match="must both be >= 0"):
        check_mode("auto", rmse_tolerance=-0.1)


class _Constant:
    """A stand-in champion: predicts each user's past spend."""

    def predict(self, frame: pd.DataFrame) -> object:
        return frame["past_spend"].to_numpy(dtype=float)


def test_rescore_champion_uses_exactly_the_candidates_test_users() -> None:
    snapshot = pd.DataFrame(
        {
            "user_id": [f"u{i:02d}" for i in range(40)],
            "past_spend": [float((7 * i) % 23) for i in range(40)],
            "label": [float((5 * i) % 17) for i in range(40)],
        }
    )
    test_ids = [f"u{i:02d}" for i in range(39, 0, -2)]  # 20 users, in another order
    got, predicted = rescore_champion(_Constant(), snapshot, test_ids)
    chosen = snapshot.set_index("user_id").loc[test_ids]
    expected = metrics.evaluate(chosen["label"].to_numpy(), chosen["past_spend"].to_numpy())
    assert got == pytest.approx(expected, nan_ok=True)
    np.testing.assert_array_equal(predicted, chosen["past_spend"].to_numpy())  # in the test users' order
    with pytest.raises(KeyError):
        rescore_champion(_Constant(), snapshot, ["zz"])


BASELINES = {
    "past_spend": {"normalised_gini": 0.50, "top10_capture": 0.40},
    "gbt_numeric": {"normalised_gini": 0.58, "top10_capture": 0.45},
    "before_finetuning": {"normalised_gini": 0.99, "top10_capture": 0.99},  # not a baseline to beat
}


def test_beats_baselines_needs_gini_and_top10_against_both() -> None:
    passes, why = beats_baselines({"normalised_gini": 0.60, "top10_capture": 0.46}, BASELINES)
    assert passes and "gbt_numeric 0.5800" in why
    passes, why = beats_baselines({"normalised_gini": 0.60, "top10_capture": 0.44}, BASELINES)
    assert not passes and why.startswith("does not beat the simple baselines") and "top10_capture 0.4400 vs gbt_numeric" in why
    assert not beats_baselines({"normalised_gini": None, "top10_capture": 0.9}, BASELINES)[0]
    assert beats_baselines({"normalised_gini": 0.1, "top10_capture": 0.1}, {})[0]  # nothing to compare with


def test_the_first_version_must_beat_the_baselines_too() -> None:
    losing = {"normalised_gini": 0.55, "top10_capture": 0.50, "rmse": 9.0}
    decision = decide("1", None, losing, None, "auto", baselines=BASELINES, held_out_users=300)
    assert not decision.promoted and decision.outcome == "rejected" and "gbt_numeric" in decision.reason
    forced = decide("1", None, losing, None, "force", actor="ops", baselines=BASELINES)
    assert forced.promoted and "does not beat the simple baselines" in forced.reason  # recorded with the override
    winning = {"normalised_gini": 0.60, "top10_capture": 0.50, "rmse": 9.0}
    assert decide("1", None, winning, None, "auto", baselines=BASELINES, held_out_users=300).outcome == "first"


def test_too_few_held_out_users_decide_nothing() -> None:
    decision = decide("3", "2", {**BETTER, "top10_capture": 0.9}, CHAMPION, "auto", held_out_users=MIN_HELD_OUT_USERS - 1)
    assert not decision.promoted and f"at least {MIN_HELD_OUT_USERS}" in decision.reason


def test_paired_bootstrap_keeps_a_champion_against_a_lucky_candidate() -> None:
    rng = np.random.default_rng(0)
    y = np.where(rng.random(400) < 0.5, 0.0, rng.lognormal(3.0, 1.0, 400))
    good = y + rng.normal(0, 5, 400)  # ranks well
    noisy = y + rng.normal(0, 200, 400)  # ranks badly
    assert paired_win_share(y, good, noisy) > 0.95
    assert paired_win_share(y, noisy, good) < 0.05
    # point estimate slightly better but the draws say it is a coin toss: not promoted
    passes, why = gate({"normalised_gini": 0.61, "rmse": 10.0}, CHAMPION, win_share=0.55)
    assert not passes and "reliably" in why and "55%" in why
    assert gate({"normalised_gini": 0.61, "rmse": 10.0}, CHAMPION, win_share=0.9)[0]
    assert np.isnan(paired_win_share([], [], []))


def test_a_baseline_blocks_only_when_it_is_reliably_ahead() -> None:
    from spendpred.promotion import baseline_ahead_shares

    rng = np.random.default_rng(1)
    y = np.where(rng.random(300) < 0.6, 0.0, rng.lognormal(3.0, 1.0, 300))
    close = y + rng.normal(0, 30, 300)
    much_better = y + rng.normal(0, 1, 300)
    hopeless = rng.random(300)
    shares = baseline_ahead_shares(y, close, {"past_spend": much_better, "gbt_numeric": hopeless})
    assert shares["past_spend"]["normalised_gini"] > 0.95 and shares["gbt_numeric"]["normalised_gini"] < 0.05
    point = {"normalised_gini": 0.60, "top10_capture": 0.449}  # a hair behind past spend's 0.45 on top-10%
    noise = {"past_spend": {"normalised_gini": 0.3, "top10_capture": 0.45}, "gbt_numeric": {"normalised_gini": 0.2, "top10_capture": 0.4}}
    assert not beats_baselines(point, BASELINES)[0]  # point estimates alone: a loss
    passes, why = beats_baselines(point, BASELINES, noise)  # the draws: within the noise
    assert passes and "past_spend ahead in 45% of paired draws" in why
    confident = {**noise, "gbt_numeric": {"normalised_gini": 0.2, "top10_capture": 0.9}}
    passes, why = beats_baselines(point, BASELINES, confident)
    assert not passes and "gbt_numeric ahead in 90% of paired draws" in why


def test_a_forced_promotion_records_the_gate_condition_it_skipped() -> None:
    losing = {"normalised_gini": 0.55, "top10_capture": 0.50, "rmse": 9.0}
    forced = decide("1", None, losing, None, "force", actor="alice", baselines=BASELINES)
    assert forced.skipped_gate is not None and forced.skipped_gate.startswith("does not beat the simple baselines")
    few = decide("1", None, BETTER, None, "force", actor="alice", held_out_users=20)
    assert few.skipped_gate is not None and few.skipped_gate.startswith("only 20 held-out users")
    unscored = decide("3", "2", BETTER, None, "force", actor="alice")  # force does not re-score the champion
    assert unscored.skipped_gate == "the comparison with champion version 2 (not run: a forced promotion does not re-score it)"
    passing = decide("3", "2", BETTER, CHAMPION, "force", actor="alice", reason="hotfix")
    assert passing.promoted and passing.skipped_gate is None and passing.reason.startswith("forced by alice: hotfix (gate: beats")
    assert decide("3", "2", BETTER, CHAMPION, "auto").skipped_gate is None  # only a forced promotion skips anything


def test_a_version_of_another_horizon_is_not_promoted_automatically() -> None:
    """The nightly refuses a champion trained for another horizon than SPENDPRED_HORIZON_DAYS: auto
    never promotes one (not even the first version); force does, and records what the gate said."""
    refused = decide("1", None, BETTER, None, "auto", horizons=(180, 90))
    assert not refused.promoted and refused.outcome == "rejected"
    assert refused.reason.startswith("trained to predict 180 days of spend but the nightly scores over SPENDPRED_HORIZON_DAYS=90")
    assert "retrain with horizon=90" in refused.reason
    assert decide("1", None, BETTER, None, "auto", horizons=(90, 90)).promoted  # the same horizon: the usual rules
    forced = decide("2", "1", BETTER, None, "force", actor="ops", horizons=(180, 90))
    assert forced.promoted and forced.skipped_gate is not None and "180 days" in forced.skipped_gate
