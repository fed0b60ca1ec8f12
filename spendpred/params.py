"""The run parameters of both front ends, written once: names, types, ranges, choices, help.

``ScoreParams`` (nightly scoring) and ``TrainParams`` (retraining) are pydantic models and the
only place where a parameter's range, choices, default, title and description are written.
The Airflow ``Param`` forms (``dags/_spendpred_common.py``) and the Typer options
(``spendpred.cli``) are generated from ``param_specs``; the front ends and
``spendpred.pipeline`` validate with ``check_score`` / ``check_train``, which raise one
``ConfigError`` line naming the parameter and the fix. Unknown names are refused, so a DAG
run conf such as ``{"as_of_date": ...}`` fails instead of silently scoring another date.

One name per idea: ``dry_run`` (never ``publish`` / ``--no-publish``), ``horizon`` (days),
``model`` (a registry alias or version). Importing this module is cheap (pydantic only):
the DAG files import it at parse time, so the model code (torch) imports the names
``LOSSES`` and ``FREEZE_CHOICES`` from here, not the other way round (and ``spendpred.textify``
``TEMPLATE_VERSIONS``, which the settings check).

The value types a run parameter, a setting and the training configuration share are written
here once: ``Loss``, ``Freeze`` (parsed by ``parse_freeze`` into a ``FreezeSpec``) and
``Device``. A run's parameters are checked once, where they enter (``check``, or ``given``
for a Python caller passing plain values); every step after takes the checked object.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spendpred.errors import ConfigError

Loss = Literal["mse", "huber", "ziln"]
"""A regression loss (implemented in ``spendpred.model.losses``, one loss object per name)."""
PromoteMode = Literal["auto", "never", "force"]
Device = Literal["auto", "cpu", "cuda"]
"""A training device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. One rule for the run
parameter, the training configuration and model loading: a particular GPU is chosen with
``CUDA_VISIBLE_DEVICES``, never with ``cuda:N``."""

LOSSES: tuple[str, ...] = get_args(Loss)
"""Names of the supported losses (implemented in ``spendpred.model.losses``)."""
PROMOTE_MODES: tuple[str, ...] = get_args(PromoteMode)
"""auto: promote when the candidate wins the gate; never: register only; force: promote regardless."""
DEVICES: tuple[str, ...] = get_args(Device)
"""Training devices a run may ask for."""
FREEZE_CHOICES: tuple[str, ...] = ("none", "embeddings", "bottom-k:N", "all-but-head")
"""Freezing strategies (implemented in ``spendpred.model.network.apply_freeze``); N is 0..99."""
MODEL_ALIASES: tuple[str, ...] = ("champion", "challenger")
"""Registry aliases a run may score with (besides a version number)."""
TEMPLATE_VERSIONS: tuple[str, ...] = ("v1", "v2")
"""Text templates a snapshot's user texts may be rendered with (implemented in ``spendpred.textify``; the
``text_template`` setting chooses one)."""

MAX_SHARDS = 64
MAX_HORIZON_DAYS = 3650
MAX_EPOCHS = 100
MIN_USERS = 100
"""The smallest ``max_users``: about 70 training and 15 validation users, above the training
minimum (``splits.MIN_TRAIN_USERS``)."""

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_LAYERS = "[0-9]{1,2}"
"""N of ``bottom-k:N``: 0..99 layers, the same rule for the pattern and ``parse_freeze``."""
FREEZE_PATTERN = "^(" + "|".join(c.replace(":N", ":" + _LAYERS) for c in FREEZE_CHOICES) + ")$"
Freeze = Annotated[str, StringConstraints(pattern=FREEZE_PATTERN)]
"""A freezing strategy: none, embeddings, all-but-head or bottom-k:N with N in 0..99 (``parse_freeze``)."""
MODEL_PATTERN = "^(" + "|".join(MODEL_ALIASES) + "|[1-9][0-9]*)$"

_RULES = {
    "as_of": "YYYY-MM-DD, e.g. 2024-06-30",
    "model": "'champion', 'challenger' or a version number such as 3",
    "freeze": "none, embeddings, all-but-head or bottom-k:N (N = 0..99), e.g. bottom-k:4",
}
"""The rule in words of the parameters checked by a pattern (the others' is generated)."""


class RunParams(BaseModel):
    """Parameters of every run: the run date and whether it may change what others read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: dt.date | None = Field(
        None,
        title="As of (YYYY-MM-DD)",
        description="Business date D to score as of. Empty in a DAG run: the day before the run's data interval "
        "end (a nightly run at 02:00 on July 1 scores as of June 30).",
    )
    dry_run: bool = Field(
        False,
        strict=True,
        title="Dry run",
        description="Do everything but change what others read: scoring checks the scores but "
        "publishes nothing; retraining registers the candidate as challenger but never promotes it.",
    )

    @field_validator("as_of", mode="before")
    @classmethod
    def _calendar_date(cls, value: Any) -> Any:
        """Accept a date or a ``YYYY-MM-DD`` string that is a real calendar day, nothing else."""
        if value is None or isinstance(value, dt.date):
            return value.date() if isinstance(value, dt.datetime) else value
        if isinstance(value, str) and re.fullmatch(DATE_PATTERN, value.strip()):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise PydanticCustomError("date", "is not a date")


class ScoreParams(RunParams):
    """Parameters of a scoring run (``spendpred score``, DAG ``spendpred_nightly_scoring``)."""

    model: str = Field(
        "champion",
        pattern=MODEL_PATTERN,
        title="Model",
        description="Registry alias (champion, challenger) or version number of spendpred-regressor.",
    )
    shards: int = Field(
        1,
        strict=True,
        ge=1,
        le=MAX_SHARDS,
        title="Shards",
        description="Number of scoring shards (hash of user_id); in a DAG run each is a mapped task.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        """Accept a version given as a number (``3``) as well as text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TrainParams(RunParams):
    """Parameters of a retraining run (``spendpred train``, DAG ``spendpred_weekly_retrain``)."""

    as_of: dt.date | None = Field(
        None,
        title="As of (YYYY-MM-DD)",
        description="Run date R: features as of R - H, labels are the spend in (R - H, R]. Empty in a DAG run: "
        "the day before the run's data interval end.",
    )
    horizon: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=MAX_HORIZON_DAYS,
        title="Horizon (days)",
        description="Prediction horizon H in days. Empty: the SPENDPRED_HORIZON_DAYS setting.",
    )
    epochs: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=MAX_EPOCHS,
        title="Epochs",
        description="Maximum training epochs (early stopping may end sooner). Empty: the training default.",
    )
    max_users: int | None = Field(
        None,
        strict=True,
        ge=MIN_USERS,
        title="Max users",
        description=f"Train on a stable hash-chosen subset of at most this many users (>= {MIN_USERS}). "
        "Empty: all users.",
    )
    freeze: Freeze | None = Field(
        None,
        title="Freezing",
        description="none | embeddings | bottom-k:N (freeze the embeddings and the N lowest layers) | "
        "all-but-head. Empty: the training default.",
    )
    loss: Loss | None = Field(
        None,
        title="Loss",
        description="Regression loss. Empty: the SPENDPRED_LOSS setting.",
    )
    promote: PromoteMode = Field(
        "auto",
        title="Promotion",
        description="auto: champion only if the candidate beats it; never: register only; "
        "force: make it champion regardless (recorded).",
    )
    device: Device = Field(
        "auto",
        title="Device",
        description="Training device; auto uses CUDA when the machine has it.",
    )

    @model_validator(mode="after")
    def _force_is_not_a_dry_run(self) -> TrainParams:
        """Refuse ``promote=force`` with ``dry_run``: one promotes regardless, the other never."""
        if self.promote == "force" and self.dry_run:
            raise PydanticCustomError(
                "contradiction", "params promote='force' and dry_run=true contradict each other: drop one of them"
            )
        return self

    @property
    def promote_mode(self) -> PromoteMode:
        """The promotion mode to apply: ``never`` on a dry run, else ``promote``."""
        return "never" if self.dry_run else self.promote


