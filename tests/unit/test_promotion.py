"""The promotion gate and decision, by their public names (no MLflow: ``registry.promote`` applies them)."""

from __future__ import annotations

import pandas as pd
import pytest

from spendpred import metrics
from spendpred.errors import ConfigError
from spendpred.promotion import check_mode, decide, gate, rescore_champion

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
    if mode == "force":
        assert decision.reason == "forced by ops: rollback"


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
    got = rescore_champion(_Constant(), snapshot, test_ids)
    chosen = snapshot.set_index("user_id").loc[test_ids]
    expected = metrics.evaluate(chosen["label"].to_numpy(), chosen["past_spend"].to_numpy())
    assert got == pytest.approx(expected, nan_ok=True)
    with pytest.raises(KeyError):
        rescore_champion(_Constant(), snapshot, ["zz"])
