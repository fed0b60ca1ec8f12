"""One ``spendpred train`` checks each run parameter once: the command builds the checked
``TrainParams`` and every step takes that object (issue 23, "carry the checked object").

A real run through the command's code path (Typer, the pipeline, a tiny random BERT, a small
synthetic SQLite warehouse, a real MLflow store in tmp); the checks are counted, not mocked.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from spendpred import cli, params, pipeline, promotion
from spendpred.params import TrainParams
from spendpred.pipeline import retrain
from tests.tiny_bert import make_tiny_bert

RUN_DATE = dt.date(2024, 6, 30)


def test_one_train_checks_each_parameter_once(
    tmp_path: Path, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, torch_one_thread: None
) -> None:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(make_tiny_bert(tmp_path / "tiny-bert")))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=7, url=sqlite_url)

    checks: list[tuple[type, dict[str, Any]]] = []
    real_check = params.check

    def counted_check(spec: type, values: Any = None, /, **kwargs: Any) -> Any:
        checks.append((spec, {**(values or {}), **kwargs}))
        return real_check(spec, values, **kwargs)

    modes: list[str] = []
    real_mode = promotion.check_mode
    monkeypatch.setattr(params, "check", counted_check)  # check_train, check_score, given, parse_as_of all call it
    monkeypatch.setattr(promotion, "check_mode", lambda mode, *a, **k: modes.append(mode) or real_mode(mode, *a, **k))
    received: list[tuple[str, Any]] = []
    for step in ("extract_training_snapshot", "train_model"):
        real_step = getattr(retrain, step)

        def spy(run: Any, *args: Any, _name: str = step, _real: Any = real_step, **kwargs: Any) -> Any:
            received.append((_name, run if _name == "extract_training_snapshot" else args[0]))
            return _real(run, *args, **kwargs)

        monkeypatch.setattr(retrain, step, spy)

    args = ["train", "--as-of", RUN_DATE.isoformat(), "--epochs", "1", "--loss", "huber", "--freeze", "all-but-head",
            "--device", "cpu", "--promote", "force", "--url", sqlite_url]  # fmt: skip
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["promotion"]["promoted"] is True and out["version"] == "1"

    # every run parameter (as_of, epochs, loss, freeze, device, promote) was checked exactly once: by the command
    assert [spec for spec, _ in checks] == [TrainParams], checks
    assert checks[0][1]["loss"] == "huber" and checks[0][1]["freeze"] == "all-but-head"
    # the steps received that one checked object, not its values unpacked
    assert [name for name, _ in received] == ["extract_training_snapshot", "train_model"]
    first = received[0][1]
    assert isinstance(first, TrainParams) and all(run is first for _, run in received)
    assert (first.loss, first.freeze, first.device, first.promote_mode) == ("huber", "all-but-head", "cpu", "force")
    # the promotion mode is checked once, by the gate (promotion.decide), never by a pipeline step or by
    # registry.promote; force's look at the auto rule checks nothing again
    assert modes == ["force"], modes
