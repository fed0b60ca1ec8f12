"""The one parameter spec: ranges and choices, checks and messages, and the CLI generated from it.

The DAG params are checked against the same spec in ``tests/dags/test_dag_integrity.py``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from spendpred import cli
from spendpred.errors import ConfigError
from spendpred.params import (
    DEVICES,
    FREEZE_CHOICES,
    LOSSES,
    MAX_SHARDS,
    PROMOTE_MODES,
    RunParams,
    ScoreParams,
    TrainParams,
    check,
    check_score,
    check_train,
    param_specs,
    parse_as_of,
)


def test_the_spec_holds_every_range_and_choice() -> None:
    score, train = param_specs(ScoreParams), param_specs(TrainParams)
    assert list(score) == ["as_of", "dry_run", "model", "shards"]
    assert list(train) == ["as_of", "dry_run", "horizon", "epochs", "max_users", "freeze", "loss", "promote", "device"]
    assert score["shards"].schema == {"type": "integer", "minimum": 1, "maximum": 64} and MAX_SHARDS == 64
    assert train["horizon"].schema == {"type": ["null", "integer"], "minimum": 1, "maximum": 3650}
    assert train["epochs"].schema == {"type": ["null", "integer"], "minimum": 1, "maximum": 100}
    assert train["max_users"].schema == {"type": ["null", "integer"], "minimum": 100}
    assert train["loss"].schema == {"type": ["null", "string"], "enum": [None, "mse", "huber", "ziln"]}
    assert train["promote"].schema == {"type": "string", "enum": ["auto", "never", "force"]}
    assert train["device"].schema == {"type": "string", "enum": ["auto", "cpu", "cuda"]}
    date = {"type": ["null", "string"], "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
    assert score["as_of"].schema == train["as_of"].schema == date
    assert score["dry_run"].schema == {"type": "boolean"}
    assert ScoreParams().model_dump() == {"as_of": None, "dry_run": False, "model": "champion", "shards": 1}
    for field in (*score.values(), *train.values()):
        assert field.title and field.description.endswith("."), field.name


def test_loss_and_freeze_names_are_those_the_model_implements() -> None:
    """The spec owns the names (the DAGs import it at parse time, without torch); the model must agree."""
    from spendpred.model import TrainConfig
    from spendpred.model.losses import LOSSES as MODEL_LOSSES
    from spendpred.model.network import FREEZE_CHOICES as MODEL_FREEZE_CHOICES
    from spendpred.model.network import parse_freeze

    assert tuple(MODEL_LOSSES) == LOSSES
    assert tuple(MODEL_FREEZE_CHOICES) == FREEZE_CHOICES
    for choice in FREEZE_CHOICES:
        value = choice.replace(":N", ":4")
        assert check_train(freeze=value).freeze == value
        parse_freeze(value)
    for loss in LOSSES:
        for device in DEVICES:
            TrainConfig(loss=loss, device=device)


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        (ScoreParams, {"as_of": "2024-02-29", "model": "challenger", "shards": 64, "dry_run": True}),
        (ScoreParams, {"as_of": dt.date(2024, 6, 30), "model": "12"}),
        (TrainParams, {"horizon": 3650, "epochs": 1, "max_users": 100, "freeze": "bottom-k:12", "loss": "ziln"}),
        (TrainParams, {"freeze": "all-but-head", "promote": "force", "device": "cuda"}),
        (TrainParams, {"horizon": None, "epochs": None, "max_users": None, "freeze": None, "loss": None}),
    ],
)
def test_valid_values_pass(spec: type[RunParams], values: dict[str, Any]) -> None:
    checked = check(spec, values).model_dump()
    assert {k: checked[k] for k in values if k != "as_of"} == {k: v for k, v in values.items() if k != "as_of"}


def test_dates_are_parsed_once_into_a_date() -> None:
    assert check_score(as_of="2024-06-30").as_of == dt.date(2024, 6, 30)
    assert check_train(as_of=dt.datetime(2024, 6, 30, 23, 59)).as_of == dt.date(2024, 6, 30)
    assert parse_as_of(" 2024-02-29 ") == dt.date(2024, 2, 29)
    assert check_score(model=3).model == "3"  # a version number given as a number
    with pytest.raises(ConfigError, match="as_of is missing"):
        parse_as_of(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "values", "message"),
    [
        (ScoreParams, {"shards": 0}, "shards=0 is out of range: use a whole number in 1..64"),
        (ScoreParams, {"shards": 65}, "shards=65 is out of range: use a whole number in 1..64"),
        (ScoreParams, {"shards": "2"}, "shards='2' is not valid: use a whole number in 1..64"),
        (ScoreParams, {"shards": True}, "shards=True is not valid"),
        (ScoreParams, {"model": "latest"}, "model='latest' is not valid: use 'champion', 'challenger' or a version number"),
        (ScoreParams, {"model": "0"}, "model='0' is not valid"),
        (ScoreParams, {"as_of": "30/06/2024"}, "as_of='30/06/2024' is not a date: use YYYY-MM-DD, e.g. 2024-06-30"),
        (ScoreParams, {"as_of": "2024-02-30"}, "as_of='2024-02-30' is not a date"),
        (ScoreParams, {"as_of": 20240630}, "as_of=20240630 is not a date"),
        (ScoreParams, {"dry_run": "yes"}, "dry_run='yes' is not valid: use true or false"),
        (TrainParams, {"horizon": 0}, "horizon=0 is out of range: use a whole number in 1..3650"),
        (TrainParams, {"horizon": 3651}, "horizon=3651 is out of range"),
        (TrainParams, {"epochs": 101}, "epochs=101 is out of range: use a whole number in 1..100"),
        (TrainParams, {"epochs": 2.5}, "epochs=2.5 is not valid"),
        (TrainParams, {"max_users": 10}, "max_users=10 is out of range: use a whole number >= 100"),
        (TrainParams, {"freeze": "bottom-k"}, "freeze='bottom-k' is not valid: use none, embeddings, all-but-head or bottom-k"),
        (TrainParams, {"freeze": "top-k:2"}, "freeze='top-k:2' is not valid"),
        (TrainParams, {"loss": "mae"}, "loss='mae' is not valid: use one of mse, huber, ziln"),
        (TrainParams, {"promote": "always"}, "promote='always' is not valid: use one of auto, never, force"),
        (TrainParams, {"device": "tpu"}, "device='tpu' is not valid: use one of auto, cpu, cuda"),
        (TrainParams, {"promote": "force", "dry_run": True}, "params promote='force' and dry_run=true contradict"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_parameter(
    spec: type[RunParams], values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as caught:
        check(spec, values)
    assert "\n" not in str(caught.value)


def test_several_bad_values_are_all_named() -> None:
    with pytest.raises(ConfigError, match=r"^epochs=0 is out of range.*; loss='l1' is not valid"):
        check_train(epochs=0, loss="l1")


def test_unknown_names_are_refused_with_the_valid_ones() -> None:
    message = r"^unknown param 'as_of_date' \(did you mean as_of\?\): use one of as_of, dry_run, model, shards$"
    with pytest.raises(ConfigError, match=message):
        check_score(as_of_date="2024-06-30")
    with pytest.raises(ConfigError, match=r"^unknown param 'publish': use one of as_of, dry_run, horizon, epochs"):
        check_train(publish=False)
    with pytest.raises(ConfigError, match=r"unknown param 'shards'"):
        check(TrainParams, {"shards": 2})


def test_dry_run_never_promotes() -> None:
    assert check_train(promote="force").promote_mode == "force"
    assert check_train(promote="auto", dry_run=True).promote_mode == "never"
    assert check_train().promote_mode == "auto"
    assert set(PROMOTE_MODES) == {"auto", "never", "force"}


# -- the command line, generated from the spec --------------------------------------------------


def _command(name: str) -> Any:
    return typer.main.get_command(cli.app).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("command", "spec"), [("score", ScoreParams), ("train", TrainParams)])
def test_cli_options_are_the_spec(command: str, spec: type[RunParams]) -> None:
    options = {p.name: p for p in _command(command).params}
    visible = {name for name, p in options.items() if not getattr(p, "hidden", False)}
    # besides the spec only what a DAG run takes from Airflow: the warehouse (its connection), the actor (triggering user)
    front_end = {"url", "actor"} if command == "train" else {"url"}
    assert visible == {*param_specs(spec), *front_end}, "the CLI and the DAG take the same parameters"
    for name, field in param_specs(spec).items():
        option = options[name]
        assert option.opts == [field.flag], name
        assert option.help.startswith(field.description), name
        if name == "as_of":
            assert option.required
        else:
            assert option.default == field.default and not option.required, name
        if field.choices:
            assert option.metavar == f"[{'|'.join(field.choices)}]"
        elif field.types != ["boolean"]:
            assert field.rule in option.help, name
    assert options["dry_run"].is_flag and options["dry_run"].secondary_opts == []


def test_old_option_spellings_still_work_hidden() -> None:
    score, train, extract = ({p.name: p for p in _command(c).params} for c in ("score", "train", "extract"))
    assert score["no_publish"].opts == ["--no-publish"] and score["no_publish"].hidden
    assert train["horizon_days"].opts == ["--horizon-days"] and train["horizon_days"].hidden
    assert extract["horizon_days"].hidden and extract["horizon"].opts == ["--horizon"]


def test_cli_passes_checked_typed_values_to_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from spendpred import pipeline

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(pipeline, "score", lambda *a, **k: calls.append(("score", a, k)) or {})
    monkeypatch.setattr(pipeline, "train", lambda *a, **k: calls.append(("train", a, k)) or {})
    runner = CliRunner()
    for args in (["score", "--as-of", "2024-06-30", "--no-publish"], ["score", "--as-of", "2024-06-30", "--dry-run"]):
        assert runner.invoke(cli.app, args).exit_code == 0
    assert runner.invoke(cli.app, ["score", "--as-of", "2024-06-30", "--shards", "3", "--model", "7"]).exit_code == 0
    args = ["train", "--as-of", "2024-06-30", "--horizon-days", "30", "--device", "cpu", "--dry-run", "--loss", "huber"]
    assert runner.invoke(cli.app, args).exit_code == 0
    (_, a1, k1), (_, a2, _), (_, a3, k3), (_, a4, k4) = calls
    # each command passes the one object it checked, never its values unpacked
    assert a1 == a2 == (ScoreParams(as_of=dt.date(2024, 6, 30), dry_run=True),) and k1 == {"url": None}
    assert a3 == (ScoreParams(as_of=dt.date(2024, 6, 30), model="7", shards=3),) and k3 == {"url": None}
    (run,) = a4
    assert run == TrainParams(as_of=dt.date(2024, 6, 30), horizon=30, loss="huber", device="cpu", dry_run=True)
    assert (run.promote_mode, run.epochs, run.max_users, run.freeze) == ("never", None, None, None)
    assert k4 == {"url": None, "actor": getpass.getuser()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "--as-of", "2024-13-01"], "as_of='2024-13-01' is not a date"),
        (["score", "--as-of", "2024-06-30", "--shards", "65"], "shards=65 is out of range"),
        (["train", "--as-of", "2024-06-30", "--horizon", "0"], "horizon=0 is out of range"),
        (["train", "--as-of", "2024-06-30", "--promote", "force", "--dry-run"], "contradict each other"),
        (["train", "--as-of", "2024-06-30", "--device", "tpu"], "device='tpu' is not valid: use one of auto, cpu, cuda"),
    ],
)
def test_cli_refuses_bad_values_before_any_step(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    from spendpred import pipeline

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("a pipeline step ran")

    monkeypatch.setattr(pipeline, "score", never)
    monkeypatch.setattr(pipeline, "train", never)
    result = CliRunner().invoke(cli.app, args)
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)


def test_cli_train_records_the_actor_or_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from spendpred import pipeline

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(pipeline, "train", lambda *a, **k: calls.append(k) or {})
    runner = CliRunner()
    base = ["train", "--as-of", "2024-06-30", "--promote", "force"]
    assert runner.invoke(cli.app, [*base, "--actor", "alice"]).exit_code == 0
    assert runner.invoke(cli.app, base).exit_code == 0
    assert [k["actor"] for k in calls] == ["alice", getpass.getuser()]


# -- one check per run: the steps take the checked object ---------------------------------------


def test_given_passes_a_checked_object_on_and_checks_plain_values_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from spendpred import params

    seen: list[type] = []
    real = params.check
    monkeypatch.setattr(params, "check", lambda spec, *a, **k: seen.append(spec) or real(spec, *a, **k))
    run = check_train(as_of="2024-06-30", loss="huber")
    assert params.given(TrainParams, run) is run and seen == [TrainParams]  # passed on, not checked again
    assert params.given(TrainParams, None, loss="mse", epochs=None).loss == "mse" and len(seen) == 2  # None: not given
    with pytest.raises(TypeError, match="pass either params or loss, not both"):
        params.given(TrainParams, run, loss="mse")
    with pytest.raises(TypeError, match="params must be a checked TrainParams"):
        params.given(TrainParams, {"loss": "huber"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="params must be a checked TrainParams"):
        params.given(TrainParams, ScoreParams())  # type: ignore[arg-type]


def test_a_step_cannot_receive_an_unchecked_value(tmp_path: Any) -> None:
    """A raw value reaches no step unchecked: a dict in place of the checked object is a TypeError,
    a bad plain value a ConfigError, both before anything is read or written."""
    from spendpred import pipeline

    ref = {"kind": "train", "as_of": "2024-04-01", "root": str(tmp_path / "absent")}
    with pytest.raises(TypeError, match="params must be a checked TrainParams"):
        pipeline.train_model(ref, {"loss": "mae"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="loss='mae' is not valid: use one of mse, huber, ziln"):
        pipeline.train_model(ref, loss="mae")
    with pytest.raises(ConfigError, match="freeze='bottom-k:100' is not valid"):
        pipeline.extract_training_snapshot(dt.date(2024, 6, 30), freeze="bottom-k:100")
    with pytest.raises(TypeError, match="not both"):
        pipeline.train(check_train(as_of="2024-06-30"), loss="mse")
    with pytest.raises(ConfigError, match="device='cuda:0' is not valid"):
        pipeline.train(dt.date(2024, 6, 30), device="cuda:0")
    with pytest.raises(ConfigError, match="as_of is missing"):
        pipeline.train(check_train())  # a run without a date is refused at the entry, not in a later step
    score_ref = {"kind": "score", "as_of": "2024-06-30", "root": str(tmp_path / "absent")}
    with pytest.raises(TypeError, match="params must be a checked ScoreParams"):
        pipeline.score_shard(score_ref, params={"model": "champion"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="shards=65 is out of range"):
        pipeline.plan_shards(score_ref, 65)
    with pytest.raises(ConfigError, match="model='best' is not valid"):
        pipeline.score(dt.date(2024, 6, 30), model="best")
    assert not (tmp_path / "absent").exists()