Spec = TypeVar("Spec", bound=RunParams)


@dataclass(frozen=True)
class FreezeSpec:
    """A parsed freezing strategy: ``kind`` in none/embeddings/bottom-k/all-but-head, ``layers`` for bottom-k."""

    kind: str
    layers: int = 0

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter is trained (head-only training)."""
        return self.kind == "all-but-head"


def parse_freeze(spec: str) -> FreezeSpec:
    """Return the parsed freezing strategy ``spec`` (a ``Freeze``: the rule of ``FREEZE_PATTERN``).

    Raises ``ConfigError`` naming the field ``freeze`` and the accepted forms when ``spec``
    is not one of ``none``, ``embeddings``, ``bottom-k:N`` (N = 0..99) or ``all-but-head``.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"freeze={spec!r} must be a string: one of {', '.join(FREEZE_CHOICES)}")
    if spec in ("none", "embeddings", "all-but-head"):
        return FreezeSpec(spec)
    match = re.fullmatch(f"bottom-k:({_LAYERS})", spec)
    if match:
        return FreezeSpec("bottom-k", int(match.group(1)))
    raise ConfigError(f"freeze={spec!r} is not a freezing strategy: use {_RULES['freeze']}")


# -- checks ----------------------------------------------------------------------------------


def check(spec: type[Spec], values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Spec:
    """Return ``values`` (and ``kwargs``) validated as ``spec``; missing names take their default.

    Raises ``ConfigError`` with one line naming each bad or unknown parameter and the fix.
    """
    data = {**(values or {}), **kwargs}
    try:
        return spec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(spec, exc)) from None


def check_score(**kwargs: Any) -> ScoreParams:
    """Return the scoring parameters ``kwargs`` validated; raises ``ConfigError`` (see ``check``)."""
    return check(ScoreParams, kwargs)


def check_train(**kwargs: Any) -> TrainParams:
    """Return the training parameters ``kwargs`` validated; raises ``ConfigError`` (see ``check``)."""
    return check(TrainParams, kwargs)


def given(spec: type[Spec], params: Spec | None, /, **values: Any) -> Spec:
    """Return the checked parameters of a step called from Python: ``params`` as is (built and checked
    where the run entered: never checked again), else the ``values`` that are not ``None`` checked as
    ``spec``, once, here.

    Raises ``TypeError`` when ``params`` is not a ``spec`` (a dict, a raw value: a step cannot
    receive an unchecked run) or comes with plain values too; ``ConfigError`` (see ``check``) for
    a bad plain value.
    """
    plain = {name: value for name, value in values.items() if value is not None}
    if params is None:
        return check(spec, plain)
    if not isinstance(params, spec):
        raise TypeError(f"params must be a checked {spec.__name__} (spendpred.params.check), got {type(params).__name__}")
    if plain:
        raise TypeError(f"pass either params or {', '.join(sorted(plain))}, not both: params is already checked")
    return params


def require_as_of(params: Spec) -> dt.date:
    """Return ``params.as_of``; raises ``ConfigError`` when it is empty (a front end resolves it first)."""
    if params.as_of is None:
        raise ConfigError(f"as_of is missing: use {_RULES['as_of']}")
    return params.as_of


def parse_as_of(value: str | dt.date) -> dt.date:
    """Return ``value`` as a date (a ``date`` or ``YYYY-MM-DD``); raises ``ConfigError`` naming ``as_of``."""
    return require_as_of(check(RunParams, as_of=value))


def _message(spec: type[RunParams], exc: ValidationError) -> str:
    specs = param_specs(spec)
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        name = str(loc[0]) if loc else ""
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown param {name!r}{hint}: use one of {', '.join(specs)}")
        elif name in specs:
            what = "is out of range" if error["type"] in ("greater_than_equal", "less_than_equal") else "is not valid"
            what = error["msg"] if error["type"] == "date" else what
            problems.append(f"{name}={error['input']!r} {what}: use {specs[name].rule}")
        else:
            problems.append(error["msg"])
    return "; ".join(problems)


# -- the spec as the front ends read it ---------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as the front ends need it: ``schema`` is a flat JSON schema (``type``,
    ``minimum``, ``maximum``, ``enum``, ``pattern``, ``format``) that Airflow's ``Param`` takes
    as is; ``rule`` says what it accepts in words (``a whole number in 1..64``)."""

    name: str
    title: str
    description: str
    default: Any
    schema: dict[str, Any]
    rule: str

    @property
    def nullable(self) -> bool:
        """True when the parameter may be left empty (``None``: a settings or run default)."""
        return "null" in self.types

    @property
    def types(self) -> list[str]:
        """The JSON types the parameter accepts, e.g. ``["null", "integer"]``."""
        kind = self.schema["type"]
        return list(kind) if isinstance(kind, list) else [kind]

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of an enumerated parameter (``None`` left out), else ``()``."""
        return tuple(v for v in self.schema.get("enum", ()) if v is not None)

    @property
    def flag(self) -> str:
        """The command-line spelling, e.g. ``--max-users``."""
        return "--" + self.name.replace("_", "-")


def param_specs(spec: type[RunParams]) -> dict[str, ParamSpec]:
    """Return ``{name: ParamSpec}`` for every field of ``spec``, in declaration order. Raises nothing."""
    properties = spec.model_json_schema(mode="validation")["properties"]
    return {name: _param_spec(name, properties[name], field.default) for name, field in spec.model_fields.items()}


def _param_spec(name: str, prop: dict[str, Any], default: Any) -> ParamSpec:
    schema: dict[str, Any] = {}
    types: list[str] = []
    for variant in prop.get("anyOf", [prop]):
        types.append(variant["type"])
        schema.update({k: variant[k] for k in ("minimum", "maximum", "enum", "pattern", "format") if k in variant})
    if schema.get("format") == "date":
        schema["pattern"] = DATE_PATTERN
    nullable = "null" in types
    types = ["null", *[t for t in types if t != "null"]] if nullable else types
    schema = {"type": types if len(types) > 1 else types[0], **schema}
    if nullable and "enum" in schema:
        schema["enum"] = [None, *schema["enum"]]
    return ParamSpec(name, prop["title"], prop["description"], default, schema, _RULES.get(name) or _rule(schema))


def _rule(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"] if v is not None)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"a whole number in {low}..{high}"
    if low is not None:
        return f"a whole number >= {low}"
    return "true or false" if "boolean" in str(schema["type"]) else "a value as described"
